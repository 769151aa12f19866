//! Printers for a plan: one model, several formats.
//!
//! The plan is pasted into pull requests, so every format is a pure
//! function of the plan: same plan, same bytes. Nothing here can print a
//! PSK, because a plan never holds one.
//!
//! `human` prints for a terminal, `markdown` for a pull request, and the
//! JSON printers below write the wire types of `json`, which hold the
//! format scripts rely on apart from the planner's types. `diff` is the
//! state file as apply would leave it. The sentences several formats share
//! (summary line, warnings, headlines) are here, so they read the same in
//! each.

pub mod diff;
mod human;
mod json;
pub mod markdown;

use std::io::{self, Write};

pub(crate) use human::action_block;
pub use human::{human, human_styled};
pub use json::JSON_FORMAT_VERSION;

use crate::reconcile::{ActionKind, Deferred, Plan, Unchanged, Upcoming};
use crate::state::format_time;

/// Whether human output may use ANSI colour: only on a terminal, and never
/// with `--no-color` or a non-empty `NO_COLOR` (no-color.org).
pub fn use_color(no_color_flag: bool, is_terminal: bool) -> bool {
    let env_off = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    is_terminal && !no_color_flag && !env_off
}

/// The warning under a plan with dry runs that gave no verdict: what it
/// means and what to do, the same words in every format.
pub(crate) fn no_verdict_note(plan: &Plan) -> String {
    let n = plan.no_verdicts();
    format!(
        "{n} dry run{} gave no verdict: the dry run itself failed (no answer, a 5xx after every retry, or the rate limit), which says nothing about the rotation. Apply still tries {}; run `psk plan` again for a verdict first.",
        if n == 1 { "" } else { "s" },
        if n == 1 { "that tunnel" } else { "those tunnels" }
    )
}

/// The one-line summary that ends every human plan.
pub fn summary_line(plan: &Plan) -> String {
    let deferred = match plan.deferred.len() {
        0 => String::new(),
        n => format!(" {n} deferred."),
    };
    if !plan.has_changes() {
        if deferred.is_empty() {
            return "No changes. Every PSK matches psk.yaml.".to_string();
        }
        return format!("No changes.{deferred}");
    }
    let redeliver = match plan.count(ActionKind::Redeliver) {
        0 => String::new(),
        n => format!(", {n} to redeliver"),
    };
    let no_verdict = match plan.no_verdicts() {
        0 => String::new(),
        1 => " 1 dry run gave no verdict.".to_string(),
        n => format!(" {n} dry runs gave no verdict."),
    };
    format!(
        "Plan: {} to rotate, {} to generate, {} to reseal, {} to forget{redeliver}.{deferred}{no_verdict}",
        plan.count(ActionKind::Rotate),
        plan.count(ActionKind::Generate),
        plan.count(ActionKind::Reseal),
        plan.count(ActionKind::Forget)
    )
}

/// `fra-b: due, waiting for window (opens ...)`: the first line of a
/// deferred tunnel's block.
pub(crate) fn deferred_headline(d: &Deferred) -> String {
    let due = match d.kind {
        ActionKind::Generate => "first PSK due",
        _ => "due",
    };
    format!("{}: {due}, {}", d.name, d.why.describe())
}

/// `edge-1: due 2026-12-01T00:00:00Z (policy "p"), window opens ...`.
pub(crate) fn upcoming_line(u: &Upcoming) -> String {
    let mut line = format!(
        "{}: due {} (policy \"{}\")",
        u.name,
        format_time(&u.due),
        u.policy
    );
    if u.starts != u.due {
        line.push_str(&format!(", window opens {}", format_time(&u.starts)));
    }
    line
}

/// The unchanged tunnel that falls due first (by name on a tie), for the
/// "up to date; next due" line; `None` when every tunnel has an action.
pub(crate) fn next_due(plan: &Plan) -> Option<&Unchanged> {
    plan.unchanged
        .iter()
        .min_by(|x, y| x.next_due.cmp(&y.next_due).then(x.name.cmp(&y.name)))
}

/// Machine-readable plan; see README "JSON plan format".
pub fn json(plan: &Plan, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &json::JsonPlan::new(plan))?;
    writeln!(out)
}

/// The first line of `apply --json`: the plan's counts (every action kind,
/// as in the JSON plan's `summary`), `no_verdict` and `applyable`, as one
/// object on one line.
pub fn json_apply_header(plan: &Plan, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &json::JsonApplyHeader::new(plan))?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Action, DryRun, Reason};
    use crate::tunnel::TunnelKey;

    fn action(kind: ActionKind, i: usize) -> Action {
        Action {
            name: format!("t{i}"),
            key: TunnelKey::new("023e105f4ecef8ad9ca31a8372d0c353", &format!("{i:032x}")),
            kind,
            reasons: vec![Reason::Forced],
            policy: None,
            last_rotated: None,
            next_due: None,
            dry_run: DryRun::NotRun,
        }
    }

    /// `apply --json`'s first line counts every kind, as the plan's
    /// `summary` does (`redeliver` was once left out).
    #[test]
    fn the_apply_header_counts_every_kind() {
        let kinds = [
            ActionKind::Generate,
            ActionKind::Rotate,
            ActionKind::Rotate,
            ActionKind::Forget,
            ActionKind::Reseal,
            ActionKind::Redeliver,
        ];
        let mut plan = Plan {
            now: "2026-11-26T00:00:00Z".parse().unwrap(),
            offline: false,
            targeted: false,
            actions: kinds
                .iter()
                .enumerate()
                .map(|(i, k)| action(*k, i))
                .collect(),
            unchanged: vec![],
            deferred: vec![],
            upcoming: vec![],
            horizon: None,
        };
        plan.actions[0].dry_run = DryRun::NoVerdict("HTTP 503".into());
        let mut line = Vec::new();
        json_apply_header(&plan, &mut line).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"type\":\"plan\",\"rotate\":2,\"generate\":1,\"forget\":1,\"reseal\":1,\"redeliver\":1,\"no_verdict\":1,\"applyable\":true}\n"
        );

        let mut doc = Vec::new();
        json(&plan, &mut doc).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        for kind in kinds {
            assert_eq!(doc["summary"][kind.as_str()], plan.count(kind), "{kind:?}");
        }
    }
}
