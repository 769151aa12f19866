//! The state file as apply would write it, diffed against today's.
//!
//! Reviewers see exactly which records an apply will touch. Ciphertext is
//! replaced by markers: it is noise in a review, and a plan never needs it.

use serde_json::{Map, Value};
use similar::{Algorithm, TextDiff};

use crate::reconcile::{ActionKind, Plan};
use crate::state::State;

const SEALED: &str = "<sealed PSK>";
const NEW_SEALED: &str = "<new sealed PSK>";
const RESEALED: &str = "<same PSK, re-sealed>";
const AFTER_APPLY: &str = "(known after apply)";

/// A unified diff of the state file before and after applying `plan`, with
/// every sealed PSK shown as a marker. Empty when nothing would change.
pub fn state_diff(state: Option<&State>, plan: &Plan, file_name: &str) -> String {
    let before = state.map(redacted).unwrap_or(Value::Null);
    let after = project(before.clone(), plan);
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        v => {
            let mut s = serde_json::to_string_pretty(v).expect("JSON value prints");
            s.push('\n');
            s
        }
    };
    let (old, new) = (text(&before), text(&after));
    if old == new {
        return String::new();
    }
    TextDiff::configure()
        .algorithm(algorithm(&old, &new))
        .diff_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{file_name}"), &format!("b/{file_name}"))
        .to_string()
}

/// Myers, the classic minimal diff, for the diffs a review comment can
/// show; Patience for large ones. Myers compares the whole file in time
/// proportional to its length times the lines changed: 8 s for a rotation
/// of 10,000 tunnels. Patience anchors on lines found once in each file,
/// and every record's `"account/tunnel": {` line is, so only the lines
/// within a record are compared: milliseconds.
fn algorithm(old: &str, new: &str) -> Algorithm {
    const MYERS_MAX_LINES: usize = 10_000;
    let lines = |s: &str| s.bytes().filter(|b| *b == b'\n').count();
    if lines(old) + lines(new) <= MYERS_MAX_LINES {
        Algorithm::Myers
    } else {
        Algorithm::Patience
    }
}

/// The state as JSON with every armored age message replaced by a marker.
fn redacted(state: &State) -> Value {
    let mut v = serde_json::to_value(state).expect("state serializes");
    mask(&mut v);
    v
}

fn mask(v: &mut Value) {
    match v {
        Value::String(s) if s.contains("BEGIN AGE ENCRYPTED FILE") => *s = SEALED.to_string(),
        Value::Array(items) => items.iter_mut().for_each(mask),
        Value::Object(map) => map.values_mut().for_each(mask),
        _ => {}
    }
}

