//! The client-side rate limiter. Cloudflare allows 1,200 requests per 5
//! minutes per token (shared by every client of the token) and 200 per
//! second per client IP, and a 429 blocks *every* call of the token for the
//! next 5 minutes. So psk keeps to the limits itself, one [`Limiter`] per
//! [`super::Client`], shared by its clones and all their requests (retries
//! included), and spends the whole budget when it is there:
//!
//! - **The token's budget** (`--rate-limit`, and every stricter quota the
//!   server announces in `Ratelimit-Policy`) is an exact any-window limit:
//!   a log of requests, not a pace. A run that fits the budget is never held
//!   back; a longer one sends each request the moment the one it replaces
//!   leaves the window. A request occupies the window from when it is sent
//!   until a window after its *answer*: the server counted it somewhere in
//!   between, so two requests a window apart by this count are a window
//!   apart at the server too, whatever the network's jitter.
//! - **What the server says is left** (`Ratelimit: r, t`): never more
//!   requests in flight than `r` before `t`. It covers what psk cannot see,
//!   other clients spending the same token. Until the first answer of a
//!   process, one request at a time, so even the first burst obeys it.
//! - **The per-IP ceiling** (`--ip-limit`, 200/s) is a pace (governor's
//!   GCRA, a burst of 2%) at 95% of the ceiling in any window: over a window as short as a
//!   second a burst gains nothing, while an even pace stays under the
//!   ceiling when the server sees arrival times jitter by up to ~50 ms and
//!   when two psk processes run back to back (an exact log cannot see the
//!   other process's requests).
//! - **A 429** holds every request until its `retry-after` has passed.
//!
//! No crate offers the first two (governor, `leaky-bucket` and `ratelimit`
//! are token buckets or GCRA, which either pace from the first request or
//! allow more than the count in some windows); the log is a few lines.
//! Everything runs on tokio's clock, so tests with paused time see exact,
//! repeatable schedules.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::RateLimiter;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::announced::Announcement;
pub use super::rate::RateLimit;
/// Why a request waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// psk's own `--rate-limit` (or a stricter announced quota) is spent
    /// for this window.
    Window(RateLimit),
    /// The server said no request is left (`Ratelimit: r=0`), or that fewer
    /// are left than psk has in flight.
    Announced,
    /// The per-IP ceiling's pace.
    IpCeiling,
    /// The API answered 429.
    TooManyRequests,
    /// The first request of the process has not been answered yet, so
    /// what the server has left is not known.
    FirstAnswer,
}

impl Cause {
    /// Words for `-v` logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Cause::Window(_) => "own rate limit",
            Cause::Announced => "budget announced by the API",
            Cause::IpCeiling => "per-IP ceiling",
            Cause::TooManyRequests => "HTTP 429",
            Cause::FirstAnswer => "first answer",
        }
    }
}

/// tokio's monotonic clock, as governor sees it: time since the limiter was
/// made. Under `tokio::time::pause` it is the paused clock.
#[derive(Debug, Clone)]
struct TokioClock {
    start: Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.start.elapsed())
    }
}

/// What the server last said is left: `left` more requests may start
/// before `until`. `seq` is the send order of the request whose answer
/// said so, so an older answer arriving late does not overrule a newer.
#[derive(Debug, Clone, Copy)]
struct Budget {
    left: u32,
    until: Instant,
    seq: u64,
}

/// The log and the server's word, behind one lock that is never held
/// across an await.
#[derive(Debug)]
struct Log {
    /// Requests sent and not answered yet.
    in_flight: u32,
    /// When each answered request was answered, oldest first; kept while
    /// inside the longest window.
    answered: VecDeque<Instant>,
    /// Quotas the server announced (`Ratelimit-Policy`), from its last
    /// answer that had any.
    announced: Vec<RateLimit>,
    budget: Option<Budget>,
    /// Whether any answer has come back (so the server has had its say).
    heard: bool,
    blocked_until: Option<Instant>,
    next_seq: u64,
    /// The end of the last wait shown to the user, so many requests
    /// waiting for the same thing say so once.
    shown_until: Option<Instant>,
}

/// Whether a request may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Go,
    Until(Instant, Cause),
    /// Until some request in flight is answered.
    Answer(Cause),
}

impl Log {
    fn rules<'a>(&'a self, own: &'a RateLimit) -> impl Iterator<Item = &'a RateLimit> {
        std::iter::once(own).chain(self.announced.iter())
    }

