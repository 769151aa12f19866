//! The client-side rate limiter: Cloudflare allows 1,200 requests per 5
//! minutes per token, and a 429 blocks *every* call for the next 5 minutes.
//! So psk paces itself rather than finding the limit the hard way: one
//! limiter per [`super::Client`], shared by its clones and by all of its
//! concurrent requests (retries included).
//!
//! The pacing is governor's GCRA, on tokio's clock so tests with paused time
//! see exact, repeatable schedules. GCRA allows `burst + window / period`
//! cells in any window; psk picks the burst and period so that sum never
//! exceeds the configured count, i.e. the limit holds for *every* window, not
//! only for windows aligned to some start.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::policy::Span;

/// At most `requests` in any `window`: the `--rate-limit N/DURATION` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
}

impl RateLimit {
    /// Cloudflare's documented limit: 1,200 requests per 5 minutes.
    pub const CLOUDFLARE: RateLimit = RateLimit {
        requests: 1200,
        window: Duration::from_secs(300),
    };

    /// A burst of a fiftieth of the budget (so a small plan does not wait)
    /// and an even pace for the rest, such that `burst + window / period` is
    /// at most `requests`. A long run is paced at 98% of the limit.
    fn quota(&self) -> Quota {
        let burst = (self.requests / 50).max(1);
        let rest = self.requests - burst;
        let (burst, period) = if rest == 0 {
            // One request per window: the next may come only once the
            // window since the previous one has fully passed.
            (1, self.window + Duration::from_nanos(1))
        } else {
            // Rounded up, so `window / period` never exceeds `rest`.
            let nanos = self.window.as_nanos().div_ceil(u128::from(rest));
            (
                burst,
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)),
            )
        };
        let period = period.max(Duration::from_nanos(1));
        Quota::with_period(period)
            .expect("period is not zero")
            .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"))
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::CLOUDFLARE
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.requests, self.window.as_secs_f64())
    }
}

impl FromStr for RateLimit {
    type Err = String;

    /// `N/DURATION`: `1200/5m`, `1200/300s`, or `20/1` (seconds).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || {
            format!("`{s}` is not a rate; use REQUESTS/DURATION such as 1200/5m, 1200/300s or 20/1")
        };
        let (n, w) = s.trim().split_once('/').ok_or_else(usage)?;
        let requests: u32 = n.trim().parse().map_err(|_| usage())?;
        if requests == 0 {
            return Err(format!("`{s}`: the number of requests must be at least 1"));
        }
        let w = w.trim();
        let window = if let Ok(secs) = w.parse::<u64>() {
            Duration::from_secs(secs)
        } else {
            let span: Span = w.parse().map_err(|_| usage())?;
            Duration::from_secs(u64::try_from(span.seconds()).map_err(|_| usage())?)
        };
        if window.is_zero() {
            return Err(format!("`{s}`: the window must be longer than zero"));
        }
        Ok(RateLimit { requests, window })
    }
}

/// tokio's monotonic clock, as governor sees it: time since the limiter was
/// made. Under `tokio::time::pause` it is the paused clock.
#[derive(Debug, Clone)]
struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.start.elapsed())
    }
}

/// The shared pace of one client.
pub struct Limiter {
    limit: RateLimit,
    clock: TokioClock,
    inner: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("limit", &self.limit)
            .finish()
    }
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Limiter {
        let clock = TokioClock {
            start: tokio::time::Instant::now(),
        };
        Limiter {
            limit,
            inner: RateLimiter::direct_with_clock(limit.quota(), clock.clone()),
            clock,
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Waits until one more request fits the limit, then takes its slot.
    pub async fn acquire(&self) {
        loop {
            match self.inner.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    tracing::debug!(
                        wait_ms = wait.as_secs_f64() * 1000.0,
                        limit = %self.limit,
                        "rate limiter: waiting for a request slot"
                    );
                    tokio::time::sleep(wait.max(Duration::from_nanos(1))).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(
            "1200/5m".parse::<RateLimit>().unwrap(),
            RateLimit::CLOUDFLARE
        );
        assert_eq!(
            "1200/300s".parse::<RateLimit>().unwrap(),
            RateLimit::CLOUDFLARE
        );
        assert_eq!(
            "20/1".parse::<RateLimit>().unwrap(),
            RateLimit {
                requests: 20,
                window: Duration::from_secs(1)
            }
        );
        for bad in ["", "20", "0/1s", "x/1s", "20/0", "20/soon", "-1/5m"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
    }

    /// GCRA's worst case, `burst + window / period`, never exceeds the count.
    #[test]
    fn quota_fits_the_window() {
        for n in [1u32, 2, 5, 9, 10, 11, 20, 99, 1200, 100_000] {
            for w in [1u64, 3, 60, 300] {
                let l = RateLimit {
                    requests: n,
                    window: Duration::from_secs(w),
                };
                let q = l.quota();
                let per_window = u128::from(q.burst_size().get())
                    + l.window.as_nanos() / q.replenish_interval().as_nanos();
                assert!(per_window <= u128::from(n), "{n}/{w}s allows {per_window}");
                // A long run is paced at no less than 95% of the limit.
                if n >= 100 {
                    let sustained = l.window.as_nanos() / q.replenish_interval().as_nanos();
                    assert!(
                        sustained * 100 >= u128::from(n) * 95,
                        "{n}/{w}s sustains only {sustained}"
                    );
                }
            }
        }
    }
}
