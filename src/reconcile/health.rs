//! What a plan says about the health of the paths it touches, for
//! `verify`: a reviewer approving a rotation sees whether the other paths
//! of the site are up now, and which path was not shown back up after its
//! last new PSK. Information for people and scripts; the gates
//! ([`super::gate`]) decide.

use std::collections::BTreeSet;

use super::plan::{PathStatus, Plan, Remote};
use crate::config::{Config, Tunnel};
use crate::state::State;

/// The health of every path of each site that has a PSK change in `plan`
/// (done or held back) where some policy verifies, and of every path whose
/// record says it was not shown back up; psk.yaml order.
pub fn path_statuses(
    desired: &Config,
    state: Option<&State>,
    remote: Option<&Remote>,
    plan: &Plan,
) -> Vec<PathStatus> {
    let changing: BTreeSet<&str> = (plan.actions.iter().map(|a| (&a.name, a.kind)))
        .chain(plan.deferred.iter().map(|d| (&d.name, d.kind)))
        .filter(|(_, kind)| kind.changes_psk())
        .map(|(name, _)| name.as_str())
        .collect();
    let unverified = |t: &Tunnel| {
        state
            .and_then(|s| s.get(&t.key()))
            .and_then(|r| r.verification.clone())
    };
    let sites: BTreeSet<&str> = (desired.tunnels.iter())
        .filter(|t| {
            let verified = desired.policy_of(t).verify.is_some();
            (verified && changing.contains(t.name.as_str())) || unverified(t).is_some()
        })
        .filter_map(|t| t.site.as_deref())
        .collect();
    (desired.tunnels.iter())
        .filter_map(|t| {
            let site = t.site.as_deref().filter(|s| sites.contains(s))?;
            let (code, health) = match remote.and_then(|r| r.health.get(&t.key())) {
                Some(h) => (h.code().to_string(), h.describe()),
                None => ("not_read".to_string(), not_read(desired, remote, t)),
            };
            let v = unverified(t);
            Some(PathStatus {
                name: t.name.clone(),
                key: t.key(),
                site: site.to_string(),
                code,
                health,
                unverified_since: v.as_ref().map(|v| v.since),
                gave_up: v.and_then(|v| v.failed),
            })
        })
        .collect()
}

/// Why a path's health was not read, in words.
fn not_read(desired: &Config, remote: Option<&Remote>, t: &Tunnel) -> String {
    let checks = (desired.policy_of(t).verify.as_ref()).is_some_and(|v| v.health_checks);
    if remote.is_none() {
        "health not read (offline)".into()
    } else if checks {
        "health not read".into()
    } else {
        "health not read (no policy of its site reads Cloudflare's health checks; apply runs the probe before rotating a sibling)".into()
    }
}
