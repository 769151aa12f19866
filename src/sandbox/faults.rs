//! Misbehaviour on purpose: latency, server errors, Cloudflare's rate
//! limits and dropped connections, so tests and demos see what production
//! sees.
//!
//! The token's limit (`rate_limit`) is announced on every answer as
//! Cloudflare does (`Ratelimit: "default";r=LEFT;t=SECONDS` and
//! `Ratelimit-Policy: "default";q=N;w=WINDOW`); `t` is when the oldest
//! counted request leaves the window, i.e. when more than `r` is allowed
//! again. Other clients of the same token spend from it too
//! (`other_clients`, or [`Sandbox::spend_budget`]). The per-IP limit
//! (`ip_limit`) is not announced, as at Cloudflare.
//!
//! Every random choice comes from one seedable generator, drawn in a fixed
//! order per request, so a sequential client sees the same faults on every
//! run with the same `--seed`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};
use tokio::time::Instant;

use super::{failure, Sandbox, SandboxOptions};
use crate::cloudflare::RateLimit;

/// Marks a response whose connection is to be dropped unanswered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

pub(crate) struct Faults {
    latency: Duration,
    fail_rate: f64,
    drop_rate: f64,
    rate_limit: Option<RateLimit>,
    hide_headers: bool,
    ip_limit: Option<RateLimit>,
    other_clients: Option<RateLimit>,
    rng: Mutex<StdRng>,
    window: Mutex<Window>,
    per_ip: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

/// The client's address, put on each request by [`super::spawn`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub IpAddr);

/// Requests of the token seen in the last window (psk's and other
/// clients'), and the end of a block after a 429.
struct Window {
    seen: VecDeque<Instant>,
    blocked_until: Option<Instant>,
    /// When other clients last spent, and the fraction of a request they
    /// are owed since.
    others_at: Instant,
    others_owed: f64,
}

/// What the token has left after a request was counted: `Ratelimit`'s
/// figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Left {
    pub left: u32,
    pub reset_secs: u64,
}

impl Window {
    fn expire(&mut self, limit: &RateLimit, now: Instant) {
        if self.blocked_until.is_some_and(|u| now >= u) {
            self.blocked_until = None;
            self.seen.clear();
        }
        while self.seen.front().is_some_and(|t| *t + limit.window <= now) {
            self.seen.pop_front();
        }
    }

    /// Other clients spend `n` requests now, as far as the limit allows
    /// (a well-behaved client never draws a 429). Returns how many.
    fn spend(&mut self, limit: &RateLimit, n: u64, now: Instant) -> u64 {
        self.expire(limit, now);
        if self.blocked_until.is_some() {
            return 0;
        }
        let room = (limit.requests as usize).saturating_sub(self.seen.len()) as u64;
        let spent = n.min(room);
        for _ in 0..spent {
            self.seen.push_back(now);
        }
        spent
    }

    fn left(&self, limit: &RateLimit, now: Instant) -> Left {
        if let Some(until) = self.blocked_until {
            return Left {
                left: 0,
                reset_secs: ceil_secs(until.saturating_duration_since(now)),
            };
        }
        let left = (limit.requests as usize).saturating_sub(self.seen.len()) as u32;
        let reset = self.seen.front().map_or(Duration::ZERO, |t| {
            (*t + limit.window).saturating_duration_since(now)
        });
        Left {
            left,
            reset_secs: ceil_secs(reset),
        }
    }
}

/// What one request will suffer, drawn all at once.
struct Draw {
    latency: Duration,
    fail: Option<StatusCode>,
    drop: bool,
}

