//! Misbehaviour on purpose: latency, server errors, Cloudflare's rate limit
//! and dropped connections, so tests and demos see what production sees.
//!
//! Every random choice comes from one seedable generator, drawn in a fixed
//! order per request, so a sequential client sees the same faults on every
//! run with the same `--seed`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
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
    rng: Mutex<StdRng>,
    window: Mutex<Window>,
}

/// Requests seen in the last window, and the end of a block after a 429.
#[derive(Default)]
struct Window {
    seen: VecDeque<Instant>,
    blocked_until: Option<Instant>,
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
            None => StdRng::from_entropy(),
        };
        Faults {
            latency: o.latency,
            fail_rate: o.fail_rate.clamp(0.0, 1.0),
            drop_rate: o.drop_rate.clamp(0.0, 1.0),
            rate_limit: o.rate_limit,
            rng: Mutex::new(rng),
            window: Mutex::new(Window::default()),
        }
    }

    fn draw(&self) -> Draw {
        let mut rng = self.rng.lock().expect("rng lock");
        // Latency jitters uniformly between half and one and a half times
        // the setting.
        let latency = if self.latency.is_zero() {
            Duration::ZERO
        } else {
            self.latency.mul_f64(rng.gen_range(0.5..=1.5))
        };
        let fail_roll: f64 = rng.gen();
        let status = [500u16, 502, 503, 504][rng.gen_range(0..4)];
        let drop_roll: f64 = rng.gen();
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
    fn over_limit(&self, now: Instant) -> Option<u64> {
        let limit = self.rate_limit?;
        let mut w = self.window.lock().expect("window lock");
        if let Some(until) = w.blocked_until {
            if now < until {
                return Some(ceil_secs(until - now));
            }
            w.blocked_until = None;
            w.seen.clear();
        }
        while w.seen.front().is_some_and(|t| *t + limit.window <= now) {
            w.seen.pop_front();
        }
        if w.seen.len() >= limit.requests as usize {
            let until = now + limit.window;
            w.blocked_until = Some(until);
            return Some(ceil_secs(limit.window));
        }
        w.seen.push_back(now);
        None
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
    if let Some(wait) = s.faults.over_limit(Instant::now()) {
        s.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut r = failure(
            StatusCode::TOO_MANY_REQUESTS,
            1015,
            "You are being rate limited; every request is refused until retry-after has passed",
        );
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(wait));
        return r;
    }
    if let Some(status) = draw.fail {
        s.counters.failed.fetch_add(1, Ordering::Relaxed);
        return failure(
            status,
            1500,
            "Internal error (the sandbox's --fail-rate); nothing was changed",
        );
    }
    let mut response = next.run(req).await;
    if draw.drop {
        s.counters.dropped.fetch_add(1, Ordering::Relaxed);
        response.extensions_mut().insert(DropConnection);
    }
    response
}