/// What apply would leave: new sealed PSKs and dates for rotations, records
/// dropped for forgets, the serial bumped.
fn project(before: Value, plan: &Plan) -> Value {
    let mut state = match before {
        Value::Object(m) => m,
        _ => {
            let mut m = Map::new();
            m.insert("lineage".into(), Value::String("(new, random)".into()));
            m.insert("recipients".into(), Value::Array(Vec::new()));
            m.insert("tunnels".into(), Value::Object(Map::new()));
            m.insert(
                "version".into(),
                Value::from(crate::state::BASE_STATE_VERSION),
            );
            m
        }
    };
    if plan.actions.is_empty() {
        return Value::Object(state);
    }
    state.insert("serial".into(), Value::String(AFTER_APPLY.into()));
    let tunnels = state
        .entry("tunnels")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(tunnels) = tunnels else {
        return Value::Object(state);
    };
    for a in &plan.actions {
        let key = a.key.to_string();
        match a.kind {
            ActionKind::Forget => {
                tunnels.remove(&key);
            }
            ActionKind::Redeliver => {}
            ActionKind::Reseal => {
                if let Some(Value::Object(rec)) = tunnels.get_mut(&key) {
                    if rec.contains_key("psk") {
                        rec.insert("psk".into(), Value::String(RESEALED.into()));
                    }
                }
            }
            ActionKind::Generate | ActionKind::Rotate => {
                let rec = tunnels
                    .entry(key)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(rec) = rec {
                    rec.insert("account_id".into(), Value::String(a.key.account_id.clone()));
                    rec.insert("tunnel_id".into(), Value::String(a.key.tunnel_id.clone()));
                    rec.insert("name".into(), Value::String(a.name.clone()));
                    rec.insert("last_rotated".into(), Value::String(AFTER_APPLY.into()));
                    rec.insert("psk".into(), Value::String(NEW_SEALED.into()));
                    rec.remove("intent");
                }
            }
        }
    }
    Value::Object(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Action, Reason};
    use crate::tunnel::TunnelKey;

    const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";

    fn state() -> State {
        let mut s = State::new(vec!["sha256:0011".into()]);
        s.lineage = "lin".into();
        s.serial = 7;
        for (i, name) in ["a", "b"].iter().enumerate() {
            let r = s.entry(&TunnelKey::new(ACCOUNT, &format!("{i:032x}")), name);
            r.psk = Some(
                "-----BEGIN AGE ENCRYPTED FILE-----\nQUJD\n-----END AGE ENCRYPTED FILE-----\n"
                    .into(),
            );
            r.last_rotated = Some("2026-01-01T00:00:00Z".parse().unwrap());
        }
        s
    }

    fn action(i: u32, name: &str, kind: ActionKind) -> Action {
        let key = TunnelKey::new(ACCOUNT, &format!("{i:032x}"));
        Action::new(name, key, kind, vec![Reason::Forced])
    }

    fn plan(actions: Vec<Action>) -> Plan {
        Plan {
            now: "2026-11-26T00:00:00Z".parse().unwrap(),
            offline: true,
            targeted: false,
            actions,
            unchanged: vec![],
            deferred: vec![],
            upcoming: vec![],
            horizon: None,
            health: vec![],
            unmanaged: vec![],
            ignored: 0,
        }
    }

    #[test]
    fn shows_rotations_and_forgets_without_ciphertext() {
        let d = state_diff(
            Some(&state()),
            &plan(vec![
                action(0, "a", ActionKind::Rotate),
                action(1, "b", ActionKind::Forget),
            ]),
            "psk.state.json",
        );
        assert!(
            d.starts_with("--- a/psk.state.json\n+++ b/psk.state.json\n"),
            "{d}"
        );
        assert!(d.contains("-  \"serial\": 7,"), "{d}");
        assert!(d.contains("+  \"serial\": \"(known after apply)\","), "{d}");
        assert!(d.contains("+      \"psk\": \"<new sealed PSK>\","), "{d}");
        assert!(d.contains("-      \"name\": \"b\","), "{d}");
        assert!(!d.contains("BEGIN AGE"), "{d}");
        assert!(!d.contains("QUJD"), "{d}");
    }

    #[test]
    fn empty_when_nothing_changes_and_whole_file_when_new() {
        assert_eq!(state_diff(Some(&state()), &plan(vec![]), "s.json"), "");
        let d = state_diff(
            None,
            &plan(vec![action(5, "new", ActionKind::Generate)]),
            "s.json",
        );
        assert!(d.contains("+  \"lineage\": \"(new, random)\","), "{d}");
        assert!(
            d.lines()
                .filter(|l| l.starts_with('-') && !l.starts_with("---"))
                .count()
                == 0
        );
    }

    /// `old` with a unified diff applied.
    fn patch(old: &str, diff: &str) -> String {
        let old: Vec<&str> = old.lines().collect();
        let mut out: Vec<&str> = Vec::new();
        let mut at = 0;
        for line in diff.lines().skip(2) {
            if let Some(h) = line.strip_prefix("@@ -") {
                let start: usize = h.split([',', ' ']).next().unwrap().parse().unwrap();
                while at + 1 < start {
                    out.push(old[at]);
                    at += 1;
                }
            } else if let Some(l) = line.strip_prefix('+') {
                out.push(l);
            } else if let Some(l) = line.strip_prefix(' ') {
                assert_eq!(l, old[at]);
                out.push(l);
                at += 1;
            } else if let Some(l) = line.strip_prefix('-') {
                assert_eq!(l, old[at]);
                at += 1;
            }
        }
        out.extend(&old[at..]);
        out.join("\n") + "\n"
    }

    #[test]
    fn large_diffs_are_fast_and_exact() {
        let sealed = state().tunnels.values().next().unwrap().psk.clone();
        let mut s = state();
        let mut actions = Vec::new();
        for i in 0..1_500u32 {
            let name = format!("t{i}");
            let r = s.entry(&TunnelKey::new(ACCOUNT, &format!("{i:032x}")), &name);
            r.psk = sealed.clone();
            r.last_rotated = Some("2026-01-01T00:00:00Z".parse().unwrap());
            let kind = match i % 7 {
                0 => ActionKind::Forget,
                3 => ActionKind::Reseal,
                5 => continue,
                _ => ActionKind::Rotate,
            };
            actions.push(action(i, &name, kind));
        }
        for i in 1_500..1_510u32 {
            actions.push(action(i, &format!("t{i}"), ActionKind::Generate));
        }
        let plan = plan(actions);
        let text = |v: &Value| serde_json::to_string_pretty(v).unwrap() + "\n";
        let before = redacted(&s);
        let (old, new) = (text(&before), text(&project(before, &plan)));
        assert_eq!(algorithm(&old, &new), Algorithm::Patience);
        let d = state_diff(Some(&s), &plan, "psk.state.json");
        assert_eq!(patch(&old, &d), new);
        // Each record's change stays within the record: a rotation is two
        // lines out and two in, a forget the record's seven lines out.
        let count = |p: char| d.lines().filter(|l| l.starts_with(p)).count() - 1;
        let (forgets, reseals, rotations) = (215, 214, 857);
        assert_eq!(count('-'), 1 + 7 * forgets + reseals + 2 * rotations);
        assert_eq!(count('+'), 1 + reseals + 2 * rotations + 7 * 10);

        // Small diffs keep Myers, and the same checker agrees with it.
        let small = plan_of_two();
        let d = state_diff(Some(&state()), &small, "psk.state.json");
        let before = redacted(&state());
        let (old, new) = (text(&before), text(&project(before, &small)));
        assert_eq!(algorithm(&old, &new), Algorithm::Myers);
        assert_eq!(patch(&old, &d), new);
    }

    fn plan_of_two() -> Plan {
        plan(vec![
            action(0, "a", ActionKind::Rotate),
            action(1, "b", ActionKind::Forget),
        ])
    }
}