    /// The pure decision: may one more request start at `now`?
    fn verdict(&mut self, own: &RateLimit, now: Instant) -> Verdict {
        if let Some(until) = self.blocked_until {
            if now < until {
                return Verdict::Until(until, Cause::TooManyRequests);
            }
            self.blocked_until = None;
        }
        if !self.heard && self.in_flight > 0 {
            return Verdict::Answer(Cause::FirstAnswer);
        }
        if let Some(b) = self.budget {
            if now >= b.until {
                self.budget = None;
            } else if b.left == 0 {
                return Verdict::Until(b.until, Cause::Announced);
            }
        }
        let mut verdict = Verdict::Go;
        for rule in self.rules(own) {
            let v = self.window_verdict(rule, now);
            verdict = match (verdict, v) {
                (Verdict::Go, v) | (v, Verdict::Go) => v,
                (Verdict::Until(a, ca), Verdict::Until(b, cb)) => {
                    if b > a {
                        Verdict::Until(b, cb)
                    } else {
                        Verdict::Until(a, ca)
                    }
                }
                (Verdict::Answer(c), _) | (_, Verdict::Answer(c)) => Verdict::Answer(c),
            };
        }
        verdict
    }

    /// One any-window rule: a request occupies the window from its send
    /// until `window` after its answer.
    fn window_verdict(&self, rule: &RateLimit, now: Instant) -> Verdict {
        let first = self.answered.partition_point(|a| *a + rule.window <= now);
        let occupying = self.answered.len() - first;
        let occupied = self.in_flight as usize + occupying;
        let n = rule.requests as usize;
        if occupied < n {
            return Verdict::Go;
        }
        let k = occupied - n + 1;
        if k <= occupying {
            Verdict::Until(
                self.answered[first + k - 1] + rule.window,
                Cause::Window(*rule),
            )
        } else {
            Verdict::Answer(Cause::Window(*rule))
        }
    }

    /// Takes the slot: one more in flight, one less left.
    fn start(&mut self) -> u64 {
        self.in_flight += 1;
        if let Some(b) = &mut self.budget {
            b.left = b.left.saturating_sub(1);
        }
        self.next_seq += 1;
        self.next_seq
    }

    /// A request's answer (or its end without one) at `now`.
    fn finish(&mut self, seq: u64, now: Instant, said: Option<&Announcement>, longest: Duration) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let at = self.answered.partition_point(|a| *a <= now);
        self.answered.insert(at, now);
        while self.answered.front().is_some_and(|a| *a + longest <= now) {
            self.answered.pop_front();
        }
        let Some(said) = said else { return };
        self.heard = true;
        if let Some(r) = said.remaining {
            let newer = self.budget.is_none_or(|b| seq > b.seq || now >= b.until);
            if newer {
                // Every other request in flight may not have been counted
                // yet. `t` counts from when the server answered, so from
                // now it errs on the safe side; whole seconds, taken as
                // rounded up, as HTTP's delta-seconds are.
                self.budget = Some(Budget {
                    left: r.left.saturating_sub(self.in_flight),
                    until: now + r.reset,
                    seq,
                });
            }
        }
        if !said.policies.is_empty() && said.policies != self.announced {
            self.announced = said.policies.clone();
        }
    }
}

/// The shared limits of one client.
pub struct Limiter {
    limit: RateLimit,
    ip: RateLimit,
    log: Mutex<Log>,
    changed: Notify,
    clock: TokioClock,
    pace: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>,
    show_waits: bool,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("limit", &self.limit)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

/// One request's slot. Dropping it without [`Permit::answered`] (a request
/// cut off) counts as an answer with no word from the server.
pub struct Permit<'a> {
    limiter: &'a Limiter,
    seq: u64,
    done: bool,
}

impl Permit<'_> {
    /// The request's answer came, with what the server said of its budget.
    pub fn answered(mut self, said: &Announcement) {
        self.done = true;
        self.limiter.finish(self.seq, Some(said));
    }

    /// The request ended with no answer (a transport failure).
    pub fn unanswered(mut self) {
        self.done = true;
        self.limiter.finish(self.seq, None);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.limiter.finish(self.seq, None);
        }
    }
}

