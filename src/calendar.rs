//! The rotation calendar: which keys change on which day over the next
//! weeks, by site, with the change windows they wait for.
//!
//! A plan says what changes now; reviewers also want to see what comes
//! next, and whether a window or a site bunches rotations up. The
//! calendar is a pure function of psk.yaml and the plan (each tunnel's
//! next due date is the planner's, its first possible start the policy's
//! window), drawn by `render::markdown` as a Mermaid gantt that GitHub
//! shows in the pull-request comment.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::Config;
use crate::reconcile::{Deferral, Plan};

/// The default span the calendar covers.
pub const DEFAULT_DAYS: i64 = 30;

/// Most openings drawn per window, so a window open every hour cannot
/// swamp the picture.
const OPENINGS: usize = 62;

/// Rotations over `[from, until)`, with the windows that govern them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// One row per policy with a window that some tunnel uses, by name.
    pub windows: Vec<WindowRow>,
    /// One bar per tunnel whose key changes (or may start changing) in the
    /// span, by site, then start, then name.
    pub bars: Vec<Bar>,
}

/// A policy's change window and its openings in the span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRow {
    pub policy: String,
    /// `sat, sun 02:00–06:00 Europe/Berlin`.
    pub window: String,
    pub openings: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

/// One tunnel's next rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    pub name: String,
    pub site: Option<String>,
    /// The day it may start (the window's opening when it has one).
    pub start: DateTime<Utc>,
    pub mark: Mark,
}

/// Where a tunnel's rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mark {
    /// In this plan: applying it rotates the key.
    Now,
    /// Due, and held back by its site (another path changes now, or is
    /// not healthy): it goes in a later apply.
    Held,
    /// Due, and waiting for its policy's window to open.
    Waiting,
    /// Not due yet: falls due (or its window opens) on that day.
    Due,
}

impl Mark {
    /// The words after a bar's name.
    pub fn word(self) -> &'static str {
        match self {
            Mark::Now => "now",
            Mark::Held => "held",
            Mark::Waiting => "waits for window",
            Mark::Due => "due",
        }
    }
}

/// The calendar of `plan` (made from `config`) for `days` days from the
/// plan's own instant.
pub fn calendar(config: &Config, plan: &Plan, days: i64) -> Calendar {
    let from = plan.now;
    let until = from + TimeDelta::days(days.max(0));
    let now: HashMap<&str, ()> = (plan.actions.iter())
        .filter(|a| a.kind.changes_psk())
        .map(|a| (a.name.as_str(), ()))
        .collect();
    let deferred: HashMap<&str, &Deferral> = (plan.deferred.iter())
        .map(|d| (d.name.as_str(), &d.why))
        .collect();
    let next: HashMap<&str, DateTime<Utc>> = (plan.unchanged.iter())
        .map(|u| (u.name.as_str(), u.next_due))
        .collect();
    let mut bars = Vec::new();
    for t in &config.tunnels {
        let policy = config.policy_of(t);
        let (start, mark) = if now.contains_key(t.name.as_str()) {
            (from, Mark::Now)
        } else if let Some(why) = deferred.get(t.name.as_str()) {
            match why {
                Deferral::Window { opens, .. } => (*opens, Mark::Waiting),
                Deferral::Site { .. }
                | Deferral::SiblingDown { .. }
                | Deferral::Unhealthy { .. }
                | Deferral::Undelivered { .. }
                | Deferral::Uncertain { .. } => (from, Mark::Held),
                // Records kept for forgetting are no rotation.
                Deferral::StillListed | Deferral::NotAsked => continue,
            }
        } else if let Some(due) = next.get(t.name.as_str()) {
            (policy.may_start_at(*due).max(from), Mark::Due)
        } else {
            continue;
        };
        if start >= until {
            continue;
        }
        bars.push(Bar {
            name: t.name.clone(),
            site: t.site.clone(),
            start,
            mark,
        });
    }
    bars.sort_by(|a, b| {
        (a.site.is_none().cmp(&b.site.is_none()))
            .then_with(|| a.site.cmp(&b.site))
            .then_with(|| a.start.cmp(&b.start))
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut used: BTreeMap<&str, ()> = BTreeMap::new();
    for t in &config.tunnels {
        used.insert(config.policy_of(t).name.as_str(), ());
    }
    let windows = used
        .keys()
        .filter_map(|name| {
            let policy = config.policies.get(*name)?;
            let w = policy.window.as_ref()?;
            let mut openings = w.openings(from, until);
            openings.truncate(OPENINGS);
            Some(WindowRow {
                policy: name.to_string(),
                window: w.to_string(),
                openings,
            })
        })
        .collect();
    Calendar {
        from,
        until,
        windows,
        bars,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::reconcile;
    use crate::state::State;
    use crate::tunnel::TunnelKey;

    const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn bars_by_site_with_what_holds_them() {
        let text = format!(
            "version: 1\naccount_id: {ACCOUNT}\nrecipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]\npolicies:\n  default: {{rotate_every: 90d}}\n  weekend:\n    rotate_every: 90d\n    window: {{days: [sat], start: \"02:00\", end: \"06:00\"}}\ntunnels:\n  - {{name: fra-1, id: {:032x}, site: fra}}\n  - {{name: fra-2, id: {:032x}, site: fra}}\n  - {{name: ams-1, id: {:032x}, policy: weekend}}\n  - {{name: lon-1, id: {:032x}}}\n  - {{name: far-1, id: {:032x}}}\n",
            1, 2, 3, 4, 5
        );
        let config = Config::parse(std::path::Path::new("psk.yaml"), &text).unwrap();
        let mut state = State::new(config.recipient_fingerprints());
        for (i, name, last) in [
            (1, "fra-1", "2026-08-01T00:00:00Z"),
            (2, "fra-2", "2026-08-02T00:00:00Z"),
            (3, "ams-1", "2026-08-03T00:00:00Z"),
            (4, "lon-1", "2026-09-20T00:00:00Z"),
            (5, "far-1", "2026-11-20T00:00:00Z"),
        ] {
            let r = state.entry(&TunnelKey::new(ACCOUNT, &format!("{i:032x}")), name);
            r.psk = Some("sealed".into());
            r.last_rotated = Some(t(last));
        }
        // A Wednesday: fra-1 goes now, fra-2 is held by its site, ams-1
        // waits for Saturday, lon-1 falls due on 2026-12-19, far-1 is
        // beyond the 30 days.
        let now = t("2026-12-02T12:00:00Z");
        let plan = reconcile(&config, Some(&state), None, now);
        let cal = calendar(&config, &plan, 30);
        let bars: Vec<(&str, Option<&str>, DateTime<Utc>, Mark)> = (cal.bars.iter())
            .map(|b| (b.name.as_str(), b.site.as_deref(), b.start, b.mark))
            .collect();
        assert_eq!(
            bars,
            [
                ("fra-1", Some("fra"), now, Mark::Now),
                ("fra-2", Some("fra"), now, Mark::Held),
                ("ams-1", None, t("2026-12-05T02:00:00Z"), Mark::Waiting),
                ("lon-1", None, t("2026-12-19T00:00:00Z"), Mark::Due),
            ]
        );
        assert_eq!(cal.windows.len(), 1);
        assert_eq!(cal.windows[0].window, "sat 02:00–06:00 UTC");
        assert_eq!(cal.windows[0].openings.len(), 4);
        assert_eq!(
            cal.windows[0].openings[0],
            (t("2026-12-05T02:00:00Z"), t("2026-12-05T06:00:00Z"))
        );
    }
}
