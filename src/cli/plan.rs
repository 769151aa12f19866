//! `psk plan`.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};

use super::context::{self, Global};
use super::Status;
use crate::config::Config;
use crate::planfile::{self, PlanFile};
use crate::policy::Span;
use crate::reconcile::{self, Plan, PlanOptions};
use crate::render;
use crate::state::State;

/// Show which PSKs are due and why, and dry-run each rotation with
/// Cloudflare's `validate_only`. Changes nothing.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Exit 2 when there are changes, 0 when there are none, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,

    /// Output format: human (terminal), markdown (pull-request comment) or
    /// json (machines; see the README for the schema).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,

    /// Do not contact Cloudflare: no refresh and no dry runs. Needs no token.
    #[arg(long)]
    offline: bool,

    /// Evaluate policies at this time instead of now (RFC 3339 or a date):
    /// "what is due next month?".
    #[arg(long, value_name = "TIME", value_parser = context::parse_at)]
    at: Option<DateTime<Utc>>,

    /// Save the plan to FILE for `psk apply FILE`. It holds no secrets and
    /// is bound to the current state and psk.yaml.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// How long a saved plan stays valid.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_span)]
    expires_in: Span,

    #[command(flatten)]
    selection: Selection,

    /// List tunnels falling due within this span as information (not
    /// actions), e.g. 30d; 0 lists none.
    #[arg(long, value_name = "DURATION", default_value = "14d", value_parser = parse_forecast)]
    forecast: Forecast,
}

/// `--forecast`: a span, or none for `0`.
#[derive(Debug, Clone, Copy)]
pub struct Forecast(pub Option<Span>);

/// `--replace` and `--target`, shared by plan and apply.
#[derive(Debug, Args, Default)]
pub struct Selection {
    /// Rotate this tunnel now whatever its policy says (repeatable).
    #[arg(long, value_name = "NAME")]
    replace: Vec<String>,

    /// Plan only this tunnel (repeatable). For exceptional use: the plan
    /// then hides other tunnels that are due.
    #[arg(long, value_name = "NAME")]
    target: Vec<String>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.replace.is_empty() && self.target.is_empty()
    }

    /// Checks every name against psk.yaml (and the state, for `--target`,
    /// which may name a tunnel to forget).
    pub fn options(&self, config: &Config, state: Option<&State>) -> anyhow::Result<PlanOptions> {
        let known = |n: &str| {
            config.tunnel_by_name(n).is_some() || config.unresolved.iter().any(|u| u.name == n)
        };
        for n in &self.replace {
            if !known(n) {
                bail!(
                    "--replace {n}: no tunnel named `{n}` in {}",
                    config.path.display()
                );
            }
        }
        for n in &self.target {
            if !known(n) && state.and_then(|s| s.find_by_name(n)).is_none() {
                bail!(
                    "--target {n}: no tunnel named `{n}` in {} or in the state",
                    config.path.display()
                );
            }
        }
        Ok(PlanOptions {
            replace: self.replace.iter().cloned().collect(),
            target: (!self.target.is_empty())
                .then(|| self.target.iter().cloned().collect::<BTreeSet<_>>()),
            ..PlanOptions::default()
        })
    }
}

pub fn parse_span(s: &str) -> Result<Span, String> {
    s.parse::<Span>().map_err(|e| e.to_string())
}

/// A span like `14d`, or `0` for no forecast.
pub fn parse_forecast(s: &str) -> Result<Forecast, String> {
    if s.trim().trim_end_matches(['s', 'm', 'h', 'd', 'w']) == "0" {
        return Ok(Forecast(None));
    }
    parse_span(s).map(|span| Forecast(Some(span)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Markdown,
    Json,
}

pub async fn run(global: &Global, args: PlanArgs) -> anyhow::Result<Status> {
    let mut config = global.load_config()?;
    let state_path = global.state_path(&config);
    let state = context::load_state(&state_path)?;
    let options = PlanOptions {
        horizon: args.forecast.0,
        ..args.selection.options(&config, state.as_ref())?
    };
    let now = args.at.unwrap_or_else(Utc::now);

    let plan = if args.offline {
        config.require_resolved(
            "the state does not record its id, and --offline does not ask Cloudflare",
        )?;
        reconcile::reconcile_with(&config, state.as_ref(), None, now, &options)
    } else {
        let (client, _sandbox) = global.connect(&config, state.as_ref()).await?;
        let remote = context::refresh(&client, &mut config).await?;
        let mut plan =
            reconcile::reconcile_with(&config, state.as_ref(), Some(&remote), now, &options);
        context::dry_run(&client, &config, &mut plan).await;
        plan
    };
    // Only markdown and a saved plan show the state diff; on a large fleet
    // it costs more than the plan itself.
    let diff = if args.format == Format::Markdown || args.out.is_some() {
        render::diff::state_diff(state.as_ref(), &plan, &file_name(&state_path))
    } else {
        String::new()
    };
    print(&plan, &diff, args.format, global.no_color)?;

    if let Some(out) = &args.out {
        let digest = planfile::digest_file(&config.path)
            .with_context(|| format!("cannot read {}", config.path.display()))?;
        let valid_for = args.expires_in.as_delta();
        let file = PlanFile::new(
            plan.clone(),
            digest,
            state.as_ref(),
            diff,
            Utc::now(),
            valid_for,
        );
        file.write(out)?;
        eprintln!(
            "Saved this plan to {}. Apply exactly it with `psk apply {}` before {}.",
            out.display(),
            out.display(),
            crate::state::format_time(&file.expires_at)
        );
    }
    Ok(exit_status(&plan, args.detailed_exitcode))
}

pub fn exit_status(plan: &Plan, detailed: bool) -> Status {
    if plan.has_refusals() {
        Status::Failure
    } else if detailed && plan.has_changes() {
        Status::Changes
    } else {
        Status::Success
    }
}

pub fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "psk.state.json".into())
}

/// Renders in one buffer, then writes once: a plan is never half printed.
pub fn print(plan: &Plan, diff: &str, format: Format, no_color: bool) -> std::io::Result<()> {
    let mut buf = Vec::new();
    match format {
        Format::Human => {
            let color = render::use_color(no_color, std::io::stdout().is_terminal());
            render::human_styled(plan, &mut buf, color)?
        }
        Format::Markdown => render::markdown::markdown(plan, diff, &mut buf)?,
        Format::Json => render::json(plan, &mut buf)?,
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)?;
    out.flush()
}
