//! A rate: at most N requests in any window. psk's own limits
//! (`--rate-limit`, `--ip-limit`), Cloudflare's documented ones, and every
//! quota the server announces are all this one value, so the limiter and
//! the header parser share it without depending on each other.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::Quota;

use crate::policy::Span;

/// At most `requests` in any `window`: the `--rate-limit N/DURATION` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
}

impl RateLimit {
    /// Cloudflare's documented limit per token: 1,200 requests per 5 minutes.
    pub const CLOUDFLARE: RateLimit = RateLimit {
        requests: 1200,
        window: Duration::from_secs(300),
    };

    /// Cloudflare's documented limit per client IP: 200 requests a second.
    pub const CLOUDFLARE_IP: RateLimit = RateLimit {
        requests: 200,
        window: Duration::from_secs(1),
    };

    /// Requests per second, for comparing limits of different windows.
    pub fn per_second(&self) -> f64 {
        f64::from(self.requests) / self.window.as_secs_f64()
    }

    /// The window in words: "5-minute", "30-second".
    pub(super) fn window_words(&self) -> String {
        let s = self.window.as_secs();
        if s >= 60 && s.is_multiple_of(60) {
            format!("{}-minute", s / 60)
        } else {
            format!("{}-second", self.window.as_secs_f64())
        }
    }

    /// The pace that keeps under this ceiling: 93% of it, and a burst of
    /// 2% (so a timer that wakes a millisecond late does not lose the
    /// slot): at most 95% of the ceiling in any window.
    pub(super) fn pace(&self) -> Quota {
        let n = u128::from(self.requests);
        let burst = u32::try_from(n / 50).unwrap_or(u32::MAX).max(1);
        let nanos = self.window.as_nanos() * 100 / (n * 93);
        let period = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX).max(1));
        Quota::with_period(period)
            .expect("period is not zero")
            .allow_burst(NonZeroU32::new(burst).expect("at least 1"))
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
