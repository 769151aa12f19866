//! Tunnel health, as Cloudflare's health checks would see it.
//!
//! Each tunnel has a far end (the customer router) holding a key. The
//! tunnel carries traffic only while the far end's key is the edge's: a new
//! PSK on the edge drops it until the far end holds the same key. From the
//! moment the keys match, every data center reports it down, then degraded
//! (half the delay), then healthy (the whole delay; one data center may lag
//! by `slow_colo`), like Cloudflare's "3 probes to degraded, 30 to healthy".
//!
//! The far end takes a new key when a delivery hands it over (`POST
//! /sandbox/accounts/{account}/tunnels/{id}/far_end`, the PSK as the body,
//! which is what a policy's `deliver` command can call), or on its own after
//! `far_end_follows`. Faults: a far end that never takes a key
//! (`never_up`), one whose key differs from the start (`down`), GraphQL
//! errors (`graphql_error_rate`) and GraphQL's own budget.
//!
//! The history of every tunnel is kept as the instants its keys started or
//! stopped matching, so a GraphQL query over any past window is answered
//! with the average `tunnelState` over that window, as Cloudflare does.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::cloudflare::RateLimit;

/// The data centers that report every tunnel's health, in order; the last
/// one is the slow one.
pub const COLOS: [&str; 2] = ["AMS", "FRA"];

/// How the sandbox's tunnels come back after a new key, and how they fail.
#[derive(Debug, Default, Clone)]
pub struct HealthOptions {
    /// From the moment both ends hold the same key until the tunnel is
    /// healthy; degraded from half of it.
    pub delay: Duration,
    /// Extra delay of the last data center in [`COLOS`].
    pub slow_colo: Duration,
    /// The far end takes each new edge key on its own this long after it
    /// changed (as if delivered by other tooling). Without it, only a
    /// delivery to the far end brings a tunnel back.
    pub far_end_follows: Option<Duration>,
    /// Tunnel ids whose far end never takes a new key: rotated, they stay
    /// down.
    pub never_up: BTreeSet<String>,
    /// Tunnel ids whose far end holds another key from the start: down
    /// until a key is delivered.
    pub down: BTreeSet<String>,
    /// Share of GraphQL queries answered with an error in `errors[]`.
    pub graphql_error_rate: f64,
    /// GraphQL's own budget (Cloudflare: 320 queries per 5 minutes);
    /// queries past it are answered with a budget error.
    pub graphql_rate_limit: Option<RateLimit>,
}

/// The far end of one tunnel, and the history of whether it matched.
#[derive(Debug, Clone)]
pub(crate) struct FarEnd {
    /// The key the router holds. Held only by the sandbox, never printed.
    key: String,
    /// When the two ends started or stopped matching, oldest first; the
    /// first entry is the tunnel's creation.
    timeline: Vec<(DateTime<Utc>, bool)>,
    /// A key the far end takes on its own at that time.
    pending: Option<(DateTime<Utc>, String)>,
    /// Never takes a new key.
    stuck: bool,
    /// A real router (see `strongswan`): the timeline is what its edge
    /// charon was seen to hold, not a comparison of keys.
    real: bool,
    /// How many times the edge's key changed: an observation of a real far
    /// end made across a change is dropped.
    changes: u64,
}

impl FarEnd {
    /// A far end at `created`: holding the edge's key, or another one when
    /// the tunnel is down from the start.
    pub(crate) fn new(edge_psk: &str, created: DateTime<Utc>, down: bool, stuck: bool) -> FarEnd {
        let key = if down {
            format!("{edge_psk}-stale")
        } else {
            edge_psk.to_string()
        };
        FarEnd {
            timeline: vec![(created, !down)],
            key,
            pending: None,
            stuck,
            real: false,
            changes: 0,
        }
    }

    /// A far end that is a real strongSwan router, up at `created` or not.
    pub(crate) fn real(created: DateTime<Utc>, up: bool) -> FarEnd {
        FarEnd {
            timeline: vec![(created, up)],
            key: String::new(),
            pending: None,
            stuck: false,
            real: true,
            changes: 0,
        }
    }

    /// Whether this far end is a real router, which takes keys only by a
    /// delivery to it.
    pub(crate) fn is_real(&self) -> bool {
        self.real
    }

