//! The JSON status's wire types: what `psk status --format json` promises
//! to scripts, kept apart from [`Report`] so the model can change without
//! changing them. Versioned by [`STATUS_FORMAT_VERSION`] (only additive
//! changes within a major); docs/monitoring.md "JSON status format" describes them.

use std::io::{self, Write};

use serde::Serialize;

use super::{human, Report, TunnelStatus};
use crate::state::format_time;

/// The JSON status format's version.
/// 1.1 added `unverified_since` and `summary.unverified` (`verify`); 1.2
/// `unmanaged` (with `--refresh`) and `summary.unmanaged`; 1.3
/// `last_outage_seconds` and `summary.outages`.
pub const STATUS_FORMAT_VERSION: &str = "1.3";

/// Writes the status as one pretty JSON document.
pub fn json(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &JsonStatus::new(report))?;
    writeln!(out)
}

#[derive(Serialize)]
struct JsonStatus<'a> {
    format_version: &'static str,
    evaluated_at: String,
    refreshed: bool,
    state: Option<JsonState<'a>>,
    tunnels: Vec<JsonTunnel<'a>>,
    /// With `--refresh`: tunnels Cloudflare lists for psk.yaml's accounts
    /// that psk.yaml neither lists nor ignores; `null` when not asked.
    unmanaged: Option<Vec<JsonUnmanaged<'a>>>,
    summary: JsonSummary,
}

#[derive(Serialize)]
struct JsonUnmanaged<'a> {
    name: &'a str,
    tunnel_id: &'a str,
    account_id: &'a str,
    /// The entry that adds it under `tunnels:` in psk.yaml.
    add: &'a str,
}

#[derive(Serialize)]
struct JsonState<'a> {
    serial: u64,
    lineage: &'a str,
}

#[derive(Serialize)]
struct JsonTunnel<'a> {
    name: &'a str,
    tunnel_id: &'a str,
    account_id: &'a str,
    site: Option<&'a str>,
    policy: &'a str,
    last_rotated: Option<String>,
    next_due: Option<String>,
    deadline: Option<String>,
    /// `null` when the policy's window never opens.
    rotation_may_start: Option<String>,
    /// Past its due date (at it, too).
    overdue: bool,
    /// How far past; 0 unless overdue.
    overdue_seconds: i64,
    never_rotated: bool,
    interrupted_since: Option<String>,
    pending_since: Option<String>,
    /// Only ever set with `--refresh`.
    changed_outside: Option<String>,
    delivery_failed: Option<JsonDelivery<'a>>,
    /// Got a new PSK and was not shown back up (`verify`): down since.
    unverified_since: Option<String>,
    /// The outage of the rotation that made its PSK, as `verify` measured
    /// it, in seconds (to the millisecond); `null` when not measured.
    last_outage_seconds: Option<f64>,
    needs_attention: bool,
    /// The planner's reasons to change its PSK now, as in the JSON plan.
    reasons: Vec<JsonReason>,
    /// `conditions` in words, as the human table's last column.
    status: String,
}

#[derive(Serialize)]
struct JsonDelivery<'a> {
    at: String,
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonReason {
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct JsonSummary {
    tunnels: usize,
    needs_attention: usize,
    never_rotated: usize,
    overdue: usize,
    interrupted: usize,
    pending: usize,
    changed_outside: usize,
    delivery_failed: usize,
    unverified: usize,
    /// Tunnels psk.yaml leaves out, and those `ignore:` names; `null`
    /// without `--refresh`.
    unmanaged: Option<usize>,
    ignored: Option<usize>,
    /// Over the tunnels' last measured outages; `null` when none is.
    outages: Option<JsonOutages>,
}

#[derive(Serialize)]
struct JsonOutages {
    tunnels: usize,
    p50_seconds: f64,
    p95_seconds: f64,
    max_seconds: f64,
}

impl<'a> JsonStatus<'a> {
    fn new(report: &'a Report) -> Self {
        let tunnels: Vec<JsonTunnel> = report
            .tunnels
            .iter()
            .map(|t| JsonTunnel::new(t, report))
            .collect();
        let count = |f: fn(&JsonTunnel) -> bool| tunnels.iter().filter(|t| f(t)).count();
        let summary = JsonSummary {
            tunnels: tunnels.len(),
            needs_attention: count(|t| t.needs_attention),
            never_rotated: count(|t| t.never_rotated),
            overdue: count(|t| t.overdue),
            interrupted: count(|t| t.interrupted_since.is_some()),
            pending: count(|t| t.pending_since.is_some()),
            changed_outside: count(|t| t.changed_outside.is_some()),
            delivery_failed: count(|t| t.delivery_failed.is_some()),
            unverified: count(|t| t.unverified_since.is_some()),
            unmanaged: report.unmanaged.as_ref().map(|u| u.tunnels.len()),
            ignored: report.unmanaged.as_ref().map(|u| u.ignored),
            outages: report.outages().map(|o| JsonOutages {
                tunnels: o.tunnels,
                p50_seconds: super::outage_seconds(o.p50),
                p95_seconds: super::outage_seconds(o.p95),
                max_seconds: super::outage_seconds(o.max),
            }),
        };
        JsonStatus {
            format_version: STATUS_FORMAT_VERSION,
            evaluated_at: format_time(&report.now),
            refreshed: report.refreshed,
            state: report.state.as_ref().map(|(serial, lineage)| JsonState {
                serial: *serial,
                lineage,
            }),
            tunnels,
            unmanaged: report.unmanaged.as_ref().map(|u| {
                (u.tunnels.iter())
                    .map(|t| JsonUnmanaged {
                        name: &t.name,
                        tunnel_id: &t.key.tunnel_id,
                        account_id: &t.key.account_id,
                        add: &t.add,
                    })
                    .collect()
            }),
            summary,
        }
    }
}

impl<'a> JsonTunnel<'a> {
    fn new(t: &'a TunnelStatus, report: &Report) -> Self {
        let time = |d: Option<chrono::DateTime<chrono::Utc>>| d.as_ref().map(format_time);
        JsonTunnel {
            name: &t.name,
            tunnel_id: &t.key.tunnel_id,
            account_id: &t.key.account_id,
            site: t.site.as_deref(),
            policy: &t.policy,
            last_rotated: time(t.last_rotated),
            next_due: time(t.next_due),
            deadline: time(t.deadline),
            rotation_may_start: time(t.starts),
            overdue: t.overdue_by(report.now).is_some(),
            overdue_seconds: t.overdue_by(report.now).map_or(0, |d| d.num_seconds()),
            never_rotated: t.never_rotated(),
            interrupted_since: time(t.interrupted()),
            pending_since: time(t.pending()),
            changed_outside: time(t.changed_outside()),
            delivery_failed: t.delivery_failed.as_ref().map(|(at, error)| JsonDelivery {
                at: format_time(at),
                error: error.as_deref(),
            }),
            unverified_since: t.unverified.as_ref().map(|(since, _)| format_time(since)),
            last_outage_seconds: t.last_outage.map(super::outage_seconds),
            needs_attention: t.needs_attention(),
            reasons: t
                .reasons
                .iter()
                .map(|r| JsonReason {
                    code: r.code(),
                    message: r.describe(),
                })
                .collect(),
            status: human::conditions(t, report.now).join("; "),
        }
    }
}
