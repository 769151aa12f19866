//! One backoff for every loop that tries again: waiting for a lock (file or
//! bucket), a journal commit or a final write that failed, a call to
//! Cloudflare. Each loop says only its first wait, its longest wait and how
//! often (or until when) it tries; the shape (doubling, with jitter so
//! several psk processes do not retry in step) is decided here, once, on
//! top of `backon`'s exponential builder.
//!
//! `PSK_TEST_NO_RETRY_DELAY=1` zeroes every wait, as uv does, so tests of
//! retries take no wall time.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder as _, ExponentialBuilder};

/// The variable that zeroes every wait (for tests only).
pub const NO_DELAY_ENV: &str = "PSK_TEST_NO_RETRY_DELAY";

/// Whether `PSK_TEST_NO_RETRY_DELAY` asks for retries without delay.
pub fn no_delay_from_env() -> bool {
    std::env::var(NO_DELAY_ENV)
        .map(|v| !v.is_empty() && v != "0" && v != "false")
        .unwrap_or(false)
}

/// Waits that double from `first` up to `max`, each drawn at random from
/// the upper half of its step (`[step/2, step)`), so the n-th wait never
/// exceeds `first * 2^(n-1)` nor `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// How many waits (retries) at most; `None` for as many as a deadline
    /// allows.
    pub tries: Option<usize>,
    /// No wait at all (tests, see [`NO_DELAY_ENV`]).
    pub no_delay: bool,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            tries: None,
            no_delay: false,
        }
    }

    /// At most `n` waits.
    pub const fn tries(self, n: usize) -> Backoff {
        Backoff {
            tries: Some(n),
            ..self
        }
    }

    /// Zero waits when the environment asks for it (tests).
    pub fn from_env(self) -> Backoff {
        Backoff {
            no_delay: self.no_delay || no_delay_from_env(),
            ..self
        }
    }

    /// The waits, in order.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        let mut builder = ExponentialBuilder::new()
            .with_min_delay(self.first / 2)
            .with_max_delay(self.max / 2)
            .with_factor(2.0)
            .with_jitter();
        builder = match self.tries {
            Some(n) => builder.with_max_times(n),
            None => builder.without_max_times(),
        };
        let no_delay = self.no_delay;
        builder
            .build()
            .map(move |d| if no_delay { Duration::ZERO } else { d })
    }

    /// The wait after the `attempt`-th failed try (1-based), ignoring
    /// `tries`: for loops that count their attempts themselves.
    pub fn nth(&self, attempt: u32) -> Duration {
        let unbounded = Backoff {
            tries: None,
            ..*self
        };
        unbounded
            .delays()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.max)
    }

    /// The waits until `deadline`: each cut to the time left, none once it
    /// has passed.
    pub fn until(&self, deadline: Instant) -> impl Iterator<Item = Duration> + use<> {
        self.delays().map_while(move |d| {
            let left = deadline.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| d.min(left))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_within_bounds_and_stop_after_the_tries() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).tries(6);
        let d: Vec<Duration> = b.delays().collect();
        assert_eq!(d.len(), 6);
        for (i, w) in d.iter().enumerate() {
            let step = (Duration::from_millis(100) * (1 << i)).min(Duration::from_secs(1));
            assert!(*w >= step / 2 && *w <= step, "wait {i}: {w:?} for {step:?}");
        }
        assert!(b.nth(30) <= Duration::from_secs(1));
    }

    #[test]
    fn no_delay_zeroes_every_wait() {
        let b = Backoff {
            no_delay: true,
            ..Backoff::new(Duration::from_secs(1), Duration::from_secs(4)).tries(3)
        };
        assert_eq!(b.delays().collect::<Vec<_>>(), vec![Duration::ZERO; 3]);
        assert_eq!(b.nth(2), Duration::ZERO);
    }

    #[test]
    fn a_deadline_cuts_the_last_wait_and_ends_the_waits() {
        let b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
        let soon = Instant::now() + Duration::from_millis(50);
        let first = b.until(soon).next().unwrap();
        assert!(first <= Duration::from_millis(50), "{first:?}");
        assert_eq!(b.until(Instant::now()).next(), None);
    }
}
