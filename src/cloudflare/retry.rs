//! One retry policy for every call, as Cloudflare's own SDKs behave: what
//! is retried is what [`ApiError::is_transient`] says, unless the server
//! says otherwise; how long to wait is the server's figure or a backoff.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

use super::error::ApiError;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// The first backoff; each later one doubles, with jitter.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Retry at once, ignoring backoff and the server's `Retry-After`: for
    /// tests only (`PSK_TEST_NO_RETRY_DELAY=1`, as uv does), so a retry test
    /// takes no wall time.
    pub no_delay: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            // Cloudflare blocks a token for 5 minutes after a 429.
            max_delay: Duration::from_secs(300),
            no_delay: false,
        }
    }
}

impl RetryPolicy {
    /// How long to wait before trying again after try `attempt` failed
    /// with `err`, or `None` to stop. `headers` are those of the answer, if
    /// one came: a server's `x-should-retry` overrides the classifier, and
    /// its `Retry-After` the backoff.
    pub fn wait_after(
        &self,
        attempt: u32,
        err: &ApiError,
        headers: Option<&HeaderMap>,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let again = headers
            .and_then(server_says_retry)
            .unwrap_or_else(|| err.is_transient());
        again.then(|| match headers {
            Some(h) => self.delay_for(attempt, h),
            None => self.backoff(attempt),
        })
    }

    /// Exponential backoff with jitter (see [`crate::backoff`]): a random
    /// point in the upper half of `base * 2^(attempt-1)`, so concurrent
    /// clients do not retry in step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let b = crate::backoff::Backoff {
            no_delay: self.no_delay,
            ..crate::backoff::Backoff::new(self.base_delay, self.max_delay)
        };
        b.nth(attempt)
    }

    /// The server's `Retry-After-Ms` or `Retry-After` (seconds or an HTTP
    /// date) when given, else the backoff; never more than `max_delay`.
    pub fn delay_for(&self, attempt: u32, headers: &HeaderMap) -> Duration {
        if self.no_delay {
            return Duration::ZERO;
        }
        server_delay(headers, Utc::now())
            .map(|d| d.min(self.max_delay))
            .unwrap_or_else(|| self.backoff(attempt))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn server_delay(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    if let Some(ms) = header(headers, "retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let v = header(headers, "retry-after")?;
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The server's own word on retrying (`x-should-retry: true|false`), as
/// Cloudflare's SDKs honour it.
fn server_says_retry(headers: &HeaderMap) -> Option<bool> {
    match header(headers, "x-should-retry") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retries_the_right_statuses() {
        let p = RetryPolicy {
            no_delay: true,
            ..RetryPolicy::default()
        };
        let none = HeaderMap::new();
        for s in [408, 409, 429, 500, 502, 503, 504] {
            assert!(
                p.wait_after(1, &ApiError::answer(s), Some(&none)).is_some(),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(
                p.wait_after(1, &ApiError::answer(s), Some(&none)).is_none(),
                "{s}"
            );
        }
        let no = headers(&[("x-should-retry", "false")]);
        assert!(p.wait_after(1, &ApiError::answer(503), Some(&no)).is_none());
        let yes = headers(&[("x-should-retry", "true")]);
        assert!(p
            .wait_after(1, &ApiError::answer(400), Some(&yes))
            .is_some());
        // The last try is the last, whatever the server says.
        assert!(p
            .wait_after(p.max_attempts, &ApiError::answer(503), Some(&yes))
            .is_none());
        let lost = ApiError::Transport {
            url: "u".into(),
            message: "reset".into(),
            sent: true,
            attempts: 1,
        };
        assert_eq!(p.wait_after(1, &lost, None), Some(Duration::ZERO));
    }

    #[test]
    fn honours_server_delays() {
        let now: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap();
        assert_eq!(
            server_delay(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            server_delay(
                &headers(&[("retry-after-ms", "250"), ("retry-after", "7")]),
                now
            ),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            server_delay(
                &headers(&[("retry-after", "Thu, 26 Nov 2026 12:00:30 GMT")]),
                now
            ),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            server_delay(&headers(&[("retry-after", "soon")]), now),
            None
        );
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay_for(1, &headers(&[("retry-after", "100000")])),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            no_delay: false,
        };
        let d1 = p.backoff(1);
        assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
        let d3 = p.backoff(3);
        assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
        assert!(p.backoff(30) <= Duration::from_secs(1));
        let none = RetryPolicy {
            no_delay: true,
            ..p
        };
        assert_eq!(none.backoff(3), Duration::ZERO);
        assert_eq!(
            none.delay_for(1, &headers(&[("retry-after", "30")])),
            Duration::ZERO
        );
    }
}
