//! `psk status`: how each tunnel's key stands, for people and for alerting.
//!
//! A plan says what psk would do now; a status says where every tunnel
//! stands: when its key was made, when it falls due, when a rotation may
//! start, and whether anything is wrong (overdue, an interrupted rotation,
//! a pending key, a failed delivery). Keys fall due with time, not with
//! edits, so this is what a cron job or node_exporter's textfile collector
//! runs between applies.
//!
//! Nothing here decides a rule of its own: each tunnel is judged by the
//! planner's [`assess`], its window by the planner's [`gate::window`], its
//! dates by the [`Policy`] methods the planner uses, and failed deliveries
//! by the planner's [`follow_ups::redeliveries`]. So `psk status` and
//! `psk plan` can never disagree about what is due. Like the planner, this
//! is a pure function of psk.yaml, the state, Cloudflare's answer (only
//! with `--refresh`) and `now`; the printers are [`human`], [`json`] and
//! [`metrics`], and [`textfile`] writes the metrics for node_exporter.
//!
//! With `--refresh`, the report also names the tunnels psk.yaml leaves
//! out ([`unmanaged`]), as the plan does.
//!
//! Health (policy `verify`) joins a tunnel's status as one more field of
//! [`TunnelStatus`] beside `delivery_failed`, with its own JSON field and
//! metric, and counts in [`TunnelStatus::needs_attention`].

pub mod human;
pub mod json;
pub mod metrics;
pub mod textfile;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::{Config, Tunnel};
use crate::policy::Policy;
use crate::reconcile::assess::{assess, Assessment};
use crate::reconcile::unmanaged::{self, Unmanaged};
use crate::reconcile::{follow_ups, gate, Deferral, PlanOptions, Reason, Remote};
use crate::state::State;
use crate::tunnel::TunnelKey;

/// Every tunnel of psk.yaml, in file order, at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The instant policies were evaluated at.
    pub now: DateTime<Utc>,
    /// Cloudflare was asked (`--refresh`): only then can a key changed
    /// outside psk show.
    pub refreshed: bool,
    /// The state's serial and lineage; `None` when there is no state yet.
    pub state: Option<(u64, String)>,
    pub tunnels: Vec<TunnelStatus>,
    /// With `--refresh`: the tunnels Cloudflare lists for psk.yaml's
    /// accounts that psk.yaml neither lists nor ignores, which psk never
    /// rotates. `None` when Cloudflare was not asked.
    pub unmanaged: Option<Unmanaged>,
}

/// Where one tunnel's key stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelStatus {
    pub name: String,
    pub key: TunnelKey,
    pub site: Option<String>,
    pub policy: String,
    /// When the sealed PSK was made (Cloudflare's date); `None` when psk
    /// holds none.
    pub last_rotated: Option<DateTime<Utc>>,
    /// When it falls due, spread included (the planner's due date).
    pub next_due: Option<DateTime<Utc>>,
    /// When the policy's period runs out (`last_rotated + rotate_every`,
    /// no spread): a key still in use after it has outlived its policy.
    pub deadline: Option<DateTime<Utc>>,
    /// The first instant a rotation may start, window included: `now`
    /// for a change that may go now, the window's opening for one that
    /// waits, and for a key not yet due the window's first opening at or
    /// after `next_due`. `None` when the window never opens.
    pub starts: Option<DateTime<Utc>>,
    /// Why its PSK must change now, as the planner says (empty: not yet).
    pub reasons: Vec<Reason>,
    /// The policy's `deliver` command failed for the sealed PSK: when,
    /// and why (never the command's output).
    pub delivery_failed: Option<(DateTime<Utc>, Option<String>)>,
    /// The tunnel got a new PSK and was not shown back up (policy
    /// `verify`): down since, and when psk gave up waiting (`None`: it was
    /// stopped while waiting). Its site's other paths are held meanwhile.
    pub unverified: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    /// Its policy has a change window: `starts` is then the window's
    /// opening, which may fall after `deadline` (the window opens too late).
    pub window: bool,
    /// The outage of the rotation that made the sealed PSK, as `verify`
    /// measured it (see `TunnelState::outage_ms`); `None` when not
    /// measured.
    pub last_outage: Option<Duration>,
}

