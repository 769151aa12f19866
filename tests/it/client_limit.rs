//! The client-side rate limiter under load: 50 concurrent tasks sharing one
//! limiter never exceed the configured count in any window, yet keep close
//! to it. Time is tokio's paused clock, so the schedule is exact and the
//! assertions are on counts, not on how long anything took.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use psk::cloudflare::{Limiter, RateLimit};
use tokio::time::Instant;

/// Grants per task, with 50 tasks: 500 requests in all.
const PER_TASK: usize = 10;
const TASKS: usize = 50;

async fn grants(limit: RateLimit) -> Vec<Duration> {
    let limiter = Arc::new(Limiter::new(limit));
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let limiter = limiter.clone();
        let times = times.clone();
        set.spawn(async move {
            for _ in 0..PER_TASK {
                limiter.acquire().await;
                times.lock().unwrap().push(start.elapsed());
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let mut t = Arc::try_unwrap(times).unwrap().into_inner().unwrap();
    t.sort();
    t
}

/// The most grants in any closed window `[t, t + window]`, over every
/// window that starts at a grant (the worst windows always do).
fn max_in_window(times: &[Duration], window: Duration) -> usize {
    let mut best = 0;
    let mut end = 0;
    for (i, t) in times.iter().enumerate() {
        while end < times.len() && times[end] <= *t + window {
            end += 1;
        }
        best = best.max(end - i);
    }
    best
}

#[tokio::test(start_paused = true)]
async fn fifty_tasks_never_exceed_the_configured_rate() {
    for (requests, secs) in [(20u32, 1u64), (100, 10), (7, 3), (1, 2)] {
        let limit = RateLimit {
            requests,
            window: Duration::from_secs(secs),
        };
        let times = grants(limit).await;
        assert_eq!(times.len(), TASKS * PER_TASK, "every request went out");
        let window = Duration::from_secs(secs);
        let most = max_in_window(&times, window);
        assert!(
            most <= requests as usize,
            "{limit}: {most} requests in one window"
        );
        // Holding the rate also means using it: once the burst is spent,
        // every window of the limit's length carries at least 80% of it.
        let first = times[0];
        let last = *times.last().unwrap();
        let mut t = first;
        while t + window <= last {
            let n = times
                .iter()
                .filter(|x| **x >= t && **x < t + window)
                .count();
            assert!(
                n * 10 >= requests as usize * 8,
                "{limit}: only {n} requests in the window from {t:?}"
            );
            t += window / 2;
        }
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
}
