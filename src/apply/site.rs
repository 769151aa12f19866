//! The per-site rule both paths follow, written once: a site's redundant
//! tunnels never change their PSK at the same time, and once a new key of a
//! site failed to reach its router, or its tunnel did not come back
//! (`verify`), none of the site's other tunnels starts (both paths could
//! be down at once).

use std::collections::{HashMap, HashSet};

use super::Outcome;
use crate::config::Config;
use crate::reconcile::Action;
use crate::tunnel::TunnelKey;

/// May an action start now?
#[derive(Debug)]
pub(super) enum Gate {
    Open,
    /// Another tunnel of its site is changing; try again later.
    Busy,
    /// Its site is blocked: this is the action's outcome, unstarted.
    Blocked(Outcome),
}

/// Which sites are changing a key now, and which are blocked.
#[derive(Debug, Default)]
pub(super) struct SiteGate {
    site_of: HashMap<TunnelKey, String>,
    busy: HashSet<String>,
    /// Blocked sites, each with the tunnel whose delivery failed, or
    /// (`true`) that did not come back.
    blocked: HashMap<String, (String, bool)>,
}

impl SiteGate {
    pub(super) fn new(config: &Config) -> Self {
        SiteGate {
            site_of: config
                .tunnels
                .iter()
                .filter_map(|t| t.site.clone().map(|s| (t.key(), s)))
                .collect(),
            ..SiteGate::default()
        }
    }

    /// Only actions that change a PSK are gated; a tunnel with no site is
    /// never busy or blocked.
    pub(super) fn check(&self, action: &Action) -> Gate {
        let site = match self.site_of.get(&action.key) {
            Some(s) if action.kind.changes_psk() => s,
            _ => return Gate::Open,
        };
        if let Some((failed, unverified)) = self.blocked.get(site) {
            return Gate::Blocked(site_blocked(failed, *unverified));
        }
        if self.busy.contains(site) {
            return Gate::Busy;
        }
        Gate::Open
    }

    /// The site of `key` is changing a key until [`SiteGate::release`]
    /// (its router included, when the policy delivers).
    pub(super) fn occupy(&mut self, key: &TunnelKey) {
        if let Some(s) = self.site_of.get(key) {
            self.busy.insert(s.clone());
        }
    }

    pub(super) fn release(&mut self, key: &TunnelKey) {
        if let Some(s) = self.site_of.get(key) {
            self.busy.remove(s);
        }
    }

    /// A new key that did not reach its router blocks its site for the
    /// rest of the apply.
    pub(super) fn delivered(&mut self, action: &Action, outcome: &Outcome) {
        let stops = matches!(
            outcome,
            Outcome::Undelivered { .. } | Outcome::Unverified { .. }
        );
        if let (true, Some(s)) = (stops, self.site_of.get(&action.key)) {
            self.blocked.insert(
                s.clone(),
                (
                    action.name.clone(),
                    matches!(outcome, Outcome::Unverified { .. }),
                ),
            );
        }
    }
}

/// Why a tunnel was not started: `failed`, of the same site, has a new PSK
/// its router may not have.
fn site_blocked(failed: &str, unverified: bool) -> Outcome {
    let message = if unverified {
        format!(
            "not started: {failed}, on the same site, did not come back after its new PSK; rotating this path too could cut the site off. Bring {failed} back up, then apply again"
        )
    } else {
        format!(
            "not started: the new PSK of {failed}, on the same site, was not delivered; fix that and run `psk deliver {failed}`, then apply again"
        )
    };
    Outcome::Deferred { message }
}
