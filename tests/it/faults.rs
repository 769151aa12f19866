//! psk against a sandbox that misbehaves on purpose: server errors, dropped
//! connections after the change was made, Cloudflare's rate limit, latency.
//! The point: repeated applies converge, and no key is ever lost.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use psk::cloudflare::{Client, ClientOptions, Credentials, RateLimit, RetryPolicy};
use psk::sandbox::SandboxOptions;

/// Runs `psk apply --auto-approve ARGS` until a plan shows no changes, then
/// checks that no key was lost: every tunnel has a key from the edge, no
/// intent is left, and every sealed PSK (opened with the test identity) is
/// the newest ledger entry of its tunnel. Returns the apply exit codes.
fn converge(env: &TestEnv, tunnels: usize, args: &[&str], max_runs: usize) -> Vec<i32> {
    let mut apply_args = vec!["apply", "--auto-approve"];
    apply_args.extend_from_slice(args);
    let mut runs = Vec::new();
    let mut converged = false;
    for _ in 0..max_runs {
        let apply = run_fast(env, &apply_args);
        env.assert_no_secrets(&apply.all());
        if std::env::var_os("PSK_TEST_SHOW").is_some() {
            eprintln!("{apply:?}");
        }
        runs.push(apply.code);
        if apply.code != 0 {
            continue;
        }
        let plan = run_fast(env, &["plan", "--detailed-exitcode"]);
        env.assert_no_secrets(&plan.all());
        if plan.code == 0 {
            assert!(plan.stdout.contains("No changes."), "{plan:?}");
            converged = true;
            break;
        }
    }
    assert!(converged, "no convergence; apply exit codes: {runs:?}");

    let ledger = env.ledger();
    let state = env.state_json();
    for i in 0..tunnels {
        let id = tunnel_id(i);
        let keys = ledger
            .get(&id)
            .unwrap_or_else(|| panic!("{id} never got a key"));
        let record = &state["tunnels"][format!("{ACCOUNT}/{id}")];
        assert!(record["intent"].is_null(), "{id} still has an intent");
        let name = format!("tunnel-{i:02}");
        let show = env
            .run(&["show", &name, "--identity", env.identity.to_str().unwrap()])
            .success();
        assert_eq!(
            show.stdout,
            format!("{}\n", keys.last().unwrap()),
            "the sealed PSK of {name} is not the newest key on the edge"
        );
    }
    runs
}

/// The done-when test: with `--fail-rate 0.1 --drop-rate 0.05`, repeated
/// `psk apply --auto-approve` converges, and no key is lost.
#[test]
fn repeated_apply_converges_under_faults() {
    const TUNNELS: usize = 16;
    let mut env = TestEnv::new(TUNNELS);
    env.start_sandbox_with(SandboxOptions {
        fail_rate: 0.1,
        drop_rate: 0.05,
        seed: Some(7),
        ..SandboxOptions::default()
    });
    let runs = converge(&env, TUNNELS, &["--retries", "1"], 20);
    eprintln!("apply exit codes until convergence: {runs:?}");
    let sb = env.sandbox();
    assert!(
        sb.counters.failed.load(Ordering::Relaxed) > 0,
        "no 5xx seen"
    );
    assert!(
        sb.counters.dropped.load(Ordering::Relaxed) > 0,
        "no dropped connection seen"
    );
}

/// The harsh variant: no retries and a quarter of all answers lost, so
/// lost answers to real generations become interrupted rotations that
/// later applies redo. It still converges without losing a key.
#[test]
fn apply_without_retries_converges_through_interrupted_rotations() {
    const TUNNELS: usize = 6;
    let mut env = TestEnv::new(TUNNELS);
    env.start_sandbox_with(SandboxOptions {
        fail_rate: 0.1,
        drop_rate: 0.25,
        seed: Some(3),
        ..SandboxOptions::default()
    });
    let runs = converge(
        &env,
        TUNNELS,
        // One request at a time, so the seeded faults fall on the same
        // requests in every run.
        &["--retries", "0", "--parallelism", "1"],
        80,
    );
    let redone: usize = env.ledger().values().map(|k| k.len() - 1).sum();
    eprintln!("apply exit codes: {runs:?}; keys superseded on the edge: {redone}");
    assert!(
        redone >= 1,
        "no generated key was lost in flight and superseded: the test lost its point"
    );
}

