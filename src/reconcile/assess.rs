//! One tunnel, judged alone: does its PSK need to change now, and why?
//!
//! Everything the rules in DESIGN.md ("Plan = pure function") say about a
//! single tunnel is here, as one pure function of what psk.yaml, the state
//! and Cloudflare say about it. What depends on other tunnels (one change
//! per site) or on the clock beyond "is it due" (the change window) is
//! decided afterwards, in [`super::gate`], so each rule can be read and
//! tested on its own.

use chrono::{DateTime, Utc};

use super::plan::{Action, ActionKind, Deferral, Deferred, PlanOptions, Reason};
use crate::cloudflare::RemoteTunnel;
use crate::config::Tunnel;
use crate::policy::{days_between, Policy};
use crate::state::TunnelState;

/// The verdict on one tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// Its sealed PSK is good until `next_due`.
    Unchanged { next_due: DateTime<Utc> },
    /// Its PSK must change (unless a gate holds it back).
    Change(Change),
}

/// A PSK change and everything that asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `Generate` when psk holds no sealed PSK, else `Rotate`.
    pub kind: ActionKind,
    /// Never empty.
    pub reasons: Vec<Reason>,
    pub last_rotated: Option<DateTime<Utc>>,
    pub next_due: Option<DateTime<Utc>>,
}

/// How soon a change must happen, most pressing first. The order is the
/// order in which a site's changes take their turn (see
/// [`super::gate::hold_back_sites`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    /// An interrupted rotation or a pending key: the PSK on the edge is
    /// unknown, so the path may be down already.
    Uncertain,
    /// The operator asked for it with `--replace`.
    Forced,
    /// Cloudflare's PSK changed outside psk.
    Drift,
    /// Due by policy, or never rotated by psk.
    Routine,
}

impl Urgency {
    pub fn of(reasons: &[Reason]) -> Urgency {
        let has = |f: fn(&Reason) -> bool| reasons.iter().any(f);
        if has(|r| matches!(r, Reason::Interrupted { .. } | Reason::Pending { .. })) {
            Urgency::Uncertain
        } else if has(|r| matches!(r, Reason::Forced)) {
            Urgency::Forced
        } else if has(|r| matches!(r, Reason::ChangedOutside { .. })) {
            Urgency::Drift
        } else {
            Urgency::Routine
        }
    }

    /// Whether a shut change window may hold the change back. Waiting
    /// would only prolong an outage (the key on the edge is unknown) or
    /// ignore an explicit `--replace`.
    pub fn may_wait(self) -> bool {
        self >= Urgency::Drift
    }
}

/// Judges one tunnel of psk.yaml at `now`, from its state `record` and
/// what Cloudflare reports for it (`remote`, absent offline).
pub fn assess(
    tunnel: &Tunnel,
    policy: &Policy,
    record: Option<&TunnelState>,
    remote: Option<&RemoteTunnel>,
    now: DateTime<Utc>,
    options: &PlanOptions,
) -> Assessment {
    let sealed = record.filter(|r| r.psk.is_some());
    let last_rotated = sealed.and_then(|r| r.last_rotated);
    let next_due = last_rotated.map(|t| policy.due_for(&tunnel.key(), t));
    let remote_on = remote.and_then(|t| t.last_generated_on);

    let mut reasons = Vec::new();
    if let Some(intent) = record.and_then(|r| r.intent.as_ref()) {
        reasons.push(Reason::Interrupted {
            started: intent.started,
        });
    }
    match (record.and_then(|r| r.pending.as_ref()), last_rotated) {
        // Sending the pending key settles the tunnel, whatever else is due.
        (Some(p), _) => reasons.push(Reason::Pending {
            generated: p.generated,
            remote_changed: remote_on.filter(|on| *on >= p.generated),
        }),
        (None, Some(last)) => {
            // An interruption already says the edge's key is unknown.
            if let Some(on) = remote_on.filter(|on| *on > last && reasons.is_empty()) {
                reasons.push(Reason::ChangedOutside { on });
            }
            if next_due.is_some_and(|due| due <= now) {
                reasons.push(Reason::Due {
                    last_rotated: last,
                    days_ago: days_between(last, now),
                    policy: policy.name.clone(),
                    every: policy.rotate_every,
                    spread: policy.spread,
                });
            }
        }
        // Every tunnel on Cloudflare has a PSK from its creation on, so
        // online this is a live key psk is about to replace: said aloud.
        (None, None) => reasons.push(match remote_on {
            Some(since) => Reason::UnknownLiveKey { since },
            None => Reason::NeverRotated,
        }),
    }
    if options.replace.contains(&tunnel.name) {
        reasons.push(Reason::Forced);
    }

    match (reasons.is_empty(), next_due) {
        (true, Some(next_due)) => Assessment::Unchanged { next_due },
        _ => Assessment::Change(Change {
            kind: if sealed.is_some() {
                ActionKind::Rotate
            } else {
                ActionKind::Generate
            },
            reasons,
            last_rotated,
            next_due,
        }),
    }
}

impl Change {
    pub fn urgency(&self) -> Urgency {
        Urgency::of(&self.reasons)
    }

    /// The change as an action of the plan.
    pub fn into_action(self, tunnel: &Tunnel, policy: &Policy) -> Action {
        Action {
            policy: Some(policy.name.clone()),
            last_rotated: self.last_rotated,
            next_due: self.next_due,
            ..Action::new(&tunnel.name, tunnel.key(), self.kind, self.reasons)
        }
    }

    /// The change as the plan lists it when a gate holds it back.
    pub fn into_deferred(self, tunnel: &Tunnel, policy: &Policy, why: Deferral) -> Deferred {
        Deferred {
            name: tunnel.name.clone(),
            key: tunnel.key(),
            kind: self.kind,
            reasons: self.reasons,
            policy: policy.name.clone(),
            why,
        }
    }
}