impl Faults {
    pub(crate) fn new(o: &SandboxOptions) -> Faults {
        let rng = match o.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        Faults {
            latency: o.latency,
            fail_rate: o.fail_rate.clamp(0.0, 1.0),
            drop_rate: o.drop_rate.clamp(0.0, 1.0),
            rate_limit: o.rate_limit,
            ip_limit: o.ip_limit,
            hide_headers: o.hide_rate_limit_headers,
            other_clients: o.other_clients,
            rng: Mutex::new(rng),
            window: Mutex::new(Window {
                seen: VecDeque::new(),
                blocked_until: None,
                others_at: Instant::now(),
                others_owed: 0.0,
            }),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Other clients of the token spend `n` of its budget now; returns how
    /// many fit, and what is left.
    pub(crate) fn spend(&self, n: u64) -> Option<(u64, Left)> {
        let limit = self.rate_limit?;
        let now = Instant::now();
        let mut w = self.window.lock().expect("window lock");
        let spent = w.spend(&limit, n, now);
        Some((spent, w.left(&limit, now)))
    }

    /// What `other_clients` have spent since the last request, at their
    /// steady rate.
    fn others_catch_up(&self, w: &mut Window, limit: &RateLimit, now: Instant) {
        let Some(others) = self.other_clients else {
            return;
        };
        let elapsed = now.saturating_duration_since(w.others_at).as_secs_f64();
        w.others_at = now;
        w.others_owed += elapsed * others.per_second();
        let whole = w.others_owed.floor();
        w.others_owed -= whole;
        w.spend(limit, whole as u64, now);
    }

    /// The per-IP limit: `Some(seconds to wait)` when this address has sent
    /// its count in the last window. No block beyond that.
    fn over_ip_limit(&self, ip: Option<IpAddr>, now: Instant) -> Option<u64> {
        let (limit, ip) = (self.ip_limit?, ip?);
        let mut map = self.per_ip.lock().expect("per-ip lock");
        let seen = map.entry(ip).or_default();
        while seen.front().is_some_and(|t| *t + limit.window <= now) {
            seen.pop_front();
        }
        if seen.len() >= limit.requests as usize {
            let oldest = *seen.front().expect("not empty");
            return Some(ceil_secs((oldest + limit.window).saturating_duration_since(now)).max(1));
        }
        seen.push_back(now);
        None
    }

    fn draw(&self) -> Draw {
        let mut rng = self.rng.lock().expect("rng lock");
        // Latency jitters uniformly between half and one and a half times
        // the setting.
        let latency = if self.latency.is_zero() {
            Duration::ZERO
        } else {
            self.latency.mul_f64(rng.random_range(0.5..=1.5))
        };
        let fail_roll: f64 = rng.random();
        let status = [500u16, 502, 503, 504][rng.random_range(0..4)];
        let drop_roll: f64 = rng.random();
        Draw {
            latency,
            fail: (fail_roll < self.fail_rate)
                .then(|| StatusCode::from_u16(status).expect("valid status")),
            drop: drop_roll < self.drop_rate,
        }
    }

    /// Cloudflare's rule: over the limit, HTTP 429 with `retry-after`, and
    /// every request is refused until the block (one window long) ends.
    /// `Some(seconds to wait)` when this request is refused.
    /// `Ok(left)` when the request is counted, `Err((seconds, left))`
    /// when refused; `None` without a limit.
    fn over_limit(&self, now: Instant) -> Option<Result<Left, (u64, Left)>> {
        let limit = self.rate_limit?;
        let mut w = self.window.lock().expect("window lock");
        self.others_catch_up(&mut w, &limit, now);
        w.expire(&limit, now);
        if let Some(until) = w.blocked_until {
            return Some(Err((ceil_secs(until - now), w.left(&limit, now))));
        }
        if w.seen.len() >= limit.requests as usize {
            w.blocked_until = Some(now + limit.window);
            return Some(Err((ceil_secs(limit.window), w.left(&limit, now))));
        }
        w.seen.push_back(now);
        Some(Ok(w.left(&limit, now)))
    }

    /// Cloudflare's two headers, on every answer while a limit is set.
    fn announce(&self, response: &mut Response, left: Left) {
        let Some(limit) = self.rate_limit.filter(|_| !self.hide_headers) else {
            return;
        };
        let h = response.headers_mut();
        let value = |s: String| HeaderValue::from_str(&s).expect("ASCII header");
        h.insert(
            "ratelimit",
            value(format!("\"default\";r={};t={}", left.left, left.reset_secs)),
        );
        h.insert(
            "ratelimit-policy",
            value(format!(
                "\"default\";q={};w={}",
                limit.requests,
                limit.window.as_secs()
            )),
        );
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The middleware in front of every route.
pub(crate) async fn misbehave(State(s): State<Arc<Sandbox>>, req: Request, next: Next) -> Response {
    s.counters.requests.fetch_add(1, Ordering::Relaxed);
    let draw = s.faults.draw();
    if !draw.latency.is_zero() {
        tokio::time::sleep(draw.latency).await;
    }
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    if let Some(wait) = s.faults.over_ip_limit(peer, Instant::now()) {
        s.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        s.counters.ip_limited.fetch_add(1, Ordering::Relaxed);
        let mut r = failure(
            StatusCode::TOO_MANY_REQUESTS,
            1015,
            "You are being rate limited: too many requests from this IP address",
        );
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(wait));
        return r;
    }
    let left = match s.faults.over_limit(Instant::now()) {
        Some(Err((wait, left))) => {
            s.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            let mut r = failure(
                StatusCode::TOO_MANY_REQUESTS,
                1015,
                "You are being rate limited; every request is refused until retry-after has passed",
            );
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(wait));
            s.faults.announce(&mut r, left);
            return r;
        }
        Some(Ok(left)) => Some(left),
        None => None,
    };
    let mut response = match draw.fail {
        Some(status) => {
            s.counters.failed.fetch_add(1, Ordering::Relaxed);
            failure(
                status,
                1500,
                "Internal error (the sandbox's --fail-rate); nothing was changed",
            )
        }
        None => next.run(req).await,
    };
    if let Some(left) = left {
        s.faults.announce(&mut response, left);
    }
    if draw.fail.is_some() {
        return response;
    }
    if draw.drop {
        s.counters.dropped.fetch_add(1, Ordering::Relaxed);
        response.extensions_mut().insert(DropConnection);
    }
    response
}