/// A dropped answer: the sandbox commits the new PSK (ledger, date) and
/// then closes the connection without a word.
#[test]
fn a_dropped_generate_commits_the_key_and_loses_the_answer() {
    let mut env = TestEnv::new(1);
    env.start_sandbox_with(SandboxOptions {
        drop_rate: 1.0,
        ..SandboxOptions::default()
    });
    let url = format!(
        "{}/accounts/{ACCOUNT}/magic/ipsec_tunnels/{}/psk_generate",
        env.base_url(),
        tunnel_id(0)
    );
    let result = env.block_on(async {
        psk::tls::client()
            .post(url)
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({}))
            .send()
            .await
    });
    let err = result.expect_err("no answer may arrive");
    assert!(!err.is_connect(), "the request reached the server: {err}");
    assert_eq!(
        env.ledger()[&tunnel_id(0)].len(),
        1,
        "the key was committed"
    );
    assert_eq!(env.sandbox().counters.dropped.load(Ordering::Relaxed), 1);
    assert_eq!(env.sandbox().counters.generate.load(Ordering::Relaxed), 1);
}

/// Every answer lost, the list call included: apply stops before touching
/// anything, and says what happened after how many tries.
#[test]
fn lost_answers_to_the_refresh_change_nothing() {
    let mut env = TestEnv::new(1);
    env.start_sandbox_with(SandboxOptions {
        drop_rate: 1.0,
        ..SandboxOptions::default()
    });
    let apply = run_fast(&env, &["apply", "--auto-approve", "--retries", "1"]).failure();
    assert!(apply.stderr.contains("after 1 retries"), "{apply:?}");
    assert!(!env.state_path().exists());
    assert_eq!(env.sandbox().counters.dropped.load(Ordering::Relaxed), 2);
    assert_eq!(env.sandbox().counters.generate.load(Ordering::Relaxed), 0);
}

