//! Deferred and upcoming tunnels in the PR comment, grouped.
//!
//! One bullet per tunnel made a 40-tunnel fleet's comment 38 lines of
//! "waiting for window" and a large fleet's unreadable. A reviewer asks
//! why tunnels wait and how many, so each collapsed block holds one table
//! row per reason (the window with its opening, one PSK change per site,
//! an unhealthy sibling; for upcoming tunnels the day and policy) with its
//! count and the first names. The rows and names are capped, so the block
//! stays small whatever the fleet; the JSON plan lists every tunnel.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{code, esc, prose};
use crate::reconcile::{ActionKind, Deferral, Deferred, Plan, Upcoming};
use crate::state::format_time;

/// Rows shown in one table; the rest are counted in a last row.
const ROWS: usize = 30;
/// Names shown in one row; the rest are counted.
const NAMES: usize = 8;
/// Characters of a name shown; a longer one is cut with `…`.
const NAME_CHARS: usize = 60;

/// Tunnels that share one reason, in plan order.
#[derive(Default)]
struct Group<'a> {
    names: Vec<&'a str>,
    kinds: BTreeMap<ActionKind, usize>,
}

impl<'a> Group<'a> {
    fn add(&mut self, name: &'a str, kind: ActionKind) {
        self.names.push(name);
        *self.kinds.entry(kind).or_default() += 1;
    }

    /// "12", or "12 (10 rotate, 2 generate)" when the kinds differ.
    fn count(&self) -> String {
        let n = self.names.len();
        if self.kinds.len() < 2 {
            return n.to_string();
        }
        let kinds: Vec<String> = (self.kinds.iter())
            .map(|(k, c)| format!("{c} {}", k.as_str()))
            .collect();
        format!("{n} ({})", kinds.join(", "))
    }

    /// The first names, escaped, and how many more.
    fn which(&self) -> String {
        let mut shown: Vec<String> = (self.names.iter())
            .take(NAMES)
            .map(|n| esc(&short(n)))
            .collect();
        if self.names.len() > NAMES {
            shown.push(format!("and {} more", self.names.len() - NAMES));
        }
        shown.join(", ")
    }
}

fn short(name: &str) -> String {
    if name.chars().count() <= NAME_CHARS {
        return name.to_string();
    }
    let mut s: String = name.chars().take(NAME_CHARS - 1).collect();
    s.push('…');
    s
}

/// The row label of a deferral: what the tunnels wait for, in markdown.
/// Windows group by window and opening, a hold by verify's preflight by
/// the sibling that is down and its health; one change per site is one
/// row, so a fleet of many sites stays a few rows.
/// The key sorts windows by their opening, then the reasons that are one
/// row each, then the holds by sibling (many when many sites are down:
/// the rows past the cap are theirs).
fn why(d: &Deferred) -> (u8, Option<DateTime<Utc>>, String) {
    match &d.why {
        Deferral::Window {
            opens,
            opens_local,
            window,
        } => (
            0,
            Some(*opens),
            format!(
                "window {} opens {} ({})",
                code(window),
                esc(opens_local),
                format_time(opens)
            ),
        ),
        // Few siblings are down at once, and which one is what to fix.
        Deferral::SiblingDown { .. }
        | Deferral::Unhealthy { .. }
        | Deferral::Undelivered { .. }
        | Deferral::Uncertain { .. } => {
            (4, None, prose(&d.why.describe()))
        }
        Deferral::Site { .. } => (
            1,
            None,
            prose("another tunnel of its site changes in this apply, and a site changes one PSK per apply (`site_parallel: true` on its policy allows more)"),
        ),
        Deferral::StillListed => (
            2,
            None,
            prose("kept: gone from psk.yaml, but Cloudflare still lists the tunnel, so its key may still be live (`psk show NAME` opens it)"),
        ),
        Deferral::NotAsked => (
            3,
            None,
            prose("kept: gone from psk.yaml, and Cloudflare was not asked whether it still lists the tunnel"),
        ),
    }
}

/// The deferred tunnels as a collapsed block of groups; nothing when
/// there are none.
pub(super) fn deferred(out: &mut String, plan: &Plan) {
    if plan.deferred.is_empty() {
        return;
    }
    let mut groups: BTreeMap<(u8, Option<DateTime<Utc>>, String), Group> = BTreeMap::new();
    for d in &plan.deferred {
        groups.entry(why(d)).or_default().add(&d.name, d.kind);
    }
    let rows: Vec<(String, Group)> = groups.into_iter().map(|((_, _, w), g)| (w, g)).collect();
    let n = plan.deferred.len();
    let _ = writeln!(
        out,
        "<details><summary><b>Deferred: {n} tunnel{}</b> (needed, but not in this apply), for {} reason{}</summary>\n",
        plural(n),
        rows.len(),
        plural(rows.len())
    );
    table(
        out,
        "| Waiting for | Tunnels | Which |\n|---|---|---|\n",
        rows,
    );
    out.push_str("</details>\n\n");
}

/// The upcoming tunnels as a collapsed block, one row per day and policy
/// (and the window's opening, when it starts later); nothing when none.
pub(super) fn upcoming(out: &mut String, plan: &Plan) {
    if plan.upcoming.is_empty() {
        return;
    }
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for u in &plan.upcoming {
        groups
            .entry(when(u))
            .or_default()
            .add(&u.name, ActionKind::Rotate);
    }
    let n = plan.upcoming.len();
    let horizon = plan.horizon.map_or_else(String::new, |h| h.to_string());
    let _ = writeln!(
        out,
        "<details><summary><b>Falling due within {horizon}: {n} tunnel{}</b> (information, not actions)</summary>\n",
        plural(n)
    );
    table(
        out,
        "| Due | Tunnels | Which |\n|---|---|---|\n",
        groups.into_iter().collect(),
    );
    out.push_str("</details>\n\n");
}

/// The row label of an upcoming tunnel: the day it falls due and its
/// policy, and when its window opens if that is later.
fn when(u: &Upcoming) -> String {
    let mut label = format!("{}, policy {}", u.due.format("%Y-%m-%d"), code(&u.policy));
    if u.starts != u.due {
        let _ = write!(label, ", window opens {}", format_time(&u.starts));
    }
    label
}

/// A table of at most [`ROWS`] rows, the rest counted in a last row.
fn table(out: &mut String, header: &str, rows: Vec<(String, Group)>) {
    out.push_str(header);
    let total = rows.len();
    let mut rest = 0;
    for (i, (label, group)) in rows.into_iter().enumerate() {
        if i < ROWS {
            let _ = writeln!(out, "| {label} | {} | {} |", group.count(), group.which());
        } else {
            rest += group.names.len();
        }
    }
    if total > ROWS {
        let _ = writeln!(
            out,
            "| and {} more groups | {rest} | `psk plan --format json` lists them |",
            total - ROWS
        );
    }
    out.push('\n');
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
