//! The status as a table for a terminal: one row per tunnel, what is wrong
//! in words in the last column, and a summary line a cron mail can quote.

use std::io::{self, Write};

use chrono::{DateTime, TimeDelta, Utc};

use super::{Report, TunnelStatus};
use crate::reconcile::unmanaged;

const HEADERS: [&str; 7] = [
    "TUNNEL",
    "SITE",
    "POLICY",
    "LAST ROTATED",
    "NEXT DUE",
    "MAY START",
    "STATUS",
];

/// Writes the table. Times are UTC, to the minute.
pub fn human(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let source = if report.refreshed {
        "psk.yaml, the state and Cloudflare"
    } else {
        "psk.yaml and the state; `--refresh` also asks Cloudflare"
    };
    writeln!(
        out,
        "Status at {} UTC (from {source}).",
        minute(&report.now)
    )?;
    match &report.state {
        Some((serial, _)) => writeln!(out, "State serial {serial}.")?,
        None => writeln!(out, "No state file yet: psk holds no key.")?,
    }
    if report.tunnels.is_empty() {
        return writeln!(out, "\npsk.yaml lists no tunnel.");
    }
    // The outage column only once some rotation was measured (`verify`).
    let outages = report.outages();
    let mut headers: Vec<String> = HEADERS.iter().map(|h| h.to_string()).collect();
    if outages.is_some() {
        headers.insert(HEADERS.len() - 1, "LAST OUTAGE".into());
    }
    let rows: Vec<Vec<String>> = (report.tunnels.iter())
        .map(|t| {
            let mut r = row(t, report.now).to_vec();
            if outages.is_some() {
                let o = t
                    .last_outage
                    .map_or_else(|| "-".into(), super::format_outage);
                r.insert(HEADERS.len() - 1, o);
            }
            r
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    writeln!(out)?;
    write_row(out, &headers, &widths)?;
    for r in &rows {
        write_row(out, r, &widths)?;
    }
    writeln!(out, "\n{}", summary(report))?;
    if let Some(o) = outages {
        writeln!(
            out,
            "Rotation outages (the last verified rotation of {} tunnel{}): p50 {}, p95 {}, longest {}.",
            o.tunnels,
            if o.tunnels == 1 { "" } else { "s" },
            super::format_outage(o.p50),
            super::format_outage(o.p95),
            super::format_outage(o.max)
        )?;
    }
    unmanaged(report, out)
}

/// With `--refresh`: the tunnels psk.yaml leaves out, each with the line
/// that adds it.
fn unmanaged(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let Some(u) = report.unmanaged.as_ref() else {
        return Ok(());
    };
    if u.tunnels.is_empty() {
        if u.ignored > 0 {
            writeln!(
                out,
                "Cloudflare lists {} more tunnel{} that `ignore:` in psk.yaml leaves to others.",
                u.ignored,
                if u.ignored == 1 { "" } else { "s" }
            )?;
        }
        return Ok(());
    }
    writeln!(out)?;
    let heading = unmanaged::heading(u.tunnels.len(), u.ignored, |k| format!("`{k}`"));
    writeln!(out, "{heading}")?;
    for t in &u.tunnels {
        writeln!(out, "  {}", t.line())?;
    }
    Ok(())
}

fn write_row(out: &mut dyn Write, cells: &[String], widths: &[usize]) -> io::Result<()> {
    let mut line = String::new();
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            line.push_str(&format!("{cell:<w$}  "));
        }
    }
    writeln!(out, "{}", line.trim_end())
}

fn row(t: &TunnelStatus, now: DateTime<Utc>) -> [String; 7] {
    let or_dash = |d: Option<DateTime<Utc>>| d.as_ref().map(minute).unwrap_or_else(|| "-".into());
    let starts = match t.starts {
        Some(s) if s <= now => "now".to_string(),
        Some(s) => minute(&s),
        None => "never (window)".to_string(),
    };
    [
        t.name.clone(),
        t.site.clone().unwrap_or_else(|| "-".into()),
        t.policy.clone(),
        or_dash(t.last_rotated),
        or_dash(t.next_due),
        starts,
        conditions(t, now).join("; "),
    ]
}

/// What is wrong with a tunnel, in words; `ok` when nothing is.
pub fn conditions(t: &TunnelStatus, now: DateTime<Utc>) -> Vec<String> {
    let mut c = Vec::new();
    if t.never_rotated() {
        c.push("never rotated by psk".to_string());
    }
    if let Some(by) = t.overdue_by(now) {
        c.push(format!("overdue by {}", span(by)));
    }
    if let Some(on) = t.changed_outside() {
        c.push(format!("changed outside psk {}", minute(&on)));
    }
    if let Some(since) = t.interrupted() {
        c.push(format!("interrupted since {}", minute(&since)));
    }
    if let Some(since) = t.pending() {
        c.push(format!("pending since {}", minute(&since)));
    }
    if let Some((at, _)) = &t.delivery_failed {
        c.push(format!("delivery failed {}", minute(at)));
    }
    if let Some((since, _)) = &t.unverified {
        c.push(format!("not back up since {}", minute(since)));
    }
    if c.is_empty() {
        c.push("ok".to_string());
    }
    c
}

/// `6 tunnels: 2 need attention (1 overdue, 1 interrupted).`
fn summary(report: &Report) -> String {
    let n = report.tunnels.len();
    let count = |f: fn(&TunnelStatus, DateTime<Utc>) -> bool| {
        report.tunnels.iter().filter(|t| f(t, report.now)).count()
    };
    let parts: Vec<String> = [
        ("never rotated", count(|t, _| t.never_rotated())),
        ("overdue", count(|t, now| t.overdue_by(now).is_some())),
        (
            "changed outside psk",
            count(|t, _| t.changed_outside().is_some()),
        ),
        ("interrupted", count(|t, _| t.interrupted().is_some())),
        ("pending", count(|t, _| t.pending().is_some())),
        ("delivery failed", count(|t, _| t.delivery_failed.is_some())),
        ("not back up", count(|t, _| t.unverified.is_some())),
    ]
    .into_iter()
    .filter(|(_, k)| *k > 0)
    .map(|(what, k)| format!("{k} {what}"))
    .collect();
    let plural = if n == 1 { "" } else { "s" };
    match report.attention() {
        0 => format!("{n} tunnel{plural}, all ok."),
        1 => format!(
            "{n} tunnel{plural}: 1 needs attention ({}).",
            parts.join(", ")
        ),
        k => format!(
            "{n} tunnel{plural}: {k} need attention ({}).",
            parts.join(", ")
        ),
    }
}

fn minute(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// A span as its two largest units: `32d 13h`, `5h 3m`, `42m`, `10s`.
pub fn span(d: TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, minutes) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_show_their_two_largest_units() {
        assert_eq!(
            span(TimeDelta::seconds(32 * 86_400 + 13 * 3_600 + 59)),
            "32d 13h"
        );
        assert_eq!(span(TimeDelta::seconds(5 * 3_600 + 3 * 60 + 7)), "5h 3m");
        assert_eq!(span(TimeDelta::seconds(42 * 60)), "42m");
        assert_eq!(span(TimeDelta::seconds(10)), "10s");
        assert_eq!(span(TimeDelta::seconds(-5)), "0s");
    }
}