#[test]
fn fail_rate_gives_5xx_before_doing_anything() {
    let mut env = TestEnv::new(1);
    env.start_sandbox_with(SandboxOptions {
        fail_rate: 1.0,
        ..SandboxOptions::default()
    });
    let url = format!(
        "{}/accounts/{ACCOUNT}/magic/ipsec_tunnels/{}/psk_generate",
        env.base_url(),
        tunnel_id(0)
    );
    let (status, body) = env.block_on(async {
        let r = psk::tls::client()
            .post(url)
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert!((500..600).contains(&status), "{status}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["success"], false);
    assert!(v["errors"][0]["code"].as_u64().unwrap() >= 1000);
    assert!(env.ledger().is_empty(), "nothing was generated");
    assert_eq!(env.sandbox().counters.generate.load(Ordering::Relaxed), 0);
}

#[test]
fn the_same_seed_gives_the_same_faults() {
    let statuses = |seed: u64| -> Vec<u16> {
        let mut env = TestEnv::new(1);
        env.start_sandbox_with(SandboxOptions {
            fail_rate: 0.5,
            seed: Some(seed),
            ..SandboxOptions::default()
        });
        let url = format!("{}/accounts/{ACCOUNT}/magic/ipsec_tunnels", env.base_url());
        env.block_on(async {
            let http = psk::tls::client();
            let mut v = Vec::new();
            for _ in 0..24 {
                let r = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
                v.push(r.status().as_u16());
            }
            v
        })
    };
    let a = statuses(42);
    assert_eq!(a, statuses(42));
    assert_ne!(a, statuses(43));
    assert!(a.contains(&200) && a.iter().any(|s| *s >= 500), "{a:?}");
}

/// Cloudflare's rule: over the limit, 429 with `retry-after`, and every
/// request refused until the block ends.
#[test]
fn the_sandbox_rate_limit_blocks_like_cloudflare() {
    let mut env = TestEnv::new(1);
    env.start_sandbox_with(SandboxOptions {
        rate_limit: Some("3/60".parse().unwrap()),
        ..SandboxOptions::default()
    });
    let url = format!("{}/accounts/{ACCOUNT}/magic/ipsec_tunnels", env.base_url());
    let answers = env.block_on(async {
        let http = psk::tls::client();
        let mut v = Vec::new();
        for _ in 0..5 {
            let r = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|h| h.to_str().unwrap().parse::<u64>().unwrap());
            v.push((r.status().as_u16(), retry_after));
        }
        v
    });
    assert_eq!(&answers[..3], &[(200, None), (200, None), (200, None)]);
    assert_eq!(answers[3], (429, Some(60)));
    let (status, wait) = answers[4];
    assert_eq!(status, 429, "still blocked");
    assert!((1..=60).contains(&wait.unwrap()));
    assert_eq!(
        env.sandbox().counters.rate_limited.load(Ordering::Relaxed),
        2
    );
}

/// The sandbox announces the token's budget on every answer, in
/// Cloudflare's two headers, 429 included; other clients spend from it at
/// their own rate; the per-IP limit answers 429 without being announced.
#[test]
fn the_sandbox_announces_its_budget_and_enforces_the_per_ip_limit() {
    let mut env = TestEnv::new(1);
    env.start_sandbox_with(SandboxOptions {
        rate_limit: Some("5/60".parse().unwrap()),
        ip_limit: Some("3/60".parse().unwrap()),
        ..SandboxOptions::default()
    });
    let url = format!("{}/accounts/{ACCOUNT}/magic/ipsec_tunnels", env.base_url());
    let answers = env.block_on(async {
        let http = psk::tls::client();
        let mut v = Vec::new();
        for _ in 0..4 {
            let r = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
            let h = |k: &str| r.headers().get(k).map(|v| v.to_str().unwrap().to_string());
            v.push((r.status().as_u16(), h("ratelimit"), h("ratelimit-policy")));
        }
        v
    });
    let policy = Some(r#""default";q=5;w=60"#.to_string());
    for (i, (status, left, p)) in answers[..3].iter().enumerate() {
        assert_eq!(*status, 200);
        assert_eq!(left, &Some(format!(r#""default";r={};t=60"#, 4 - i)));
        assert_eq!(p, &policy);
    }
    // The fourth from the same address: refused by the per-IP limit,
    // which the headers do not announce.
    assert_eq!(answers[3].0, 429);
    assert_eq!(answers[3].1, None);
    let c = &env.sandbox().counters;
    assert_eq!(c.ip_limited.load(Ordering::Relaxed), 1);
    // Other clients spend what is left, never more.
    assert_eq!(env.sandbox().spend_budget(10), Some((2, 0)));

    // Other clients at a steady 20 a second have spent about 10 of 1,000
    // half a second later.
    let mut env = TestEnv::new(1);
    env.start_sandbox_with(SandboxOptions {
        rate_limit: Some("1000/60".parse().unwrap()),
        other_clients: Some("20/1".parse().unwrap()),
        ..SandboxOptions::default()
    });
    let url = format!("{}/accounts/{ACCOUNT}/magic/ipsec_tunnels", env.base_url());
    let left = env.block_on(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = psk::tls::client()
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        psk::cloudflare::Announcement::from_headers(r.headers())
            .remaining
            .unwrap()
            .left
    });
    assert!((985..=991).contains(&left), "{left} left");
}

/// psk keeps 50 concurrent requests under the sandbox's limit with no
/// margin: an exact limit of 10 per second against the server's 10 draws no
/// 429 (a request holds its slot until a window after its answer, so jitter
/// cannot squeeze two windows into one). Lifted, the same load is refused,
/// unless the server announces its budget: then its word alone keeps psk
/// under it.
#[test]
fn the_client_limiter_keeps_fifty_tasks_under_the_server_limit() {
    let limit: RateLimit = "10/1".parse().unwrap();
    let fire = |client_limit: RateLimit, hide_rate_limit_headers: bool| {
        let mut env = TestEnv::new(1);
        env.start_sandbox_with(SandboxOptions {
            rate_limit: Some(limit),
            hide_rate_limit_headers,
            ..SandboxOptions::default()
        });
        let options = ClientOptions {
            base_url: env.base_url(),
            rate_limit: client_limit,
            parallelism: 50,
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            ..ClientOptions::default()
        };
        let client = Client::new(&Credentials::Token(TOKEN.into()), options).unwrap();
        let results = env.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..50 {
                let c = client.clone();
                set.spawn(async move { c.list_tunnels(ACCOUNT).await.is_ok() });
            }
            let mut ok = 0;
            while let Some(r) = set.join_next().await {
                ok += usize::from(r.unwrap());
            }
            ok
        });
        let limited = env.sandbox().counters.rate_limited.load(Ordering::Relaxed);
        (results, limited)
    };
    let (ok, limited) = fire(limit, true);
    assert_eq!(
        (ok, limited),
        (50, 0),
        "limited: every request went through"
    );
    let (ok, limited) = fire("100000/1".parse().unwrap(), true);
    assert!(
        limited > 0 && ok < 50,
        "lifted, told nothing: {ok} ok, {limited} limited"
    );
    let (ok, limited) = fire("100000/1".parse().unwrap(), false);
    assert_eq!((ok, limited), (50, 0), "lifted, but told the budget");
}

/// Another client of the token has spent most of its budget
/// (`/sandbox/spend`): psk waits for what is left, says so, and draws no
/// 429.
#[test]
fn a_budget_spent_by_another_client_draws_no_429_and_the_wait_shows() {
    let mut env = TestEnv::new(3);
    env.start_sandbox_with(SandboxOptions {
        rate_limit: Some("4/2".parse().unwrap()),
        ..SandboxOptions::default()
    });
    let root = env.base_url().trim_end_matches("/client/v4").to_string();
    let spent: serde_json::Value = env.block_on(async {
        psk::tls::client()
            .post(format!("{root}/sandbox/spend"))
            .body(r#"{"requests": 3}"#)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(spent["result"], serde_json::json!({"spent": 3, "left": 1}));
    for json in [false, true] {
        let args: &[&str] = if json {
            &["plan", "--format", "json"]
        } else {
            &["plan"]
        };
        let run = env.run(args).success();
        assert!(
            run.stderr.contains("note: waiting ") && run.stderr.contains(" s for API budget"),
            "{run:?}"
        );
        assert_eq!(
            run.stderr.matches("note: waiting").count(),
            1,
            "once: {run:?}"
        );
    }
    assert_eq!(
        env.sandbox().counters.rate_limited.load(Ordering::Relaxed),
        0
    );
}

/// Latency longer than `--request-timeout` is a timeout, retried, and
/// named in the last error.
#[test]
fn latency_past_the_request_timeout_is_a_retried_timeout() {
    let mut env = TestEnv::new(1);
    env.start_sandbox_with(SandboxOptions {
        latency: Duration::from_millis(3000),
        ..SandboxOptions::default()
    });
    let run = run_fast(
        &env,
        &["plan", "--request-timeout", "0.2", "--retries", "1"],
    )
    .failure();
    assert!(run.stderr.contains("timed out"), "{run:?}");
    assert!(run.stderr.contains("after 1 retries"), "{run:?}");
    assert_eq!(env.sandbox().counters.requests.load(Ordering::Relaxed), 2);
}

/// A 429 from the sandbox's rate limit: psk says that it waits and for how
/// long (never a URL or header), honours `retry-after`, and then succeeds.
#[test]
fn a_rate_limited_plan_waits_out_the_block_and_says_so() {
    let mut env = TestEnv::new(1);
    env.start_sandbox_with(SandboxOptions {
        rate_limit: Some("1/2".parse().unwrap()),
        // Told nothing, psk finds the limit the hard way.
        hide_rate_limit_headers: true,
        ..SandboxOptions::default()
    });
    // Real delays here: the retry must wait out the 2-second block.
    let run = env.run(&["plan"]).success();
    assert!(
        run.stderr
            .contains("note: HTTP 429 from the API; retrying in 2 s (retry 1 of 3)"),
        "{run:?}"
    );
    assert!(run.stdout.contains("accepted by Cloudflare"), "{run:?}");
    assert_eq!(
        env.sandbox().counters.rate_limited.load(Ordering::Relaxed),
        1
    );
    env.assert_no_secrets(&run.all());
}
