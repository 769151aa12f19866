//! The gates between "this PSK must change" and "this apply changes it":
//! the policy's change window, a path of the site that may be down,
//! `verify`'s preflight (every other path of the site healthy now), and
//! one change per site.
//!
//! A gate never drops a change: what it holds back is listed in the plan as
//! [`Deferred`], with the reason it waits, so nothing waits silently. The
//! window gate looks at one tunnel; the site gate at every change of the
//! plan at once, which is why it runs after every tunnel is assessed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::assess::{Change, Urgency};
use super::down::may_be_down;
use super::plan::{Action, Deferral, Deferred, Remote};
use crate::config::Config;
use crate::health::PathHealth;
use crate::policy::Policy;
use crate::state::State;

/// Why `change` must wait for its policy's window, or `None` when it may
/// go now: the window is open, there is none, or the change cannot wait.
pub fn window(policy: &Policy, change: &Change, now: DateTime<Utc>) -> Option<Deferral> {
    if !change.urgency().may_wait() {
        return None;
    }
    let window = policy.window.as_ref().filter(|w| !w.contains(now))?;
    let opens = window.next_open(now).unwrap_or(DateTime::<Utc>::MAX_UTC);
    Some(Deferral::Window {
        opens,
        opens_local: window.local(opens),
        window: window.to_string(),
    })
}

/// Keeps one PSK change per site (more where every policy involved sets
/// `site_parallel`, or `deliver`) and returns the rest as deferred. The
/// most urgent change of a site goes first (see [`Urgency`]), then file
/// order.
pub fn hold_back_sites(desired: &Config, actions: &mut Vec<Action>) -> Vec<Deferred> {
    let site_of = sites(desired);
    let mut candidates: Vec<usize> = (0..actions.len())
        .filter(|i| {
            actions[*i].kind.changes_psk() && site_of.contains_key(actions[*i].name.as_str())
        })
        .collect();
    candidates.sort_by_key(|i| (Urgency::of(&actions[*i].reasons), *i));

    // Per site: the names chosen so far and whether all of them allow company.
    let mut chosen: HashMap<&str, (Vec<&str>, bool)> = HashMap::new();
    let mut held: HashMap<usize, Deferral> = HashMap::new();
    for i in candidates {
        let name = actions[i].name.as_str();
        let (site, parallel) = site_of[name];
        match chosen.get_mut(site) {
            None => {
                chosen.insert(site, (vec![name], parallel));
            }
            Some((names, all_parallel)) if *all_parallel && parallel => names.push(name),
            Some((names, _)) => {
                let why = Deferral::Site {
                    site: site.to_string(),
                    rotating: names[0].to_string(),
                };
                held.insert(i, why);
            }
        }
    }

    take_held(actions, held)
}

/// `verify`'s preflight: a PSK change of a path whose policy verifies with
/// Cloudflare's health checks waits while any other path of its site is
/// not healthy now (down, degraded, unreported, or of unknown health),
/// since the new key drops this path until its far end holds it. Returns
/// the held changes as deferred. Without health (offline) nothing is held:
/// apply always plans online.
pub fn hold_unhealthy_sites(
    desired: &Config,
    remote: Option<&Remote>,
    actions: &mut Vec<Action>,
) -> Vec<Deferred> {
    let Some(remote) = remote else {
        return Vec::new();
    };
    let mut held: HashMap<usize, Deferral> = HashMap::new();
    for (i, a) in actions.iter().enumerate() {
        let Some(tunnel) = desired.tunnels.iter().find(|t| t.key() == a.key) else {
            continue;
        };
        let verifies = desired
            .policy_of(tunnel)
            .verify
            .as_ref()
            .is_some_and(|v| v.health_checks);
        let Some(site) = tunnel
            .site
            .as_deref()
            .filter(|_| verifies && a.kind.changes_psk())
        else {
            continue;
        };
        let unhealthy = desired
            .tunnels
            .iter()
            .filter(|t| t.site.as_deref() == Some(site) && t.key() != a.key)
            .find_map(|t| {
                let health = remote
                    .health
                    .get(&t.key())
                    .cloned()
                    .unwrap_or_else(|| PathHealth::Unknown("its health was not read".into()));
                (!health.is_healthy()).then(|| (t.name.clone(), health))
            });
        if let Some((sibling, health)) = unhealthy {
            let why = Deferral::SiblingDown {
                site: site.to_string(),
                sibling,
                health: health.describe(),
            };
            held.insert(i, why);
        }
    }
    take_held(actions, held)
}

/// A path that may be down ([`may_be_down`]: a failed delivery, a
/// verification that failed or never finished, a rotation whose outcome is
/// unknown) holds every PSK change of the other paths of its site, whatever
/// their policy, with or without `verify`: the site may hang on them alone.
/// It holds even when the path itself changes again in this plan: that
/// change is what settles it, and the site's others wait for a later apply,
/// when the state shows it settled. Runs before the preflight, whose words
/// it would otherwise take.
pub fn hold_sites_with_a_path_down(
    desired: &Config,
    state: Option<&State>,
    remote: Option<&Remote>,
    actions: &mut Vec<Action>,
) -> Vec<Deferred> {
    if state.is_none() {
        return Vec::new();
    }
    let mut held: HashMap<usize, Deferral> = HashMap::new();
    for (i, a) in actions.iter().enumerate() {
        let Some(site) = (desired.tunnels.iter())
            .find(|t| t.key() == a.key)
            .and_then(|t| t.site.as_deref())
            .filter(|_| a.kind.changes_psk())
        else {
            continue;
        };
        let down = (desired.tunnels.iter())
            .filter(|t| t.site.as_deref() == Some(site) && t.key() != a.key)
            .find_map(|t| may_be_down(desired, t, state, remote).map(|d| d.hold(site, &t.name)));
        if let Some(why) = down {
            held.insert(i, why);
        }
    }
    take_held(actions, held)
}

/// Moves the actions at the keys of `held` out of `actions`, as deferred
/// for the reason held with each.
fn take_held(actions: &mut Vec<Action>, mut held: HashMap<usize, Deferral>) -> Vec<Deferred> {
    let mut deferred = Vec::new();
    let mut kept = Vec::new();
    for (i, a) in std::mem::take(actions).into_iter().enumerate() {
        match held.remove(&i) {
            Some(why) => deferred.push(Deferred {
                name: a.name,
                key: a.key,
                kind: a.kind,
                reasons: a.reasons,
                policy: a.policy.unwrap_or_default(),
                why,
            }),
            None => kept.push(a),
        }
    }
    *actions = kept;
    deferred
}

/// Each tunnel with a site, by name: its site, and whether its policy lets
/// it change beside others of the site. With a delivery command, apply
/// rotates a site's tunnels one after another, each only once the previous
/// one is delivered, so they may share an apply.
fn sites(desired: &Config) -> HashMap<&str, (&str, bool)> {
    desired
        .tunnels
        .iter()
        .filter_map(|t| {
            let site = t.site.as_deref()?;
            let p = desired.policy_of(t);
            // With `verify`, apply waits for each path to come back before
            // the next (the bulk path too, round by round).
            Some((
                t.name.as_str(),
                (
                    site,
                    p.site_parallel || p.deliver.is_some() || p.verify.is_some(),
                ),
            ))
        })
        .collect()
}
