//! The rotation calendar as a Mermaid gantt, which GitHub draws in a
//! pull-request comment.
//!
//! One bar per tunnel reads best, but a 2,000-tunnel fleet would need
//! about 120,000 characters: past GitHub's 65,536 for the whole comment
//! and Mermaid's own 50,000 for a diagram. So the bars are grouped only as
//! far as needed to fit [`BUDGET`]: first one bar per tunnel, by site;
//! then one bar per site and day (`fra: 2 tunnels`); then one bar per day
//! for the whole fleet (`12 tunnels in 7 sites`). The windows always have
//! their own section, and a line under the diagram says how it was
//! grouped. Names are reduced to what Mermaid's gantt grammar takes
//! (letters, digits, space and `-_.()/+`), which changes nothing GitHub
//! shows in a way a reviewer could misread: the tables name every tunnel
//! exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};

use crate::calendar::{Bar, Calendar, Mark};

/// Most characters the diagram may take.
pub const BUDGET: usize = 20_000;

/// How the bars were grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grouping {
    Tunnel,
    SiteDay,
    Day,
}

/// The calendar block for the comment: a title, the diagram and the line
/// that says what it shows; not collapsed, so it is seen at a glance.
pub fn block(cal: &Calendar) -> String {
    let days = (cal.until - cal.from).num_days();
    let mut out = format!("**Rotation calendar**, the next {days} days:\n\n");
    let (diagram, grouping, bars) = [Grouping::Tunnel, Grouping::SiteDay, Grouping::Day]
        .into_iter()
        .map(|g| {
            let (text, n) = gantt(cal, g);
            (text, g, n)
        })
        .find(|(text, _, _)| text.len() <= BUDGET)
        .unwrap_or_else(|| {
            let (text, n) = gantt(cal, Grouping::Day);
            (text, Grouping::Day, n)
        });
    out.push_str("```mermaid\n");
    out.push_str(&diagram);
    out.push_str("```\n\n");
    let tunnels = cal.bars.len();
    let how = match grouping {
        Grouping::Tunnel => "one bar per tunnel, by site".to_string(),
        Grouping::SiteDay => format!(
            "grouped to fit the comment: one bar per site and day ({tunnels} tunnels in {bars} bars)"
        ),
        Grouping::Day => format!(
            "grouped to fit the comment: one bar per day for the whole fleet ({tunnels} tunnels in {bars} bars)"
        ),
    };
    let windows: Vec<String> = (cal.windows.iter())
        .map(|w| format!("{} {}", w.policy, w.window))
        .collect();
    let windows = match windows.is_empty() {
        true => String::new(),
        false => format!(" Windows: {}.", super::esc(&windows.join("; "))),
    };
    let _ = writeln!(
        out,
        "{}: {how}. _now_ rotates in this apply, _held_ waits for another path of its site, _waits for window_ for its policy's window; each bar is the day (UTC) the key may change.{windows}\n",
        if tunnels == 0 {
            "No key falls due in this span".to_string()
        } else {
            format!("{tunnels} key{} change", if tunnels == 1 { "" } else { "s" })
        }
    );
    out
}

/// The gantt text and how many tunnel bars it has.
fn gantt(cal: &Calendar, grouping: Grouping) -> (String, usize) {
    let mut out = String::from("gantt\n");
    let _ = writeln!(
        out,
        "    title PSK rotations {} to {} (UTC)",
        cal.from.format("%Y-%m-%d"),
        cal.until.format("%Y-%m-%d")
    );
    out.push_str("    dateFormat YYYY-MM-DD HH:mm\n    axisFormat %b %d\n    todayMarker off\n");
    if !cal.windows.is_empty() {
        out.push_str("    section Windows\n");
        for w in &cal.windows {
            let label = clean(&format!("{} window", w.policy));
            for (open, close) in &w.openings {
                let _ = writeln!(out, "    {label} :{}, {}", time(open), time(close));
            }
        }
    }
    let rows = match grouping {
        Grouping::Tunnel => by_tunnel(&cal.bars),
        Grouping::SiteDay => by_site_day(&cal.bars),
        Grouping::Day => by_day(&cal.bars),
    };
    let n = rows.iter().map(|(_, r)| r.len()).sum();
    for (section, bars) in rows {
        let _ = writeln!(out, "    section {}", clean(&section));
        for (label, mark, start) in bars {
            let tag = match mark {
                Mark::Now => "active, ",
                Mark::Held => "crit, ",
                Mark::Waiting | Mark::Due => "",
            };
            let end = start + TimeDelta::days(1);
            let _ = writeln!(
                out,
                "    {} :{tag}{}, {}",
                clean(&label),
                time(&start),
                time(&end)
            );
        }
    }
    (out, n)
}

