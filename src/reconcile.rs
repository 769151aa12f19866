//! The planner: `reconcile(desired, state, remote, now) -> Plan`.
//!
//! A pure function, no I/O and no clock, so every rule below is tested
//! exhaustively with fixed instants. Every action carries the reasons that
//! caused it, because a reviewer approves reasons, not just actions.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cloudflare::RemoteTunnel;
use crate::config::{Config, TunnelKey};
use crate::policy::Span;
use crate::state::State;

/// What Cloudflare reported, per tunnel. `None` in [`reconcile`] means the
/// plan is offline and Cloudflare was not asked.
#[derive(Debug, Default, Clone)]
pub struct Remote {
    pub tunnels: BTreeMap<TunnelKey, RemoteTunnel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// First PSK made by psk for this tunnel.
    Generate,
    /// Replace the PSK psk made before.
    Rotate,
    /// Drop the tunnel from the state only; the tunnel is never touched.
    Forget,
    /// Re-encrypt the sealed PSK to psk.yaml's recipients (`psk reseal`);
    /// no API call, the PSK itself does not change.
    Reseal,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Generate => "generate",
            ActionKind::Rotate => "rotate",
            ActionKind::Forget => "forget",
            ActionKind::Reseal => "reseal",
        }
    }

    /// Whether the action changes the PSK on Cloudflare's edge. (Reseal
    /// only re-encrypts the state.)
    pub fn changes_psk(self) -> bool {
        matches!(self, ActionKind::Generate | ActionKind::Rotate)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reason {
    /// psk has no sealed PSK for the tunnel.
    NeverRotated,
    /// The policy's period has passed.
    Due {
        last_rotated: DateTime<Utc>,
        days_ago: i64,
        policy: String,
        every: Span,
    },
    /// A rotation was started and its answer never recorded.
    Interrupted { started: DateTime<Utc> },
    /// Cloudflare's PSK changed after the one psk sealed.
    #[serde(rename = "drift")]
    ChangedOutside { on: DateTime<Utc> },
    /// In the state but no longer in psk.yaml.
    NotInConfig,
    /// Asked for with `--replace`.
    Forced,
    /// A PSK psk generated itself is sealed in the state as pending, and
    /// Cloudflare has not confirmed it: it must be sent (again).
    Pending {
        generated: DateTime<Utc>,
        /// Cloudflare's PSK changed after it was generated (the answer to
        /// an earlier send may have been lost).
        remote_changed: Option<DateTime<Utc>>,
    },
    /// psk.yaml's recipients differ from those the state is sealed to.
    RecipientsChanged {
        added: Vec<String>,
        removed: Vec<String>,
    },
}

impl Reason {
    /// A short machine name, for JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::NeverRotated => "never_rotated",
            Reason::Due { .. } => "due",
            Reason::Interrupted { .. } => "interrupted",
            Reason::ChangedOutside { .. } => "drift",
            Reason::NotInConfig => "not_in_config",
            Reason::Forced => "forced",
            Reason::Pending { .. } => "pending",
            Reason::RecipientsChanged { .. } => "recipients_changed",
        }
    }

    /// The sentence shown to people.
    pub fn describe(&self) -> String {
        match self {
            Reason::NeverRotated => "psk holds no sealed PSK for it yet".to_string(),
            Reason::Due {
                last_rotated,
                days_ago,
                policy,
                every,
            } => format!(
                "last rotated {}, {} day{} ago; policy \"{policy}\" rotates every {every}",
                last_rotated.format("%Y-%m-%d"),
                days_ago,
                if *days_ago == 1 { "" } else { "s" }
            ),
            Reason::Interrupted { started } => format!(
                "interrupted: a rotation started {} never recorded its answer, so the PSK on Cloudflare's edge is unknown",
                crate::state::format_time(started)
            ),
            Reason::ChangedOutside { on } => format!(
                "changed outside psk on {}: the sealed PSK is stale",
                on.format("%Y-%m-%d")
            ),
            Reason::NotInConfig => {
                "no longer in psk.yaml; only the state record is dropped, the tunnel is not touched"
                    .to_string()
            }
            Reason::Forced => "replacement requested with --replace".to_string(),
            Reason::Pending {
                generated,
                remote_changed,
            } => {
                let mut m = format!(
                    "pending: a PSK psk generated {} is sealed in the state but Cloudflare has not confirmed it; it will be sent again",
                    crate::state::format_time(generated)
                );
                if let Some(on) = remote_changed {
                    m.push_str(&format!(
                        " (Cloudflare's PSK changed {}, so an earlier send may have landed; sending the same key again is safe)",
                        crate::state::format_time(on)
                    ));
                }
                m
            }
            Reason::RecipientsChanged { added, removed } => {
                let mut parts = Vec::new();
                if !added.is_empty() {
                    parts.push(format!("added {}", added.join(", ")));
                }
                if !removed.is_empty() {
                    parts.push(format!("removed {}", removed.join(", ")));
                }
                format!(
                    "the recipients in psk.yaml changed: {}. `psk reseal` re-encrypts the sealed PSK to them (needs an identity, no API call)",
                    parts.join("; ")
                )
            }
        }
    }
}

