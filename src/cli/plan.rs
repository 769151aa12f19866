//! `psk plan`.

use std::io::Write;

use chrono::{DateTime, TimeDelta, Utc};
use clap::{Args, ValueEnum};

use super::context::{self, Global};
use super::Status;
use crate::reconcile::{self, Plan};
use crate::render;

/// Show which PSKs are due and why, and dry-run each rotation with
/// Cloudflare's `validate_only`. Changes nothing.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Exit 2 when there are changes, 0 when there are none, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,

    /// Do not contact Cloudflare: no refresh and no dry runs. Needs no token.
    #[arg(long)]
    offline: bool,

    /// Evaluate policies at this time instead of now (RFC 3339 or a date):
    /// "what is due next month?".
    #[arg(long, value_name = "TIME", value_parser = context::parse_at)]
    at: Option<DateTime<Utc>>,

    /// List tunnels falling due within this span as information (not
    /// actions), e.g. 30d; 0 lists none.
    #[arg(long, value_name = "DURATION", default_value = "14d", value_parser = parse_forecast)]
    forecast: TimeDelta,
}

/// A span like `14d`, or `0` for no forecast.
fn parse_forecast(s: &str) -> Result<TimeDelta, String> {
    if s.trim().trim_end_matches(['s', 'm', 'h', 'd', 'w']) == "0" {
        return Ok(TimeDelta::zero());
    }
    s.parse::<crate::policy::Span>()
        .map(|span| span.as_delta())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

pub async fn run(global: &Global, args: PlanArgs) -> anyhow::Result<Status> {
    let config = global.load_config()?;
    let state_path = global.state_path(&config);
    let state = context::load_state(&state_path)?;
    let now = args.at.unwrap_or_else(Utc::now);
    let options = reconcile::Options {
        horizon: args.forecast,
    };

    let plan = if args.offline {
        config.require_resolved(
            "the state does not record its id, and --offline does not ask Cloudflare",
        )?;
        reconcile::reconcile_with(&config, state.as_ref(), None, now, options)
    } else {
        let (client, _sandbox) = global.connect(&config, state.as_ref()).await?;
        let remote = context::refresh(&client, &config).await?;
        let mut plan =
            reconcile::reconcile_with(&config, state.as_ref(), Some(&remote), now, options);
        context::dry_run(&client, &mut plan).await;
        plan
    };
    print(&plan, args.format)?;
    Ok(if plan.has_refusals() {
        Status::Failure
    } else if args.detailed_exitcode && plan.has_changes() {
        Status::Changes
    } else {
        Status::Success
    })
}

fn print(plan: &Plan, format: Format) -> std::io::Result<()> {
    let mut buf = Vec::new();
    match format {
        Format::Human => render::human(plan, &mut buf)?,
        Format::Json => render::json(plan, &mut buf)?,
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)?;
    out.flush()
}
