//! The client-side rate limiter against a simulated server, on tokio's
//! paused clock: every property issue 20 asks for, as counts over exact,
//! repeatable schedules (never as wall time).
//!
//! The simulated server counts each request halfway through its latency
//! (as a real server counts on arrival), keeps Cloudflare's rule (more than
//! N in any window is refused) over psk's requests *and* other clients',
//! and announces what is left the way Cloudflare does, or not at all.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use psk::cloudflare::{Announcement, Limiter, RateLimit, Remaining};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

fn rate(s: &str) -> RateLimit {
    s.parse().unwrap()
}

/// How the simulated server answers about its budget.
#[derive(Clone, Copy, PartialEq)]
enum Headers {
    Announced,
    Absent,
    Garbled,
}

struct Server {
    limit: RateLimit,
    headers: Headers,
    seen: VecDeque<Instant>,
    refused: usize,
}

impl Server {
    /// Counts one request at `now`; what the answer says.
    fn count(&mut self, now: Instant) -> Announcement {
        while self
            .seen
            .front()
            .is_some_and(|t| *t + self.limit.window <= now)
        {
            self.seen.pop_front();
        }
        if self.seen.len() >= self.limit.requests as usize {
            self.refused += 1;
        } else {
            self.seen.push_back(now);
        }
        self.announce(now)
    }

    /// Other clients of the token spend `n` now.
    fn others_spend(&mut self, n: usize, now: Instant) {
        for _ in 0..n {
            self.seen.push_back(now);
        }
    }

    fn announce(&self, now: Instant) -> Announcement {
        let left = (self.limit.requests as usize).saturating_sub(self.seen.len()) as u32;
        let reset = self.seen.front().map_or(Duration::ZERO, |t| {
            (*t + self.limit.window).saturating_duration_since(now)
        });
        let reset = Duration::from_secs(reset.as_secs() + u64::from(reset.subsec_nanos() > 0));
        match self.headers {
            Headers::Absent => Announcement::default(),
            Headers::Announced => Announcement {
                remaining: Some(Remaining { left, reset }),
                policies: vec![self.limit],
            },
            Headers::Garbled => {
                let mut h = HeaderMap::new();
                h.insert("ratelimit", format!("default;r={left}").parse().unwrap());
                h.insert("ratelimit-policy", "\"default\";q=;w=1".parse().unwrap());
                Announcement::from_headers(&h)
            }
        }
    }
}

/// What a run did: when each request was sent, how long the run took, the
/// most requests ever in flight, and how many the server refused.
struct Run {
    sent: Vec<Duration>,
    elapsed: Duration,
    most_in_flight: usize,
    refused: usize,
}