/// The outcome of a `validate_only` dry run of an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "message", rename_all = "snake_case")]
pub enum DryRun {
    /// Not attempted: offline, or an action that makes no API call.
    NotRun,
    Accepted,
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub name: String,
    pub key: TunnelKey,
    pub kind: ActionKind,
    pub reasons: Vec<Reason>,
    pub policy: Option<String>,
    pub last_rotated: Option<DateTime<Utc>>,
    pub next_due: Option<DateTime<Utc>>,
    pub dry_run: DryRun,
}

/// A tunnel that needs nothing now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unchanged {
    pub name: String,
    pub key: TunnelKey,
    pub next_due: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The instant policies were evaluated at.
    pub now: DateTime<Utc>,
    /// Cloudflare was not consulted.
    pub offline: bool,
    /// Limited to some tunnels with `--target`: the plan may be incomplete.
    #[serde(default)]
    pub targeted: bool,
    pub actions: Vec<Action>,
    pub unchanged: Vec<Unchanged>,
}

impl Plan {
    pub fn count(&self, kind: ActionKind) -> usize {
        self.actions.iter().filter(|a| a.kind == kind).count()
    }

    pub fn has_changes(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Whether any dry run was refused: such a plan must not be applied.
    pub fn has_refusals(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a.dry_run, DryRun::Refused(_)))
    }
}

/// What the operator asked of this plan beyond psk.yaml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Tunnel names to rotate now whatever their policy says (`--replace`).
    pub replace: BTreeSet<String>,
    /// When set, only these tunnel names are planned (`--target`).
    pub target: Option<BTreeSet<String>>,
}

impl PlanOptions {
    fn includes(&self, name: &str) -> bool {
        self.target.as_ref().is_none_or(|t| t.contains(name))
    }
}

/// Decides what to do for every tunnel in `desired` and in `state`.
///
/// `remote` holds what Cloudflare reported (absent when offline). Actions
/// come in psk.yaml order, then reseals (psk.yaml order), then forgets in
/// state order.
pub fn reconcile(
    desired: &Config,
    state: Option<&State>,
    remote: Option<&Remote>,
    now: DateTime<Utc>,
) -> Plan {
    reconcile_with(desired, state, remote, now, &PlanOptions::default())
}

