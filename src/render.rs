//! Printers for a plan: one model, several formats.
//!
//! The plan is pasted into pull requests, so every format is a pure
//! function of the plan: same plan, same bytes. Nothing here can print a
//! PSK, because a plan never holds one.
//!
//! `human` prints for a terminal, `markdown` for a pull request, and the
//! JSON printers below write the wire types of `json`, which hold the
//! format scripts rely on apart from the planner's types. `diff` is the
//! state file as apply would leave it; `text` the sentences several
//! formats share. This module only gathers them: none of them imports it.

pub mod codes;
pub mod diff;
mod human;
mod json;
pub mod markdown;
mod text;

use std::io::{self, Write};

pub use human::{human, human_styled};
pub use json::JSON_FORMAT_VERSION;
pub use text::summary_line;

use crate::reconcile::Plan;

/// Whether human output may use ANSI colour: only on a terminal, and never
/// with `--no-color` or a non-empty `NO_COLOR` (no-color.org).
pub fn use_color(no_color_flag: bool, is_terminal: bool) -> bool {
    let env_off = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    is_terminal && !no_color_flag && !env_off
}

/// Machine-readable plan; see docs/formats.md "JSON plan format".
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
    use crate::reconcile::{Action, ActionKind, DryRun, Reason};
    use crate::tunnel::TunnelKey;

    fn action(kind: ActionKind, i: usize) -> Action {
        let key = TunnelKey::new("023e105f4ecef8ad9ca31a8372d0c353", &format!("{i:032x}"));
        Action::new(&format!("t{i}"), key, kind, vec![Reason::Forced])
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
            health: vec![],
            unmanaged: vec![],
            ignored: 0,
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