impl Limiter {
    /// `limit` for the token, `ip` for the client's address. With
    /// `show_waits`, a wait of a second or more is said on stderr.
    pub fn new(limit: RateLimit, ip: RateLimit, show_waits: bool) -> Limiter {
        let clock = TokioClock {
            start: Instant::now(),
        };
        Limiter {
            limit,
            ip,
            log: Mutex::new(Log {
                in_flight: 0,
                answered: VecDeque::new(),
                announced: Vec::new(),
                budget: None,
                heard: false,
                blocked_until: None,
                next_seq: 0,
                shown_until: None,
            }),
            changed: Notify::new(),
            pace: RateLimiter::direct_with_clock(ip.pace(), clock.clone()),
            clock,
            show_waits,
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    pub fn ip_limit(&self) -> RateLimit {
        self.ip
    }

    /// Waits until one more request fits every limit, then takes its slot.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            // Registered before the check, so an answer between the check
            // and the wait is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let verdict = {
                let mut log = self.log.lock().expect("limiter lock");
                match log.verdict(&self.limit, now) {
                    Verdict::Go => match self.pace.check() {
                        Ok(()) => {
                            let seq = log.start();
                            return Permit {
                                limiter: self,
                                seq,
                                done: false,
                            };
                        }
                        Err(not_until) => Verdict::Until(
                            now + not_until.wait_time_from(self.clock.now()),
                            Cause::IpCeiling,
                        ),
                    },
                    v => v,
                }
            };
            match verdict {
                Verdict::Go => unreachable!("a go returns above"),
                Verdict::Until(until, cause) => {
                    self.tell(now, until, cause);
                    tokio::select! {
                        _ = tokio::time::sleep_until(until.max(now + Duration::from_nanos(1))) => {}
                        _ = &mut changed => {}
                    }
                }
                Verdict::Answer(cause) => {
                    tracing::trace!(
                        cause = cause.as_str(),
                        "rate limiter: waiting for an answer"
                    );
                    changed.await;
                }
            }
        }
    }

    /// A 429: nothing goes until `wait` has passed.
    pub fn block_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut log = self.log.lock().expect("limiter lock");
        log.blocked_until = Some(log.blocked_until.map_or(until, |u| u.max(until)));
        drop(log);
        self.changed.notify_waiters();
    }

    fn finish(&self, seq: u64, said: Option<&Announcement>) {
        let mut log = self.log.lock().expect("limiter lock");
        let longest = log
            .rules(&self.limit)
            .map(|r| r.window)
            .max()
            .unwrap_or(self.limit.window);
        let before = log.announced.clone();
        log.finish(seq, Instant::now(), said, longest);
        if log.announced != before {
            for p in &log.announced {
                let stricter =
                    p.per_second() < self.limit.per_second() || p.requests < self.limit.requests;
                tracing::info!(
                    policy = %p,
                    configured = %self.limit,
                    stricter,
                    "rate limiter: the API announced a quota"
                );
            }
        }
        drop(log);
        self.changed.notify_waiters();
    }

    /// Logs a wait, and says a long one on stderr once per stretch.
    fn tell(&self, now: Instant, until: Instant, cause: Cause) {
        let wait = until.saturating_duration_since(now);
        if wait < Duration::from_secs(1) {
            tracing::debug!(
                wait_ms = wait.as_secs_f64() * 1000.0,
                cause = cause.as_str(),
                "rate limiter: waiting"
            );
            return;
        }
        let mut log = self.log.lock().expect("limiter lock");
        // Each answer moves the end a little; a wait already shown is not
        // news unless it grew by more than a couple of seconds.
        if log
            .shown_until
            .is_some_and(|s| now < s && until <= s + Duration::from_secs(2))
        {
            return;
        }
        log.shown_until = Some(until);
        let text = self.describe(&log, wait, cause);
        drop(log);
        tracing::info!(
            wait_s = wait.as_secs_f64(),
            cause = cause.as_str(),
            "rate limiter: {text}"
        );
        if self.show_waits {
            eprintln!("note: {text}");
        }
    }

    /// "waiting 27 s for API budget: 0 of 1,200 left in this 5-minute window"
    fn describe(&self, log: &Log, wait: Duration, cause: Cause) -> String {
        let secs = wait.as_secs_f64().ceil();
        match cause {
            Cause::Window(rule) => format!(
                "waiting {secs} s for API budget: 0 of {} left in this {} window",
                thousands(rule.requests),
                rule.window_words()
            ),
            Cause::Announced => match log.announced.iter().min_by_key(|p| p.requests) {
                Some(p) => format!(
                    "waiting {secs} s for API budget: 0 of {} left in this {} window (the API's count, other clients of the token included)",
                    thousands(p.requests),
                    p.window_words()
                ),
                None => format!(
                    "waiting {secs} s for API budget: the API reports 0 requests left for this token (other clients share it)"
                ),
            },
            Cause::IpCeiling => format!(
                "waiting {secs} s under the per-IP ceiling of {} requests per second",
                thousands(self.ip.requests)
            ),
            Cause::TooManyRequests => format!(
                "waiting {secs} s: the API answered 429 and refuses every request of this token until then"
            ),
            Cause::FirstAnswer => format!("waiting {secs} s for the API's first answer"),
        }
    }
}

/// 1200 -> "1,200".
fn thousands(n: u32) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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

    #[test]
    fn thousands_separates() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(1200), "1,200");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