/// [`reconcile`] with `--replace` and `--target`.
pub fn reconcile_with(
    desired: &Config,
    state: Option<&State>,
    remote: Option<&Remote>,
    now: DateTime<Utc>,
    options: &PlanOptions,
) -> Plan {
    let mut actions = Vec::new();
    let mut unchanged = Vec::new();
    let mut wanted = HashSet::new();

    for tunnel in &desired.tunnels {
        let key = tunnel.key();
        wanted.insert(key.to_string());
        if !options.includes(&tunnel.name) {
            continue;
        }
        let policy = desired.policy_of(tunnel);
        let record = state.and_then(|s| s.get(&key));
        let sealed = record.filter(|r| r.psk.is_some());
        let last_rotated = sealed.and_then(|r| r.last_rotated);
        let next_due = last_rotated.map(|t| policy.next_due(t));

        let mut reasons = Vec::new();
        if let Some(intent) = record.and_then(|r| r.intent.as_ref()) {
            reasons.push(Reason::Interrupted {
                started: intent.started,
            });
        }
        let remote_on = remote
            .and_then(|r| r.tunnels.get(&key))
            .and_then(|t| t.last_generated_on);
        if let Some(p) = record.and_then(|r| r.pending.as_ref()) {
            // Sending the pending key settles the tunnel, whatever else is due.
            reasons.push(Reason::Pending {
                generated: p.generated,
                remote_changed: remote_on.filter(|on| *on >= p.generated),
            });
        }
        match (sealed, last_rotated) {
            _ if record.is_some_and(|r| r.pending.is_some()) => {}
            (Some(_), Some(last)) => {
                let remote_change = remote
                    .and_then(|r| r.tunnels.get(&key))
                    .and_then(|t| t.last_generated_on)
                    .filter(|on| *on > last);
                if let Some(on) = remote_change {
                    if reasons.is_empty() {
                        reasons.push(Reason::ChangedOutside { on });
                    }
                }
                if policy.is_due(last, now) {
                    reasons.push(Reason::Due {
                        last_rotated: last,
                        days_ago: crate::policy::days_between(last, now),
                        policy: policy.name.clone(),
                        every: policy.rotate_every,
                    });
                }
            }
            _ => reasons.push(Reason::NeverRotated),
        }
        if options.replace.contains(&tunnel.name) {
            reasons.push(Reason::Forced);
        }

        if reasons.is_empty() {
            unchanged.push(Unchanged {
                name: tunnel.name.clone(),
                key,
                next_due: next_due.expect("a sealed, dated PSK has a due date"),
            });
            continue;
        }
        let kind = if sealed.is_some() {
            ActionKind::Rotate
        } else {
            ActionKind::Generate
        };
        actions.push(Action {
            name: tunnel.name.clone(),
            key,
            kind,
            reasons,
            policy: Some(policy.name.clone()),
            last_rotated,
            next_due,
            dry_run: DryRun::NotRun,
        });
    }

    if let Some(state) = state {
        let desired_fps = desired.recipient_fingerprints();
        let mut sealed_to = state.recipients.clone();
        sealed_to.sort();
        sealed_to.dedup();
        if sealed_to != desired_fps {
            let added: Vec<String> = desired_fps
                .iter()
                .filter(|f| !sealed_to.contains(f))
                .cloned()
                .collect();
            let removed: Vec<String> = sealed_to
                .iter()
                .filter(|f| !desired_fps.contains(f))
                .cloned()
                .collect();
            for tunnel in &desired.tunnels {
                let key = tunnel.key();
                let Some(rec) = state
                    .get(&key)
                    .filter(|r| r.psk.is_some() || r.pending.is_some())
                else {
                    continue;
                };
                actions.push(Action {
                    name: tunnel.name.clone(),
                    key,
                    kind: ActionKind::Reseal,
                    reasons: vec![Reason::RecipientsChanged {
                        added: added.clone(),
                        removed: removed.clone(),
                    }],
                    policy: Some(desired.policy_of(tunnel).name.clone()),
                    last_rotated: rec.last_rotated,
                    next_due: None,
                    dry_run: DryRun::NotRun,
                });
            }
        }
        for (k, rec) in &state.tunnels {
            if wanted.contains(k) || !options.includes(&rec.name) {
                continue;
            }
            actions.push(Action {
                name: rec.name.clone(),
                key: rec.key(),
                kind: ActionKind::Forget,
                reasons: vec![Reason::NotInConfig],
                policy: None,
                last_rotated: rec.last_rotated,
                next_due: None,
                dry_run: DryRun::NotRun,
            });
        }
    }

    Plan {
        now,
        offline: remote.is_none(),
        targeted: options.target.is_some(),
        actions,
        unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Intent;
    use std::path::Path;

    const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    fn config() -> Config {
        let text = format!(
            "version: 1
account_id: {ACCOUNT}
recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
policies:
  default: {{rotate_every: 30d}}
tunnels:
  - {{name: a, id: {A}}}
  - {{name: b, id: {B}}}
"
        );
        Config::parse(Path::new("psk.yaml"), &text).unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn state_with(name: &str, id: &str, last: &str) -> State {
        let mut s = State::new(vec![]);
        let r = s.entry(&TunnelKey::new(ACCOUNT, id), name);
        r.psk = Some("sealed".into());
        r.last_rotated = Some(t(last));
        s
    }

    #[test]
    fn empty_state_generates_everything() {
        let plan = reconcile(&config(), None, None, t("2026-11-26T00:00:00Z"));
        assert_eq!(plan.count(ActionKind::Generate), 2);
        assert!(plan.offline);
        assert_eq!(plan.actions[0].name, "a");
        assert_eq!(plan.actions[0].reasons, vec![Reason::NeverRotated]);
    }

    #[test]
    fn due_exactly_at_the_period() {
        let s = state_with("a", A, "2026-11-01T00:00:00Z");
        let before = reconcile(&config(), Some(&s), None, t("2026-11-30T23:59:59Z"));
        assert_eq!(before.count(ActionKind::Rotate), 0);
        assert_eq!(before.unchanged[0].next_due, t("2026-12-01T00:00:00Z"));
        let at = reconcile(&config(), Some(&s), None, t("2026-12-01T00:00:00Z"));
        assert_eq!(at.count(ActionKind::Rotate), 1);
        assert_eq!(at.actions[0].reasons[0].code(), "due");
        assert!(at.actions[0].reasons[0]
            .describe()
            .contains("30 days ago; policy \"default\" rotates every 30d"));
    }

    #[test]
    fn drift_and_interruption() {
        let mut s = state_with("a", A, "2026-11-01T00:00:00Z");
        let mut remote = Remote::default();
        remote.tunnels.insert(
            TunnelKey::new(ACCOUNT, A),
            RemoteTunnel {
                id: A.into(),
                name: "a".into(),
                last_generated_on: Some(t("2026-11-10T00:00:00Z")),
            },
        );
        let now = t("2026-11-20T00:00:00Z");
        let plan = reconcile(&config(), Some(&s), Some(&remote), now);
        let a = &plan.actions[0];
        assert_eq!(a.kind, ActionKind::Rotate);
        assert_eq!(
            a.reasons,
            vec![Reason::ChangedOutside {
                on: t("2026-11-10T00:00:00Z")
            }]
        );

        s.entry(&TunnelKey::new(ACCOUNT, A), "a").intent = Some(Intent {
            operation: "psk_generate".into(),
            started: t("2026-11-09T00:00:00Z"),
        });
        let plan = reconcile(&config(), Some(&s), Some(&remote), now);
        assert_eq!(plan.actions[0].reasons[0].code(), "interrupted");
        assert_eq!(plan.actions[0].reasons.len(), 1);
    }

    #[test]
    fn removed_tunnels_are_forgotten_not_touched() {
        let s = state_with(
            "gone",
            "99999999999999999999999999999999",
            "2026-11-01T00:00:00Z",
        );
        let plan = reconcile(&config(), Some(&s), None, t("2026-11-02T00:00:00Z"));
        let forget: Vec<_> = plan
            .actions
            .iter()
            .filter(|a| a.kind == ActionKind::Forget)
            .collect();
        assert_eq!(forget.len(), 1);
        assert_eq!(forget[0].name, "gone");
        assert!(!forget[0].kind.changes_psk());
    }

    #[test]
    fn a_pending_key_is_sent_again_whatever_else_is_due() {
        let mut s = state_with("a", A, "2026-01-01T00:00:00Z");
        let generated = t("2026-11-10T00:00:00Z");
        s.entry(&TunnelKey::new(ACCOUNT, A), "a")
            .stage_pending("sealed-new".into(), generated);
        let mut remote = Remote::default();
        remote.tunnels.insert(
            TunnelKey::new(ACCOUNT, A),
            RemoteTunnel {
                id: A.into(),
                name: "a".into(),
                last_generated_on: Some(t("2026-11-10T00:00:01Z")),
            },
        );
        let plan = reconcile(
            &config(),
            Some(&s),
            Some(&remote),
            t("2026-11-20T00:00:00Z"),
        );
        let a = &plan.actions[0];
        assert_eq!(a.kind, ActionKind::Rotate);
        assert_eq!(a.reasons.len(), 1, "{:?}", a.reasons);
        assert_eq!(a.reasons[0].code(), "pending");
        let text = a.reasons[0].describe();
        assert!(text.contains("will be sent again"), "{text}");
        assert!(text.contains("an earlier send may have landed"), "{text}");

        // A first key that is still pending.
        let mut s = State::new(vec![]);
        s.entry(&TunnelKey::new(ACCOUNT, B), "b")
            .stage_pending("sealed".into(), generated);
        let plan = reconcile(&config(), Some(&s), None, t("2026-11-20T00:00:00Z"));
        let b = plan.actions.iter().find(|x| x.name == "b").unwrap();
        assert_eq!(b.kind, ActionKind::Generate);
        assert_eq!(b.reasons[0].code(), "pending");
        assert!(!b.reasons[0].describe().contains("earlier send"));
    }

    #[test]
    fn changed_recipients_plan_reseals_of_every_sealed_psk() {
        let mut s = state_with("a", A, "2026-11-01T00:00:00Z");
        let now = t("2026-11-02T00:00:00Z");
        s.recipients = config().recipient_fingerprints();
        let plan = reconcile(&config(), Some(&s), None, now);
        assert_eq!(plan.count(ActionKind::Reseal), 0);

        s.recipients = vec!["sha256:0000000000000000".into()];
        let plan = reconcile(&config(), Some(&s), None, now);
        let reseal: Vec<_> = plan
            .actions
            .iter()
            .filter(|a| a.kind == ActionKind::Reseal)
            .collect();
        assert_eq!(reseal.len(), 1, "only tunnels with a sealed PSK");
        assert_eq!(reseal[0].name, "a");
        assert!(!reseal[0].kind.changes_psk());
        let r = &reseal[0].reasons[0];
        assert_eq!(r.code(), "recipients_changed");
        let text = r.describe();
        assert!(text.contains("removed sha256:0000000000000000"), "{text}");
        assert!(
            text.contains(&format!("added {}", config().recipient_fingerprints()[0])),
            "{text}"
        );
    }

    #[test]
    fn deterministic() {
        let s = state_with("a", A, "2026-01-01T00:00:00Z");
        let now = t("2026-11-02T00:00:00Z");
        assert_eq!(
            reconcile(&config(), Some(&s), None, now),
            reconcile(&config(), Some(&s), None, now)
        );
    }
}