type Rows = Vec<(String, Vec<(String, Mark, DateTime<Utc>)>)>;

/// Tunnels per day and mark.
type Days = BTreeMap<(DateTime<Utc>, Mark), usize>;

fn site_of(b: &Bar) -> String {
    b.site.clone().unwrap_or_else(|| "no site".into())
}

fn labelled(name: &str, mark: Mark) -> String {
    match mark {
        Mark::Due => name.to_string(),
        m => format!("{name} ({})", m.word()),
    }
}

fn by_tunnel(bars: &[Bar]) -> Rows {
    let mut rows: Rows = Vec::new();
    for b in bars {
        let section = site_of(b);
        let label = labelled(&b.name, b.mark);
        let start = day(b.start);
        match rows.last_mut() {
            Some((s, r)) if *s == section => r.push((label, b.mark, start)),
            _ => rows.push((section, vec![(label, b.mark, start)])),
        }
    }
    rows
}

/// Midnight UTC of `t`'s day: a bar covers the day a key may change (the
/// hour is in the plan's tables), and the same plan draws the same bars
/// whenever during the day it is made.
fn day(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(t, |d| d.and_utc())
}

fn by_site_day(bars: &[Bar]) -> Rows {
    let mut groups: BTreeMap<(bool, String), Days> = BTreeMap::new();
    for b in bars {
        let key = (b.site.is_none(), site_of(b));
        *groups
            .entry(key)
            .or_default()
            .entry((day(b.start), b.mark))
            .or_default() += 1;
    }
    groups
        .into_iter()
        .map(|((_, site), days)| {
            let bars = days
                .into_iter()
                .map(|((start, mark), n)| {
                    let what = format!("{site}: {n} tunnel{}", if n == 1 { "" } else { "s" });
                    (labelled(&what, mark), mark, start)
                })
                .collect();
            (site, bars)
        })
        .collect()
}

fn by_day(bars: &[Bar]) -> Rows {
    let mut groups: BTreeMap<(DateTime<Utc>, Mark), (usize, BTreeSet<String>)> = BTreeMap::new();
    for b in bars {
        let g = groups.entry((day(b.start), b.mark)).or_default();
        g.0 += 1;
        if let Some(s) = &b.site {
            g.1.insert(s.clone());
        }
    }
    let bars = groups
        .into_iter()
        .map(|((start, mark), (n, sites))| {
            let what = format!(
                "{n} tunnel{} in {} site{}",
                if n == 1 { "" } else { "s" },
                sites.len(),
                if sites.len() == 1 { "" } else { "s" }
            );
            (labelled(&what, mark), mark, start)
        })
        .collect();
    vec![("All tunnels".to_string(), bars)]
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// A name as Mermaid's gantt grammar takes it in a task or section: `:`
/// ends a task's name, `#` and `;` start comments and statements, and a
/// line break ends it; those and anything unusual become `_`. Cut at 80
/// characters.
fn clean(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || " -_.()/+,".contains(c) {
                c
            } else if c == ':' {
                '.'
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let trimmed = cleaned.trim();
    if trimmed.is_empty() {
        "_".into()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_safe_for_the_grammar() {
        assert_eq!(clean("fra-ipsec-1"), "fra-ipsec-1");
        assert_eq!(clean("a:b#c;d\ne"), "a.b_c_d_e");
        assert_eq!(clean("  "), "_");
        assert_eq!(clean("weekend window"), "weekend window");
    }

    fn cal(n: usize) -> Calendar {
        let from: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
        Calendar {
            from,
            until: from + TimeDelta::days(30),
            windows: vec![],
            bars: (0..n)
                .map(|i| Bar {
                    name: format!("tunnel-{i:05}"),
                    site: Some(format!("site-{}", i / 2)),
                    start: from + TimeDelta::hours((i as i64 * 7) % (30 * 24)),
                    mark: if i % 2 == 0 { Mark::Due } else { Mark::Held },
                })
                .collect(),
        }
    }

    #[test]
    fn a_large_fleet_is_grouped_to_fit() {
        let small = block(&cal(10));
        assert!(small.contains("one bar per tunnel, by site"), "{small}");
        assert!(small.contains("tunnel-00001 (held) :crit, "), "{small}");
        let large = block(&cal(2_000));
        assert!(large.len() < BUDGET + 1_000, "{}", large.len());
        assert!(large.contains("grouped to fit the comment"), "{large}");
    }
}
