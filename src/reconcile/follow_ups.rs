//! Actions that leave the PSK on Cloudflare's edge alone: reseals,
//! redeliveries and forgets.
//!
//! They follow from the state's bookkeeping rather than from the rotation
//! rules, so each is its own function over psk.yaml and the state, planned
//! after the PSK changes (a redelivery only makes sense where no new key is
//! coming anyway).

use std::collections::HashSet;

use super::plan::{Action, ActionKind, Deferral, Deferred, PlanOptions, Reason, Remote};
use crate::config::{Config, Tunnel};
use crate::state::{canonical, State, TunnelState};
use crate::tunnel::TunnelKey;

/// A reseal for every tunnel whose sealed or pending PSK is sealed to other
/// recipients than psk.yaml's, in psk.yaml order.
pub fn reseals(desired: &Config, state: &State) -> Vec<Action> {
    let wanted = desired.recipient_fingerprints();
    // The state's own list, canonical, once: most records are sealed to it.
    let mut header: Option<Vec<String>> = None;
    let mut out = Vec::new();
    for tunnel in &desired.tunnels {
        let Some(rec) = state.get(&tunnel.key()) else {
            continue;
        };
        let Some(sealed_to) = stale_recipients(rec, &wanted, || {
            header
                .get_or_insert_with(|| canonical(&state.recipients))
                .clone()
        }) else {
            continue;
        };
        let added = missing_from(&wanted, &sealed_to);
        let removed = missing_from(&sealed_to, &wanted);
        let names = (added.iter().chain(&removed))
            .filter_map(|f| Some((f.clone(), desired.recipient_name(f)?.to_string())))
            .collect();
        let reason = Reason::RecipientsChanged {
            added,
            removed,
            names,
        };
        out.push(follow_up(desired, tunnel, rec, ActionKind::Reseal, reason));
    }
    out
}

/// A redelivery for every sealed PSK whose delivery failed, where the
/// policy still delivers and no new key is coming in this plan (`changing`:
/// the tunnels whose PSK the plan changes).
pub fn redeliveries(desired: &Config, state: &State, changing: &HashSet<TunnelKey>) -> Vec<Action> {
    let mut out = Vec::new();
    for tunnel in &desired.tunnels {
        let key = tunnel.key();
        if desired.policy_of(tunnel).deliver.is_none() || changing.contains(&key) {
            continue;
        }
        let Some(rec) = state.get(&key).filter(|r| r.psk.is_some()) else {
            continue;
        };
        if let Some(d) = rec.delivery.as_ref().filter(|d| !d.ok) {
            let reason = Reason::DeliveryFailed {
                at: d.at,
                error: d.error.clone(),
            };
            out.push(follow_up(
                desired,
                tunnel,
                rec,
                ActionKind::Redeliver,
                reason,
            ));
        }
    }
    out
}

/// A forget for every record of a tunnel psk.yaml no longer lists, in state
/// order: the state record goes, the tunnel itself is never touched. Only
/// once Cloudflare no longer lists the tunnel, though: until then its key
/// may still be live, and the record (with the only copy of that key) is
/// kept, listed as deferred with the reason.
pub fn forgets(
    desired: &Config,
    state: &State,
    remote: Option<&Remote>,
    options: &PlanOptions,
) -> (Vec<Action>, Vec<Deferred>) {
    let listed: HashSet<TunnelKey> = desired.tunnels.iter().map(Tunnel::key).collect();
    let asked: HashSet<String> = desired.accounts().into_iter().collect();
    let (mut forgets, mut kept) = (Vec::new(), Vec::new());
    let gone = (state.tunnels.values())
        .filter(|rec| options.includes(&rec.name))
        .map(|rec| (rec, rec.key()))
        .filter(|(_, key)| !listed.contains(key));
    for (rec, key) in gone {
        let why = match remote {
            Some(r) if r.tunnels.contains_key(&key) => Some(Deferral::StillListed),
            Some(r) if asked.contains(&key.account_id) || r.departed.contains(&key.account_id) => {
                None
            }
            _ => Some(Deferral::NotAsked),
        };
        match why {
            None => forgets.push(Action {
                last_rotated: rec.last_rotated,
                ..Action::new(
                    &rec.name,
                    key,
                    ActionKind::Forget,
                    vec![Reason::NotInConfig, Reason::NotListed],
                )
            }),
            Some(why) => kept.push(Deferred {
                name: rec.name.clone(),
                key,
                kind: ActionKind::Forget,
                reasons: vec![Reason::NotInConfig],
                policy: String::new(),
                why,
            }),
        }
    }
    (forgets, kept)
}

fn follow_up(
    desired: &Config,
    tunnel: &Tunnel,
    rec: &TunnelState,
    kind: ActionKind,
    reason: Reason,
) -> Action {
    Action {
        policy: Some(desired.policy_of(tunnel).name.clone()),
        last_rotated: rec.last_rotated,
        ..Action::new(&tunnel.name, tunnel.key(), kind, vec![reason])
    }
}

/// The first recipient list of the record's keys (sealed, then pending)
/// that differs from `wanted`, canonical. A key whose record names no list
/// is sealed to the state's own (`header`).
fn stale_recipients(
    rec: &TunnelState,
    wanted: &[String],
    mut header: impl FnMut() -> Vec<String>,
) -> Option<Vec<String>> {
    let psk = rec.psk.as_ref().map(|_| rec.sealed_to.as_deref());
    let pending = rec.pending.as_ref().map(|p| p.sealed_to.as_deref());
    psk.into_iter()
        .chain(pending)
        .map(|list| match list {
            Some(l) => canonical(l),
            None => header(),
        })
        .find(|list| list != wanted)
}

/// What `a` has that `b` lacks, in `a`'s order.
fn missing_from(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().filter(|f| !b.contains(f)).cloned().collect()
}