    /// The count of edge key changes so far (see [`FarEnd::observed`]).
    pub(crate) fn changes(&self) -> u64 {
        self.changes
    }

    /// A real far end was seen up (an IKE SA established on the edge) or
    /// not at `at`, by a look that started after `changes` key changes;
    /// dropped if the key changed since, as it may have seen the old SA.
    pub(crate) fn observed(&mut self, changes: u64, at: DateTime<Utc>, up: bool) {
        if self.real && changes == self.changes {
            let at = at.max(self.timeline.last().map_or(at, |(t, _)| *t));
            self.push(at, up);
        }
    }

    /// Takes a key the far end adopted on its own, if its time has come.
    pub(crate) fn catch_up(&mut self, edge_psk: &str, now: DateTime<Utc>) {
        if let Some((at, _)) = &self.pending {
            if *at <= now {
                let (at, key) = self.pending.take().expect("pending is set");
                self.take_key(key, edge_psk, at);
            }
        }
    }

    /// The edge's key changed at `at`; a following far end takes it later.
    pub(crate) fn edge_changed(
        &mut self,
        edge_psk: &str,
        at: DateTime<Utc>,
        follows: Option<Duration>,
    ) {
        self.changes += 1;
        if self.real {
            // The edge ended the SA of the old key.
            self.push(at, false);
            return;
        }
        self.catch_up(edge_psk, at);
        self.push(at, self.key == edge_psk);
        self.pending = follows.filter(|_| !self.stuck).map(|d| {
            (
                at + TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX),
                edge_psk.to_string(),
            )
        });
    }

    /// A delivery hands the far end `key` at `at`.
    pub(crate) fn delivered(&mut self, key: String, edge_psk: &str, at: DateTime<Utc>) {
        self.catch_up(edge_psk, at);
        if !self.stuck {
            self.pending = None;
            self.take_key(key, edge_psk, at);
        }
    }

    fn take_key(&mut self, key: String, edge_psk: &str, at: DateTime<Utc>) {
        self.key = key;
        self.push(at, self.key == edge_psk);
    }

    fn push(&mut self, at: DateTime<Utc>, matched: bool) {
        if self.timeline.last().map(|(_, m)| *m) != Some(matched) {
            self.timeline.push((at, matched));
        }
    }

    /// `tunnelState` at `t` for a data center that needs `delay` of
    /// matching keys to call the tunnel healthy.
    fn state_at(&self, t: DateTime<Utc>, delay: TimeDelta) -> f64 {
        let (since, matched) = self
            .timeline
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .copied()
            .unwrap_or(self.timeline[0]);
        if !matched {
            return 0.0;
        }
        let up_for = t - since;
        if up_for >= delay {
            1.0
        } else if up_for * 2 >= delay {
            0.5
        } else {
            0.0
        }
    }

    /// The average `tunnelState` over `[start, end)`, sampled evenly, or
    /// `None` when the window holds no data (empty, or before creation).
    pub(crate) fn average(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        delay: TimeDelta,
    ) -> Option<f64> {
        let start = start.max(self.timeline[0].0);
        if end <= start {
            return None;
        }
        const SAMPLES: i32 = 120;
        let step = (end - start) / SAMPLES;
        let sum: f64 = (0..SAMPLES)
            .map(|i| self.state_at(start + step * i + step / 2, delay))
            .sum();
        Some(sum / f64::from(SAMPLES))
    }
}

/// The delay of each data center in [`COLOS`].
pub(crate) fn colo_delays(o: &HealthOptions) -> [TimeDelta; 2] {
    let delay = TimeDelta::from_std(o.delay).unwrap_or(TimeDelta::MAX);
    let slow = TimeDelta::from_std(o.slow_colo).unwrap_or(TimeDelta::zero());
    [delay, delay + slow]
}

/// GraphQL's budget: queries seen in the last window.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    seen: VecDeque<tokio::time::Instant>,
}

impl Budget {
    /// Whether one more query fits `limit` now (and counts it if so).
    pub(crate) fn admit(&mut self, limit: Option<RateLimit>, now: tokio::time::Instant) -> bool {
        let Some(limit) = limit else { return true };
        while self.seen.front().is_some_and(|t| *t + limit.window <= now) {
            self.seen.pop_front();
        }
        if self.seen.len() >= limit.requests as usize {
            return false;
        }
        self.seen.push_back(now);
        true
    }
}

