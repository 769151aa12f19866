//! `psk status`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};

use super::args::{parse_at, Global};
use super::exit::Status;
use super::session::Session;
use crate::remote;
use crate::status::metrics::{self, Exposition};
use crate::status::{self, textfile, Report};

/// Show where every tunnel's key stands: last rotated, next due (spread
/// and window included), overdue, interrupted, pending, failed delivery.
/// Reads psk.yaml and the state only, unless --refresh; changes nothing.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format: human (a table), json (versioned; docs/monitoring.md),
    /// openmetrics (OpenMetrics text, e.g. for a Pushgateway) or prometheus
    /// (the Prometheus text format node_exporter's textfile collector
    /// reads). Default: human, or nothing with --textfile.
    #[arg(long, value_enum)]
    format: Option<StatusFormat>,

    /// Also write the metrics (Prometheus text format) to FILE, atomically,
    /// for node_exporter's textfile collector: name it `*.prom` in the
    /// collector's folder.
    #[arg(long, value_name = "FILE")]
    textfile: Option<PathBuf>,

    /// Ask Cloudflare for each tunnel's current key date (needs the token):
    /// shows keys changed outside psk, and tunnels psk.yaml leaves out. One
    /// list call per account.
    #[arg(long)]
    refresh: bool,

    /// Exit 2 when a tunnel needs attention (overdue, never rotated,
    /// interrupted, pending, failed delivery, changed outside psk; with
    /// --refresh also a tunnel Cloudflare lists that psk.yaml leaves out),
    /// 0 when none does, 1 on error: for cron.
    #[arg(long)]
    exit_code: bool,

    /// Evaluate policies at this time instead of now: RFC 3339, a date
    /// (midnight UTC), or a span from now like +30d or -2h.
    #[arg(long, value_name = "TIME", value_parser = parse_at, allow_hyphen_values = true)]
    at: Option<DateTime<Utc>>,

    #[command(flatten)]
    pub files: super::args::Files,

    #[command(flatten)]
    pub api: super::args::Api,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Human,
    Json,
    Openmetrics,
    Prometheus,
}

pub async fn run(global: &Global, args: StatusArgs) -> anyhow::Result<Status> {
    let mut session = Session::open(global)?;
    let state = session.read_state()?;
    let now = args.at.unwrap_or_else(Utc::now);
    let remote = if args.refresh {
        let connection = session.connect(state.as_ref()).await?;
        Some(remote::refresh(&connection.client, &mut session.config).await?)
    } else {
        session.config.require_resolved(
            "the state does not record its id; `psk status --refresh` asks Cloudflare",
        )?;
        None
    };
    let report = status::report(&session.config, state.as_ref(), remote.as_ref(), now);

    if let Some(path) = &args.textfile {
        textfile::write(path, &metrics::encode(&report, Exposition::Prometheus))
            .with_context(|| format!("cannot write the metrics to {}", path.display()))?;
    }
    let format = match (args.format, &args.textfile) {
        (Some(f), _) => Some(f),
        (None, Some(_)) => None,
        (None, None) => Some(StatusFormat::Human),
    };
    if let Some(format) = format {
        print(&report, format)?;
    }
    Ok(
        if args.exit_code && report.attention() + report.unmanaged() > 0 {
            Status::Changes
        } else {
            Status::Success
        },
    )
}

/// Renders in one buffer, then writes once.
fn print(report: &Report, format: StatusFormat) -> std::io::Result<()> {
    let mut buf = Vec::new();
    match format {
        StatusFormat::Human => status::human::human(report, &mut buf)?,
        StatusFormat::Json => status::json::json(report, &mut buf)?,
        StatusFormat::Openmetrics => {
            buf = metrics::encode(report, Exposition::OpenMetrics).into_bytes()
        }
        StatusFormat::Prometheus => {
            buf = metrics::encode(report, Exposition::Prometheus).into_bytes()
        }
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)?;
    out.flush()
}