/// The rotations' outages over the fleet: the last measured one of each
/// tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outages {
    /// How many tunnels have one.
    pub tunnels: usize,
    pub p50: Duration,
    pub p95: Duration,
    pub max: Duration,
}

impl Report {
    /// The fleet's outages, `None` when no tunnel has one measured.
    pub fn outages(&self) -> Option<Outages> {
        let mut all: Vec<Duration> = self.tunnels.iter().filter_map(|t| t.last_outage).collect();
        all.sort();
        Some(Outages {
            tunnels: all.len(),
            p50: percentile(&all, 50)?,
            p95: percentile(&all, 95)?,
            max: *all.last()?,
        })
    }
}

/// The nearest-rank percentile of sorted `values`.
pub fn percentile(sorted: &[Duration], p: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// An outage in seconds, to the millisecond (as recorded).
pub fn outage_seconds(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

/// An outage for people: `0.42 s`.
pub fn format_outage(d: Duration) -> String {
    format!("{:.2} s", outage_seconds(d))
}

/// Judges every tunnel of `desired` at `now`, from the state and (when
/// refreshed) Cloudflare's view, with the planner's own rules.
pub fn report(
    desired: &Config,
    state: Option<&State>,
    remote: Option<&Remote>,
    now: DateTime<Utc>,
) -> Report {
    let options = PlanOptions {
        horizon: None,
        ..PlanOptions::default()
    };
    let failed = failed_deliveries(desired, state);
    let tunnels = desired
        .tunnels
        .iter()
        .map(|tunnel| {
            let policy = desired.policy_of(tunnel);
            let key = tunnel.key();
            let record = state.and_then(|s| s.get(&key));
            let reported = remote.and_then(|r| r.tunnels.get(&key));
            let assessment = assess(tunnel, policy, record, reported, now, &options);
            // As `assess` reads it: the date of the sealed PSK, if any.
            let sealed_on = record
                .filter(|r| r.psk.is_some())
                .and_then(|r| r.last_rotated);
            let mut status = judge(tunnel, policy, assessment, sealed_on, now);
            status.delivery_failed = failed.get(&key).cloned();
            status.unverified =
                (record.and_then(|r| r.verification.as_ref())).map(|v| (v.since, v.failed));
            status.last_outage = record
                .filter(|r| r.psk.is_some())
                .and_then(|r| r.outage_ms)
                .map(Duration::from_millis);
            status
        })
        .collect();
    Report {
        now,
        refreshed: remote.is_some(),
        state: state.map(|s| (s.serial, s.lineage.clone())),
        tunnels,
        unmanaged: remote.map(|r| unmanaged::find(desired, r)),
    }
}

/// A tunnel's status from the planner's verdict on it. `sealed_on` is the
/// date of the sealed PSK the verdict was made from (the record's), which
/// an unchanged verdict does not repeat.
fn judge(
    tunnel: &Tunnel,
    policy: &Policy,
    assessment: Assessment,
    sealed_on: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> TunnelStatus {
    let never = DateTime::<Utc>::MAX_UTC;
    let (next_due, starts, reasons) = match assessment {
        Assessment::Unchanged { next_due } => {
            let starts = Some(policy.may_start_at(next_due)).filter(|t| *t < never);
            (Some(next_due), starts, Vec::new())
        }
        Assessment::Change(change) => {
            let starts = match gate::window(policy, &change, now) {
                Some(Deferral::Window { opens, .. }) => Some(opens).filter(|t| *t < never),
                // The window gate defers only for the window.
                Some(
                    Deferral::Site { .. }
                    | Deferral::SiblingDown { .. }
                    | Deferral::Unhealthy { .. }
                    | Deferral::Undelivered { .. }
                    | Deferral::Uncertain { .. }
                    | Deferral::StillListed
                    | Deferral::NotAsked,
                )
                | None => Some(now),
            };
            (change.next_due, starts, change.reasons)
        }
    };
    // A live key psk never rotated (`status --refresh`) runs out by its
    // policy too, from the date Cloudflare gives it.
    let live_since = reasons.iter().find_map(|r| match r {
        Reason::UnknownLiveKey { since } => Some(*since),
        _ => None,
    });
    TunnelStatus {
        name: tunnel.name.clone(),
        key: tunnel.key(),
        site: tunnel.site.clone(),
        policy: policy.name.clone(),
        last_rotated: sealed_on,
        next_due,
        deadline: sealed_on.or(live_since).map(|l| policy.next_due(l)),
        starts,
        reasons,
        delivery_failed: None,
        unverified: None,
        last_outage: None,
        window: policy.window.is_some(),
    }
}

impl TunnelStatus {
    /// How long past its due date the key is, when it is: a sealed key
    /// past its due date, or a live key psk never rotated that Cloudflare
    /// dates older than the policy allows (only with `--refresh`).
    pub fn overdue_by(&self, now: DateTime<Utc>) -> Option<TimeDelta> {
        let has = |f: fn(&Reason) -> bool| self.reasons.iter().any(f);
        let due = if has(|r| matches!(r, Reason::Due { .. })) {
            self.next_due
        } else if has(|r| matches!(r, Reason::UnknownLiveKey { .. })) {
            self.deadline.filter(|d| *d <= now)
        } else {
            None
        };
        due.map(|due| now - due)
    }

    /// psk holds no sealed PSK for it.
    pub fn never_rotated(&self) -> bool {
        // Online, a key Cloudflare holds that psk does not is its own
        // reason; psk holds no sealed PSK in either case.
        (self.reasons.iter())
            .any(|r| matches!(r, Reason::NeverRotated | Reason::UnknownLiveKey { .. }))
    }

    /// When a rotation that never recorded its answer started.
    pub fn interrupted(&self) -> Option<DateTime<Utc>> {
        self.reasons.iter().find_map(|r| match r {
            Reason::Interrupted { started } => Some(*started),
            _ => None,
        })
    }

    /// When the key psk made and Cloudflare never confirmed was made.
    pub fn pending(&self) -> Option<DateTime<Utc>> {
        self.reasons.iter().find_map(|r| match r {
            Reason::Pending { generated, .. } => Some(*generated),
            _ => None,
        })
    }

    /// When Cloudflare's key changed outside psk (only with `--refresh`).
    pub fn changed_outside(&self) -> Option<DateTime<Utc>> {
        self.reasons.iter().find_map(|r| match r {
            Reason::ChangedOutside { on } => Some(*on),
            _ => None,
        })
    }

    /// Whether someone should look: anything but "rotated, not yet due".
    /// What `--exit-code` exits 2 for.
    pub fn needs_attention(&self) -> bool {
        !self.reasons.is_empty() || self.delivery_failed.is_some() || self.unverified.is_some()
    }
}

impl Report {
    /// How many tunnels need attention.
    pub fn attention(&self) -> usize {
        self.tunnels.iter().filter(|t| t.needs_attention()).count()
    }

    /// How many tunnels Cloudflare lists that psk.yaml leaves out (0 when
    /// Cloudflare was not asked).
    pub fn unmanaged(&self) -> usize {
        self.unmanaged.as_ref().map_or(0, |u| u.tunnels.len())
    }
}

/// Every failed delivery of a sealed PSK, by tunnel, as the planner finds
/// them for redelivery (with no new key coming, so none is left out).
fn failed_deliveries(
    desired: &Config,
    state: Option<&State>,
) -> HashMap<TunnelKey, (DateTime<Utc>, Option<String>)> {
    let Some(state) = state else {
        return HashMap::new();
    };
    follow_ups::redeliveries(desired, state, &HashSet::new())
        .into_iter()
        .flat_map(|a| {
            let key = a.key;
            a.reasons.into_iter().filter_map(move |r| match r {
                Reason::DeliveryFailed { at, error } => Some((key.clone(), (at, error))),
                _ => None,
            })
        })
        .collect()
}

#[cfg(test)]
mod outage_tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        let twenty = ms(&(1..=20).map(|i| i * 100).collect::<Vec<_>>());
        assert_eq!(percentile(&twenty, 50), Some(Duration::from_millis(1000)));
        assert_eq!(percentile(&twenty, 95), Some(Duration::from_millis(1900)));
        assert_eq!(
            percentile(&ms(&[700]), 95),
            Some(Duration::from_millis(700))
        );
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(format_outage(Duration::from_millis(1234)), "1.23 s");
        assert_eq!(outage_seconds(Duration::from_millis(850)), 0.85);
    }
}
