//! Cloudflare's clock, as its answers show it.
//!
//! Cloudflare dates a new key (`last_generated_on`) and reads health-check
//! windows (`datetime_geq`, `datetime_lt`) by its own clock, and the
//! runner's may be minutes off (CI runners without NTP, a laptop after
//! suspend). So psk never compares Cloudflare's timestamps with its own
//! clock: waits and deadlines run on the runner's monotonic clock, and the
//! windows it asks of Cloudflare are in Cloudflare's time, the runner's
//! clock corrected by the offset every answer's `Date` header shows.
//!
//! A `Date` header has whole seconds and was written somewhere between the
//! request leaving and the answer arriving, so each answer bounds the
//! offset from both sides; the bounds of every answer are intersected (the
//! offset is the middle of what is left), and a clock that jumped (bounds
//! that no longer meet) starts over from the latest answer.

use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::header::{HeaderMap, DATE};

/// An offset this large is said aloud: windows and dates psk shows are off
/// by it on the runner's clock.
pub const WARN_OFFSET_SECONDS: i64 = 5;

/// What the answers so far say about Cloudflare's clock.
#[derive(Debug, Default)]
pub struct Clock {
    bounds: Mutex<Option<Bounds>>,
    /// The large offset was said aloud (once a run).
    warned: std::sync::atomic::AtomicBool,
}

/// Cloudflare's clock minus the runner's is within `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    low: TimeDelta,
    high: TimeDelta,
}

impl Bounds {
    fn offset(self) -> TimeDelta {
        self.low + (self.high - self.low) / 2
    }
}

impl Clock {
    /// Reads the `Date` header of an answer to a request sent at `sent`
    /// and answered at `received` (both on the runner's clock). A missing
    /// or garbled header says nothing. Returns a warning for people the
    /// first time the offset is large enough to matter.
    pub fn observe(
        &self,
        headers: &HeaderMap,
        sent: DateTime<Utc>,
        received: DateTime<Utc>,
    ) -> Option<String> {
        let date = headers
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
            .map(|d| d.with_timezone(&Utc))?;
        self.observe_date(date, sent, received);
        let offset = self.offset();
        let large = offset.abs() > TimeDelta::seconds(WARN_OFFSET_SECONDS);
        let first = large && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed);
        first.then(|| warning(offset))
    }

    fn observe_date(&self, date: DateTime<Utc>, sent: DateTime<Utc>, received: DateTime<Utc>) {
        // Cloudflare's clock read `date` (to the second) at some instant
        // between `sent` and `received`.
        self.narrow(Bounds {
            low: date - received,
            high: date + TimeDelta::seconds(1) - sent,
        });
    }

    /// Cloudflare dated something `at` (to the microsecond: a new key's
    /// `last_generated_on`) while answering a request sent at `sent` and
    /// answered at `received`: bounds as tight as the round trip.
    pub fn observe_event(&self, at: DateTime<Utc>, sent: DateTime<Utc>, received: DateTime<Utc>) {
        self.narrow(Bounds {
            low: at - received,
            high: at - sent,
        });
    }

    fn narrow(&self, seen: Bounds) {
        let mut bounds = self.bounds.lock().expect("clock lock");
        let before = *bounds;
        let next = match before {
            Some(b) if b.low.max(seen.low) <= b.high.min(seen.high) => Bounds {
                low: b.low.max(seen.low),
                high: b.high.min(seen.high),
            },
            _ => seen,
        };
        *bounds = Some(next);
        drop(bounds);
        let offset = next.offset();
        let moved = before.is_none_or(|b| (b.offset() - offset).abs() >= TimeDelta::seconds(1));
        if moved {
            log_offset(offset, before.is_none());
        }
    }

    /// Cloudflare's clock minus the runner's, as far as the answers so far
    /// show it; zero before any answer.
    pub fn offset(&self) -> TimeDelta {
        let bounds = *self.bounds.lock().expect("clock lock");
        bounds.map_or(TimeDelta::zero(), Bounds::offset)
    }

    /// Whether any answer had a `Date` header.
    pub fn known(&self) -> bool {
        self.bounds.lock().expect("clock lock").is_some()
    }

    /// An instant Cloudflare's clock has surely passed: the runner's clock
    /// corrected by the lowest offset the answers allow (the runner's own
    /// before any answer). A window that ends here holds no moment
    /// Cloudflare has not lived yet, so "healthy over the last `settle`"
    /// never covers less than `settle`; it costs at most the uncertainty
    /// (a second from `Date` headers alone, a round trip once a key's date
    /// was seen).
    pub fn now(&self) -> DateTime<Utc> {
        let bounds = *self.bounds.lock().expect("clock lock");
        Utc::now() + bounds.map_or(TimeDelta::zero(), |b| b.low)
    }

    /// An instant at or after now on Cloudflare's clock: the highest offset
    /// the answers allow. A window that ends here reaches the latest moment
    /// Cloudflare knows of, so "healthy now" cannot miss a path that just
    /// went down (Cloudflare reads a window's end in the future as now).
    pub fn latest(&self) -> DateTime<Utc> {
        let bounds = *self.bounds.lock().expect("clock lock");
        Utc::now() + bounds.map_or(TimeDelta::zero(), |b| b.high)
    }
}

