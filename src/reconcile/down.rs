//! "This path may be down": one notion, computed here and nowhere else.
//!
//! A new PSK drops its tunnel until the far end holds it too, so psk's
//! promise that a site's paths are never down together rests on knowing
//! which paths may be down now. The state says so in four ways, whatever
//! command or crash left them: a delivery that failed, a verification that
//! failed or never finished, a rotation whose answer was never recorded,
//! and a key psk made that Cloudflare never confirmed. Each holds every
//! other path of its site (the gate in [`super::gate`]), in plan and apply,
//! with or without `verify`, until what lifts it happens; status and the
//! plan's review show the same verdict, so none of them can disagree.

use chrono::{DateTime, Utc};

use super::plan::{Deferral, Remote};
use crate::config::{Config, Tunnel};
use crate::health::PathHealth;
use crate::state::{State, TunnelState};

/// Why a path may be down, as its state record shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MayBeDown {
    /// A rotation was started and its answer never recorded (`pending`:
    /// a key psk made was sent, or about to be, and Cloudflare never
    /// confirmed it): the key on the edge is unknown, so no router may
    /// hold it.
    Uncertain { since: DateTime<Utc>, pending: bool },
    /// The path got a new PSK and was not shown back up (`verify`): down
    /// since `since`; `failed` is when psk gave up (`None`: it was stopped
    /// while waiting). `health` is its health now, when it was read.
    Unverified {
        since: DateTime<Utc>,
        failed: Option<DateTime<Utc>>,
        health: Option<String>,
    },
    /// The policy's `deliver` command failed for the sealed PSK: the
    /// router may still hold the old key.
    Undelivered {
        at: DateTime<Utc>,
        error: Option<String>,
    },
}

/// Whether `tunnel` may be down, from its state record and, when read, its
/// health now. The most serious cause wins: an unknown key on the edge,
/// then a path not shown back up, then a failed delivery.
///
/// A path not shown back up counts as up again once Cloudflare's health
/// checks show it healthy now, when they are all its policy's `verify`
/// asks; a probe of the user's is run only by `psk verify`.
pub fn may_be_down(
    desired: &Config,
    tunnel: &Tunnel,
    state: Option<&State>,
    remote: Option<&Remote>,
) -> Option<MayBeDown> {
    let rec = state?.get(&tunnel.key())?;
    let health = remote.and_then(|r| r.health.get(&tunnel.key()));
    of_record(desired, tunnel, rec, health)
}

fn of_record(
    desired: &Config,
    tunnel: &Tunnel,
    rec: &TunnelState,
    health: Option<&PathHealth>,
) -> Option<MayBeDown> {
    if let Some(intent) = &rec.intent {
        return Some(MayBeDown::Uncertain {
            since: intent.started,
            pending: false,
        });
    }
    if let Some(p) = &rec.pending {
        return Some(MayBeDown::Uncertain {
            since: p.generated,
            pending: true,
        });
    }
    if let Some(v) = &rec.verification {
        let checks_only = (desired.policy_of(tunnel).verify.as_ref())
            .is_some_and(|v| v.health_checks && v.command.is_none());
        if !(checks_only && health.is_some_and(PathHealth::is_healthy)) {
            return Some(MayBeDown::Unverified {
                since: v.since,
                failed: v.failed,
                health: health.map(PathHealth::describe),
            });
        }
    }
    let failed = rec.delivery.as_ref().filter(|d| !d.ok);
    match failed {
        Some(d) if rec.psk.is_some() => Some(MayBeDown::Undelivered {
            at: d.at,
            error: d.error.clone(),
        }),
        _ => None,
    }
}

impl MayBeDown {
    /// The hold it puts on another path of `site`: `sibling` is the path
    /// that may be down.
    pub fn hold(&self, site: &str, sibling: &str) -> Deferral {
        let (site, sibling) = (site.to_string(), sibling.to_string());
        match self.clone() {
            MayBeDown::Uncertain { since, pending } => Deferral::Uncertain {
                site,
                sibling,
                since,
                pending,
            },
            MayBeDown::Unverified {
                since,
                failed,
                health,
            } => Deferral::Unhealthy {
                site,
                sibling,
                since,
                failed,
                health,
            },
            MayBeDown::Undelivered { at, error } => Deferral::Undelivered {
                site,
                sibling,
                at,
                error,
            },
        }
    }

    /// A short machine name, the code of the hold it puts on its siblings.
    pub fn code(&self) -> &'static str {
        match self {
            MayBeDown::Uncertain { .. } => "uncertain",
            MayBeDown::Unverified { .. } => "unhealthy",
            MayBeDown::Undelivered { .. } => "undelivered",
        }
    }
}