/// `requests` requests, `parallelism` at a time, each `latency` long,
/// through one limiter, against `server`.
async fn run(
    limiter: Limiter,
    server: Server,
    requests: usize,
    parallelism: usize,
    latency: Duration,
) -> Run {
    let limiter = Arc::new(limiter);
    let server = Arc::new(Mutex::new(server));
    let start = Instant::now();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(Mutex::new((0usize, 0usize)));
    let next = Arc::new(Mutex::new(0usize));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..parallelism {
        let (limiter, server, sent, in_flight, next) = (
            limiter.clone(),
            server.clone(),
            sent.clone(),
            in_flight.clone(),
            next.clone(),
        );
        set.spawn(async move {
            loop {
                {
                    let mut n = next.lock().unwrap();
                    if *n == requests {
                        return;
                    }
                    *n += 1;
                }
                let permit = limiter.acquire().await;
                sent.lock().unwrap().push(start.elapsed());
                {
                    let mut f = in_flight.lock().unwrap();
                    f.0 += 1;
                    f.1 = f.1.max(f.0);
                }
                tokio::time::sleep(latency / 2).await;
                let said = server.lock().unwrap().count(Instant::now());
                tokio::time::sleep(latency / 2).await;
                in_flight.lock().unwrap().0 -= 1;
                permit.answered(&said);
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let mut sent = Arc::try_unwrap(sent).unwrap().into_inner().unwrap();
    sent.sort();
    let refused = server.lock().unwrap().refused;
    let most_in_flight = in_flight.lock().unwrap().1;
    Run {
        sent,
        elapsed: start.elapsed(),
        most_in_flight,
        refused,
    }
}

/// The most requests sent in any window `(t - window, t]`.
fn max_in_window(times: &[Duration], window: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for (end, t) in times.iter().enumerate() {
        while times[start] + window <= *t {
            start += 1;
        }
        best = best.max(end + 1 - start);
    }
    best
}

fn server(limit: &str, headers: Headers) -> Server {
    Server {
        limit: rate(limit),
        headers,
        seen: VecDeque::new(),
        refused: 0,
    }
}

const MS20: Duration = Duration::from_millis(20);

/// 300 requests fit 1,200 per 5 minutes: no request waits for budget, so
/// the run takes what the per-IP pace (95% of 200/s) takes, nothing more.
#[tokio::test(start_paused = true)]
async fn a_run_within_the_budget_never_waits() {
    let limiter = Limiter::new(RateLimit::CLOUDFLARE, RateLimit::CLOUDFLARE_IP, false);
    let r = run(
        limiter,
        server("1200/300", Headers::Announced),
        300,
        64,
        MS20,
    )
    .await;
    assert_eq!((r.sent.len(), r.refused), (300, 0));
    // 300 requests at 93% of 200 a second (after a burst of 4) is 1.59 s;
    // one round trip more for the first answer and the last.
    let paced = Duration::from_secs_f64(296.0 / 186.0);
    assert!(r.elapsed <= paced + 3 * MS20, "took {:?}", r.elapsed);
    // And the binding limit, the per-IP ceiling, holds over every second.
    assert!(max_in_window(&r.sent, Duration::from_secs(1)) <= 200);
}

/// Another client spent 100 of the token's 120 per 30 s: psk's 60 requests
/// draw no 429, however many it could have in flight, and still all go.
#[tokio::test(start_paused = true)]
async fn a_shared_budget_draws_no_429() {
    let mut s = server("120/30", Headers::Announced);
    s.others_spend(100, Instant::now());
    let limiter = Limiter::new(RateLimit::CLOUDFLARE, RateLimit::CLOUDFLARE_IP, false);
    let r = run(limiter, s, 60, 64, MS20).await;
    assert_eq!(r.refused, 0, "the server refused requests");
    assert_eq!(r.sent.len(), 60);
    // 20 fit now, the other 40 once the other client's 100 leave the
    // window, 30 s later.
    assert!(r.elapsed >= Duration::from_secs(30), "{:?}", r.elapsed);
}

/// Concurrency never overshoots `r`: with 5 requests left, 64 tasks never
/// have more than 5 in flight.
#[tokio::test(start_paused = true)]
async fn concurrency_never_overshoots_what_is_left() {
    let mut s = server("120/30", Headers::Announced);
    s.others_spend(115, Instant::now());
    let limiter = Limiter::new(RateLimit::CLOUDFLARE, RateLimit::CLOUDFLARE_IP, false);
    let r = run(limiter, s, 10, 64, MS20).await;
    assert_eq!(r.refused, 0);
    assert!(r.most_in_flight <= 5, "{} in flight", r.most_in_flight);
    // The first 5 go at once (the first alone, until its answer says what
    // is left), the other 5 after the window.
    assert!(r.sent[4] < Duration::from_secs(1), "{:?}", r.sent);
    assert!(r.sent[5] >= Duration::from_secs(30), "{:?}", r.sent);
}

/// Beyond the budget, at 1,200 per 5 minutes for 4,001 requests (a
/// 2,000-tunnel plan and apply), psk holds at least 95% of the limit, and
/// never more than the limit in any window.
#[tokio::test(start_paused = true)]
async fn a_run_beyond_the_budget_holds_95_percent_of_it() {
    // Sliding-window optimum: 1,200 at once, then 1,200 every 300 s, so
    // 4,001 need 900 s and a bit (95% of the rate allows 1,053 s); and
    // issue 9's run, 601 requests at 120 per 30 s, 150 s (158 s at 95%).
    for (limit, requests) in [("1200/300", 4001), ("120/30", 601)] {
        for headers in [Headers::Announced, Headers::Absent] {
            let limit = rate(limit);
            let limiter = Limiter::new(limit, RateLimit::CLOUDFLARE_IP, false);
            let r = run(
                limiter,
                server(&limit.to_string().replace('s', ""), headers),
                requests,
                64,
                MS20,
            )
            .await;
            assert_eq!(r.refused, 0);
            assert!(max_in_window(&r.sent, limit.window) <= limit.requests as usize);
            let achieved = requests as f64 / r.elapsed.as_secs_f64();
            assert!(
                achieved >= 0.95 * limit.per_second(),
                "{limit}: {achieved:.2} requests/s over {:?}",
                r.elapsed
            );
        }
    }
}

/// Without headers, or with garbled ones, psk keeps to its configured limit
/// and is not slowed by them: a limit of 20 per 10 s against a server that
/// allows 20 per 10 s draws no 429.
#[tokio::test(start_paused = true)]
async fn absent_or_garbled_headers_fall_back_to_the_configured_limit() {
    for headers in [Headers::Absent, Headers::Garbled] {
        let limiter = Limiter::new(rate("20/10"), RateLimit::CLOUDFLARE_IP, false);
        let r = run(limiter, server("20/10", headers), 100, 64, MS20).await;
        assert_eq!(r.refused, 0);
        assert_eq!(r.sent.len(), 100);
        assert!(max_in_window(&r.sent, Duration::from_secs(10)) <= 20);
        // Five windows' worth, the first at once: 40 s and a few round trips.
        assert!(r.elapsed < Duration::from_secs(42), "{:?}", r.elapsed);
    }
}

/// A stricter quota the server announces is adopted: configured 1,200 per
/// 5 minutes, announced 30 per 10 s, and the run keeps to 30 per 10 s.
#[tokio::test(start_paused = true)]
async fn a_stricter_announced_quota_wins() {
    let limiter = Limiter::new(RateLimit::CLOUDFLARE, RateLimit::CLOUDFLARE_IP, false);
    let r = run(limiter, server("30/10", Headers::Announced), 100, 64, MS20).await;
    assert_eq!(r.refused, 0);
    assert!(max_in_window(&r.sent, Duration::from_secs(10)) <= 30);
}

/// The per-IP ceiling holds over every one-second window, with the token's
/// limit lifted and 64 in flight.
#[tokio::test(start_paused = true)]
async fn the_per_ip_ceiling_holds_over_every_second() {
    let limiter = Limiter::new(rate("1000000/1"), RateLimit::CLOUDFLARE_IP, false);
    let r = run(
        limiter,
        server("1000000/1", Headers::Absent),
        1000,
        64,
        MS20,
    )
    .await;
    assert!(max_in_window(&r.sent, Duration::from_secs(1)) <= 200);
    // And it is what binds: close to 186 a second.
    assert!(r.elapsed <= Duration::from_secs_f64(996.0 / 186.0) + 3 * MS20);
}

/// A 429 holds every request until its `retry-after` has passed.
#[tokio::test(start_paused = true)]
async fn a_429_holds_every_request() {
    let limiter = Arc::new(Limiter::new(
        RateLimit::CLOUDFLARE,
        RateLimit::CLOUDFLARE_IP,
        false,
    ));
    let start = Instant::now();
    limiter.acquire().await.answered(&Announcement::default());
    limiter.block_for(Duration::from_secs(60));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let l = limiter.clone();
        set.spawn(async move {
            l.acquire().await.unanswered();
            start.elapsed()
        });
    }
    while let Some(t) = set.join_next().await {
        assert!(t.unwrap() >= Duration::from_secs(60));
    }
}

#[test]
fn clones_of_a_client_share_one_limiter() {
    use psk::cloudflare::{Client, ClientOptions, Credentials};
    let a = Client::new(&Credentials::Token("t".into()), ClientOptions::default()).unwrap();
    let b = a.clone();
    let c = Client::new(&Credentials::Token("t".into()), ClientOptions::default()).unwrap();
    assert!(std::ptr::eq(a.limiter(), b.limiter()));
    assert!(!std::ptr::eq(a.limiter(), c.limiter()));
    assert_eq!(a.limiter().limit(), RateLimit::CLOUDFLARE);
    assert_eq!(a.limiter().ip_limit(), RateLimit::CLOUDFLARE_IP);
}
