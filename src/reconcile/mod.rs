//! The planner: `reconcile(desired, state, remote, now) -> Plan`.
//!
//! A pure function, no I/O and no clock, so every rule is tested
//! exhaustively with fixed instants. It runs in four steps, each in its own
//! module so it can be read (and changed) alone:
//!
//! 1. [`assess`](mod@assess): each tunnel of psk.yaml, judged alone:
//!    unchanged until a date, or a change with its reasons.
//! 2. [`gate`]: a change waits for its policy's window; a site with a path
//!    that may be down ([`down`]) changes nothing else; then one change per
//!    site, the most urgent first. What waits is listed as deferred.
//! 3. [`follow_ups`]: reseals, redeliveries and forgets, which leave the
//!    PSK on Cloudflare's edge alone.
//! 4. [`reconcile_with`] puts them together in a [`Plan`] (its types are
//!    in [`plan`]), with the tunnels psk.yaml leaves out ([`unmanaged`]).
//!
//! Tunnels psk.yaml names only by name get their ids before this, once,
//! from [`resolve_names`]: the planner takes the config as it is and plans
//! the tunnels whose id is known.

pub mod assess;
pub mod down;
pub mod follow_ups;
pub mod gate;
pub mod health;
pub mod names;
pub mod plan;
#[cfg(test)]
mod tests;
pub mod unmanaged;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::config::{Config, Tunnel};
use crate::policy::Policy;
use crate::state::State;
use crate::tunnel::TunnelKey;
use assess::{assess, Assessment};
pub use down::{may_be_down, MayBeDown};
pub use names::{resolve_names, NameError};
pub use plan::{
    Action, ActionKind, Deferral, Deferred, DryRun, PathStatus, Plan, PlanOptions, Reason, Remote,
    Unchanged, Upcoming, DEFAULT_HORIZON_DAYS,
};

/// Decides what to do for every tunnel in `desired` and in `state`.
///
/// `remote` holds what Cloudflare reported (absent when offline). Actions
/// come in psk.yaml order, then reseals and redeliveries (psk.yaml order),
/// then forgets in state order.
pub fn reconcile(
    desired: &Config,
    state: Option<&State>,
    remote: Option<&Remote>,
    now: DateTime<Utc>,
) -> Plan {
    reconcile_with(desired, state, remote, now, &PlanOptions::default())
}

/// [`reconcile`] with `--replace`, `--target` and `--forecast`.
pub fn reconcile_with(
    desired: &Config,
    state: Option<&State>,
    remote: Option<&Remote>,
    now: DateTime<Utc>,
    options: &PlanOptions,
) -> Plan {
    let mut plan = Plan::empty(now, remote.is_none(), options);
    for tunnel in desired.tunnels.iter().filter(|t| options.includes(&t.name)) {
        let policy = desired.policy_of(tunnel);
        let key = tunnel.key();
        let record = state.and_then(|s| s.get(&key));
        let reported = remote.and_then(|r| r.tunnels.get(&key));
        match assess(tunnel, policy, record, reported, now, options) {
            Assessment::Unchanged { next_due } => unchanged(&mut plan, tunnel, policy, next_due),
            Assessment::Change(change) => match gate::window(policy, &change, now) {
                Some(why) => plan
                    .deferred
                    .push(change.into_deferred(tunnel, policy, why)),
                None => plan.actions.push(change.into_action(tunnel, policy)),
            },
        }
    }
    let down = gate::hold_sites_with_a_path_down(desired, state, remote, &mut plan.actions);
    plan.deferred.extend(down);
    let unhealthy = gate::hold_unhealthy_sites(desired, remote, &mut plan.actions);
    plan.deferred.extend(unhealthy);
    let held = gate::hold_back_sites(desired, &mut plan.actions);
    plan.deferred.extend(held);
    let order: HashMap<&str, usize> = (desired.tunnels.iter().enumerate())
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    plan.deferred
        .sort_by_key(|d| order.get(d.name.as_str()).copied());
    plan.upcoming
        .sort_by(|a, b| a.due.cmp(&b.due).then_with(|| a.name.cmp(&b.name)));

    if let Some(state) = state {
        let changing: HashSet<TunnelKey> = (plan.actions.iter())
            .filter(|a| a.kind.changes_psk())
            .map(|a| a.key.clone())
            .collect();
        plan.actions.extend(follow_ups::reseals(desired, state));
        let redeliveries = follow_ups::redeliveries(desired, state, &changing);
        plan.actions.extend(redeliveries);
        let (forgets, kept) = follow_ups::forgets(desired, state, remote, options);
        plan.actions.extend(forgets);
        plan.deferred.extend(kept);
    }
    plan.health = health::path_statuses(desired, state, remote, &plan);
    if let Some(remote) = remote {
        let found = unmanaged::find(desired, remote);
        (plan.unmanaged, plan.ignored) = (found.tunnels, found.ignored);
    }
    plan
}

/// Lists a tunnel that needs nothing now, and in the forecast when it falls
/// due within the plan's horizon.
fn unchanged(plan: &mut Plan, tunnel: &Tunnel, policy: &Policy, next_due: DateTime<Utc>) {
    let horizon_end = plan
        .horizon
        .and_then(|h| plan.now.checked_add_signed(h.as_delta()));
    if horizon_end.is_some_and(|end| next_due <= end) {
        plan.upcoming.push(Upcoming {
            name: tunnel.name.clone(),
            key: tunnel.key(),
            policy: policy.name.clone(),
            due: next_due,
            starts: policy.may_start_at(next_due),
        });
    }
    plan.unchanged.push(Unchanged {
        name: tunnel.name.clone(),
        key: tunnel.key(),
        next_due,
    });
}
