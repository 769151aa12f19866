//! `psk plan`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args;

use super::args::{
    parse_at, parse_forecast, parse_span, Forecast, Format, Global, Selection, StateOverrides,
};
use super::exit::Status;
use super::progress::PlanProgress;
use super::session::Session;
use crate::planfile::{self, PlanFile};
use crate::policy::Span;
use crate::reconcile::{Plan, PlanOptions};
use crate::render;

/// Show which PSKs are due and why, and dry-run each rotation with
/// Cloudflare's `validate_only`. Changes nothing.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Exit 2 when there are changes, 0 when there are none, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,

    /// Output format: human (terminal), markdown (pull-request comment) or
    /// json (machines; docs/formats.md describes it).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,

    /// Do not contact Cloudflare: no refresh and no dry runs. Needs no token.
    #[arg(long)]
    offline: bool,

    /// Evaluate policies at this time instead of now: RFC 3339, a date
    /// (midnight UTC), or a span from now like +30d or -2h ("what is due
    /// next month?").
    #[arg(long, value_name = "TIME", value_parser = parse_at, allow_hyphen_values = true)]
    at: Option<DateTime<Utc>>,

    /// Save the plan to FILE for `psk apply FILE`. It holds no secrets and
    /// is bound to the current state and psk.yaml.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// How long a saved plan stays valid.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_span)]
    expires_in: Span,

    #[command(flatten)]
    overrides: StateOverrides,

    #[command(flatten)]
    selection: Selection,

    /// List tunnels falling due within this span as information (not
    /// actions), e.g. 30d; 0 lists none.
    #[arg(long, value_name = "DURATION", default_value = "14d", value_parser = parse_forecast)]
    forecast: Forecast,

    /// With --format markdown: draw the rotations of the next DURATION as a
    /// Mermaid gantt (by site, windows shown); 0 for none.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_forecast)]
    calendar: Forecast,

    /// Show no progress on stderr while Cloudflare is asked (as with
    /// --format json): only the plan, and errors.
    #[arg(short, long)]
    quiet: bool,

    #[command(flatten)]
    pub files: super::args::Files,

    #[command(flatten)]
    pub api: super::args::Api,

    #[command(flatten)]
    pub color: super::args::Color,
}

pub async fn run(global: &Global, args: PlanArgs) -> anyhow::Result<Status> {
    let mut session = Session::open(global)?;
    session.overrides(&args.overrides);
    let state = session.read_state()?;
    let options = PlanOptions {
        horizon: args.forecast.0,
        ..args.selection.options(&session.config, state.as_ref())?
    };
    let now = args.at.unwrap_or_else(Utc::now);
    let plan = if args.offline {
        session.plan_offline(state.as_ref(), now, &options)?
    } else {
        let progress = PlanProgress::new(args.quiet || args.format == Format::Json);
        let plan = session.plan_online(state.as_ref(), now, &options, &progress);
        let plan = plan.await?.0;
        progress.finish();
        plan
    };
    // Only markdown and a saved plan show the state diff; on a large fleet
    // it costs more than the plan itself.
    let diff = if args.format == Format::Markdown || args.out.is_some() {
        render::diff::state_diff(state.as_ref(), &plan, &file_name(&session.state_path))
    } else {
        String::new()
    };
    match (args.format, args.calendar.0) {
        (Format::Markdown, Some(span)) => {
            let days = span.as_delta().num_days().max(1);
            let calendar = crate::calendar::calendar(&session.config, &plan, days);
            let mut buf = Vec::new();
            render::markdown::markdown_with_calendar(&plan, &diff, &calendar, &mut buf)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&buf)?;
            out.flush()?;
        }
        _ => print(&plan, &diff, args.format, global.no_color)?,
    }

    if let Some(out) = &args.out {
        let config = &session.config;
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