/// The warning for people about a large offset.
fn warning(offset: TimeDelta) -> String {
    format!(
        "Cloudflare's clock and this machine's differ by {}: psk waits on its own clock and asks Cloudflare in Cloudflare's time, but dates it shows from this machine's clock are off; check its time sync (NTP)",
        describe(offset)
    )
}

/// At `-v`, the offset (a warning when it is large enough to matter).
fn log_offset(offset: TimeDelta, first: bool) {
    let ms = offset.num_milliseconds();
    if offset.abs() > TimeDelta::seconds(WARN_OFFSET_SECONDS) {
        tracing::warn!(offset_ms = ms, "{}", warning(offset));
    } else if first {
        tracing::info!(offset_ms = ms, "Cloudflare's clock, from its Date header");
    } else {
        tracing::info!(offset_ms = ms, "Cloudflare's clock offset moved");
    }
}

/// `61s ahead of this machine's`, `20m behind ...`.
fn describe(offset: TimeDelta) -> String {
    let secs = offset.num_seconds().abs();
    let how_much = match secs {
        s if s >= 120 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    };
    let side = if offset > TimeDelta::zero() {
        "ahead of"
    } else {
        "behind"
    };
    format!("{how_much} (Cloudflare's is {side} this machine's)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Each answer narrows the offset to within its round trip and the
    /// header's second; answers that disagree (a clock that jumped) start
    /// over from the latest.
    #[test]
    fn answers_narrow_the_offset() {
        let clock = Clock::default();
        assert_eq!(clock.offset(), TimeDelta::zero());
        // Cloudflare's clock 60.4s behind: at local 12:02:00.2..12:02:00.3
        // it read 12:00:59.8..12:00:59.9, written as 12:00:59.
        clock.observe_date(
            t("2026-11-26T12:00:59Z"),
            t("2026-11-26T12:02:00.200Z"),
            t("2026-11-26T12:02:00.300Z"),
        );
        let first = clock.offset();
        assert!(
            (first - TimeDelta::milliseconds(-60_400)).abs() <= TimeDelta::milliseconds(600),
            "{first}"
        );
        // A second answer, read just after Cloudflare's second turned
        // (12:02:00.05 there, 12:03:00.45 here), narrows it.
        clock.observe_date(
            t("2026-11-26T12:02:00Z"),
            t("2026-11-26T12:03:00.000Z"),
            t("2026-11-26T12:03:00.500Z"),
        );
        let narrowed = clock.offset();
        assert!(
            (narrowed - TimeDelta::milliseconds(-60_400)).abs() < TimeDelta::milliseconds(100),
            "{narrowed}"
        );
        // The runner's clock jumped 20 minutes: the old bounds go.
        clock.observe_date(
            t("2026-11-26T12:03:00Z"),
            t("2026-11-26T11:43:00.000Z"),
            t("2026-11-26T11:43:00.100Z"),
        );
        let jumped = clock.offset();
        assert!(
            (jumped - TimeDelta::minutes(20)).abs() < TimeDelta::seconds(1),
            "{jumped}"
        );
        // A key dated by Cloudflare within a 40ms round trip pins it down,
        // and "now" is never ahead of Cloudflare's.
        clock.observe_event(
            t("2026-11-26T12:03:30.250Z"),
            t("2026-11-26T11:43:30.000Z"),
            t("2026-11-26T11:43:30.040Z"),
        );
        let low = TimeDelta::milliseconds(20 * 60_000 + 210);
        assert_eq!(clock.bounds.lock().unwrap().unwrap().low, low);
        let before = Utc::now();
        assert!(clock.now() >= before + low && clock.now() <= Utc::now() + low);
        let high = TimeDelta::milliseconds(20 * 60_000 + 250);
        assert!(clock.latest() >= before + high && clock.latest() <= Utc::now() + high);
    }

    #[test]
    fn a_missing_or_garbled_date_says_nothing() {
        let clock = Clock::default();
        let mut headers = HeaderMap::new();
        clock.observe(&headers, Utc::now(), Utc::now());
        headers.insert(DATE, "yesterday".parse().unwrap());
        clock.observe(&headers, Utc::now(), Utc::now());
        assert_eq!(clock.offset(), TimeDelta::zero());
        headers.insert(DATE, "Thu, 26 Nov 2026 12:00:00 GMT".parse().unwrap());
        clock.observe(&headers, Utc::now(), Utc::now());
        assert_ne!(clock.offset(), TimeDelta::zero());
    }

    #[test]
    fn large_offsets_are_described_in_words() {
        assert_eq!(
            describe(TimeDelta::seconds(-1200)),
            "20m 0s (Cloudflare's is behind this machine's)"
        );
        assert_eq!(
            describe(TimeDelta::seconds(61)),
            "61s (Cloudflare's is ahead of this machine's)"
        );
    }
}
