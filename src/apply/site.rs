//! The per-site rule both paths follow, written once: a site's redundant
//! tunnels never change their PSK at the same time, and once a path of a
//! site may be down (its new key failed to reach its router, its tunnel did
//! not come back under `verify`, or its rotation's outcome is unknown),
//! none of the site's other tunnels starts (both paths could be down at
//! once). The same causes, read back from the state, hold the site in the
//! next plans (`reconcile::down`).

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
    /// Blocked sites, each with the tunnel that may be down and why.
    blocked: HashMap<String, (String, Down)>,
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
        if let Some((failed, why)) = self.blocked.get(site) {
            return Gate::Blocked(site_blocked(failed, *why));
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

    /// An action whose path may be down after `outcome` blocks its site
    /// for the rest of the apply: a new key that did not reach its router,
    /// a tunnel that did not come back, a rotation whose outcome is
    /// unknown. Called as soon as the outcome is known, before anything
    /// else may start.
    pub(super) fn settled(&mut self, action: &Action, outcome: &Outcome) {
        let why = match outcome {
            Outcome::Undelivered { .. } => Down::Undelivered,
            Outcome::Unverified { .. } => Down::Unverified,
            Outcome::Failed {
                interrupted: true, ..
            } => Down::Uncertain,
            _ => return,
        };
        if let (true, Some(s)) = (action.kind.changes_psk(), self.site_of.get(&action.key)) {
            (self.blocked)
                .entry(s.clone())
                .or_insert_with(|| (action.name.clone(), why));
        }
    }
}

/// Why a path blocks its site.
#[derive(Debug, Clone, Copy)]
enum Down {
    Undelivered,
    Unverified,
    Uncertain,
}

/// Why a tunnel was not started: `failed`, of the same site, may be down.
fn site_blocked(failed: &str, why: Down) -> Outcome {
    let message = match why {
        Down::Unverified => format!(
            "not started: {failed}, on the same site, did not come back after its new PSK; rotating this path too could cut the site off. Bring {failed} back up, then apply again"
        ),
        Down::Undelivered => format!(
            "not started: the new PSK of {failed}, on the same site, was not delivered; fix that and run `psk deliver {failed}`, then apply again"
        ),
        Down::Uncertain => format!(
            "not started: the rotation of {failed}, on the same site, ended with its outcome unknown, so its key on the edge may be one no router holds; the next apply rotates {failed} again first"
        ),
    };
    Outcome::Held { message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{ActionKind, Reason};

    fn config() -> Config {
        let text = "version: 1
account_id: 023e105f4ecef8ad9ca31a8372d0c353
recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
policies:
  default: {rotate_every: 30d, site_parallel: true}
tunnels:
  - {name: a, id: 0123456789abcdef0123456789abcdef, site: fra}
  - {name: b, id: fedcba9876543210fedcba9876543210, site: fra}
";
        Config::parse(std::path::Path::new("psk.yaml"), text).unwrap()
    }

    fn action(c: &Config, name: &str) -> Action {
        let t = c.tunnel_by_name(name).unwrap();
        Action::new(name, t.key(), ActionKind::Rotate, vec![Reason::Forced])
    }

    /// A rotation that ends with its outcome unknown blocks its site at
    /// once, like a failed delivery; a definite failure does not (the edge
    /// still holds the recorded key).
    #[test]
    fn an_unknown_outcome_blocks_the_site() {
        let c = config();
        let (a, b) = (action(&c, "a"), action(&c, "b"));
        let mut gate = SiteGate::new(&c);
        let surely_not = Outcome::Failed {
            message: "refused".into(),
            interrupted: false,
        };
        gate.settled(&a, &surely_not);
        assert!(matches!(gate.check(&b), Gate::Open));
        let unknown = Outcome::Failed {
            message: "no answer".into(),
            interrupted: true,
        };
        gate.settled(&a, &unknown);
        match gate.check(&b) {
            Gate::Blocked(Outcome::Held { message }) => {
                assert!(message.contains("the rotation of a"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