/// `POST /sandbox/accounts/{account_id}/tunnels/{tunnel_id}/far_end`: a
/// delivery hands the far end of a tunnel a key (the body; surrounding
/// white space is ignored). Not Cloudflare's API: the sandbox's stand-in
/// for a router, so a `deliver` command can be demonstrated end to end.
pub(crate) async fn deliver_far_end(
    axum::extract::State(s): axum::extract::State<std::sync::Arc<super::Sandbox>>,
    axum::extract::Path((account_id, tunnel_id)): axum::extract::Path<(String, String)>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let key = String::from_utf8_lossy(&body).trim().to_string();
    if key.is_empty() {
        return super::failure(StatusCode::BAD_REQUEST, 1001, "the body must be the PSK");
    }
    let tunnel = crate::tunnel::TunnelKey::new(&account_id, &tunnel_id);
    let mut edge = s.edge.lock().expect("edge lock");
    let Some(t) = edge.get_mut(&tunnel) else {
        return super::failure(StatusCode::NOT_FOUND, 1003, "IPsec tunnel not found");
    };
    if t.far.is_real() {
        return super::failure(
            StatusCode::CONFLICT,
            1002,
            "this tunnel's far end is a real strongSwan router: deliver the key to it (see examples/strongswan)",
        );
    }
    s.counters
        .far_end_deliveries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    t.far.delivered(key, &t.psk, s.now());
    super::success(serde_json::json!({"delivered": true}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_rotated_tunnel_comes_back_through_degraded_once_delivered() {
        let mut f = FarEnd::new("a", t(0), false, false);
        let delay = TimeDelta::seconds(10);
        assert_eq!(f.state_at(t(50), delay), 1.0);
        f.edge_changed("b", t(100), None);
        assert_eq!(f.state_at(t(150), delay), 0.0);
        f.delivered("b".into(), "b", t(200));
        assert_eq!(f.state_at(t(204), delay), 0.0);
        assert_eq!(f.state_at(t(206), delay), 0.5);
        assert_eq!(f.state_at(t(210), delay), 1.0);
        // Half the window down, half up.
        let avg = f.average(t(150), t(250), TimeDelta::zero()).unwrap();
        assert!((avg - 0.5).abs() < 0.02, "{avg}");
        assert_eq!(f.average(t(300), t(400), delay), Some(1.0));
        assert_eq!(f.average(t(400), t(400), delay), None);
    }

    #[test]
    fn a_following_far_end_takes_the_key_on_its_own() {
        let mut f = FarEnd::new("a", t(0), false, false);
        f.edge_changed("b", t(100), Some(Duration::from_secs(30)));
        f.catch_up("b", t(120));
        assert_eq!(f.state_at(t(120), TimeDelta::zero()), 0.0);
        f.catch_up("b", t(131));
        assert_eq!(f.state_at(t(131), TimeDelta::zero()), 1.0);
    }

    #[test]
    fn a_stuck_far_end_never_comes_back_and_a_down_one_starts_down() {
        let mut stuck = FarEnd::new("a", t(0), false, true);
        stuck.edge_changed("b", t(100), Some(Duration::from_secs(1)));
        stuck.delivered("b".into(), "b", t(101));
        stuck.catch_up("b", t(1000));
        assert_eq!(stuck.state_at(t(1000), TimeDelta::zero()), 0.0);
        let mut down = FarEnd::new("a", t(0), true, false);
        assert_eq!(down.state_at(t(50), TimeDelta::zero()), 0.0);
        down.delivered("a".into(), "a", t(60));
        assert_eq!(down.state_at(t(61), TimeDelta::zero()), 1.0);
    }

    #[test]
    fn the_budget_admits_its_count_per_window() {
        let mut b = Budget::default();
        let limit = Some(RateLimit {
            requests: 2,
            window: Duration::from_secs(10),
        });
        let now = tokio::time::Instant::now();
        assert!(b.admit(limit, now));
        assert!(b.admit(limit, now));
        assert!(!b.admit(limit, now));
        assert!(b.admit(limit, now + Duration::from_secs(10)));
    }
}
