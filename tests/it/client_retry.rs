//! Each retry rule of the client, against a scripted server on 127.0.0.1:
//! which answers are retried, how often, after how long, and what the last
//! error says.

use std::time::Duration;

use crate::common::script::{self, failure, success, Step};
use psk::cloudflare::{ApiError, Client, ClientOptions, Credentials, RetryPolicy};
use serde_json::json;

const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const TUNNEL: &str = "c4a7362d577a6c3019a474fd6f485821";

fn client(base_url: &str, retries: u32, no_delay: bool) -> Client {
    let options = ClientOptions {
        base_url: base_url.to_string(),
        retry: RetryPolicy {
            max_attempts: retries + 1,
            no_delay,
            ..RetryPolicy::default()
        },
        request_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    Client::new(&Credentials::Token("retry-test-token".into()), options).unwrap()
}

fn list_ok() -> Step {
    Step::json(
        200,
        success(json!({"ipsec_tunnels": [{
            "id": TUNNEL, "name": "t", "cloudflare_endpoint": "203.0.113.1",
            "interface_address": "10.0.0.0/31",
            "psk_metadata": {"last_generated_on": "2026-11-01T00:00:00Z"}
        }]})),
    )
}

fn unavailable() -> Step {
    Step::json(503, failure(1500, "Service unavailable"))
}

#[tokio::test]
async fn a_429_waits_as_long_as_retry_after_says() {
    let server = script::serve(vec![
        Step::json(429, failure(1015, "You are being rate limited")).header("retry-after", "1"),
        list_ok(),
    ])
    .await;
    let c = client(&server.base_url, 3, false);
    let tunnels = c.list_tunnels(ACCOUNT).await.unwrap();
    assert_eq!(tunnels.len(), 1);
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "one 429, then one retry");
    // The retry came no sooner than the server asked (a lower bound that a
    // sleep guarantees, not a speed claim).
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(1));
}

#[tokio::test]
async fn retry_after_ms_wins_over_retry_after() {
    let server = script::serve(vec![
        Step::json(429, failure(1015, "rate limited"))
            .header("retry-after-ms", "300")
            .header("retry-after", "120"),
        list_ok(),
    ])
    .await;
    let c = client(&server.base_url, 3, false);
    c.list_tunnels(ACCOUNT).await.unwrap();
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(300), "{gap:?}");
    // Had the client slept 120 s, this test would not have finished: the
    // harness's own timeout is the guard, no upper bound is asserted here.
}

#[tokio::test]
async fn a_503_is_retried_until_it_succeeds() {
    let server = script::serve(vec![unavailable(), unavailable(), list_ok()]).await;
    let c = client(&server.base_url, 3, true);
    assert_eq!(c.list_tunnels(ACCOUNT).await.unwrap().len(), 1);
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn every_retryable_status_is_retried() {
    for status in [408u16, 409, 429, 500, 502, 503, 504] {
        let server = script::serve(vec![
            Step::json(status, failure(1500, "transient")),
            list_ok(),
        ])
        .await;
        let c = client(&server.base_url, 3, true);
        c.list_tunnels(ACCOUNT).await.unwrap();
        assert_eq!(server.requests().len(), 2, "HTTP {status}");
    }
}

#[tokio::test]
async fn the_last_error_says_after_how_many_retries() {
    let server = script::serve(vec![unavailable()]).await;
    let c = client(&server.base_url, 3, true);
    let err = c.list_tunnels(ACCOUNT).await.unwrap_err();
    assert_eq!(server.requests().len(), 4, "1 try + 3 retries");
    let text = err.to_string();
    assert!(text.contains("HTTP 503 after 3 retries"), "{text}");
    assert!(err.outcome_unknown(), "a 5xx may have acted");
}

#[tokio::test]
async fn a_reset_connection_is_retried() {
    let server = script::serve(vec![Step::Reset, Step::Reset, list_ok()]).await;
    let c = client(&server.base_url, 3, true);
    assert_eq!(c.list_tunnels(ACCOUNT).await.unwrap().len(), 1);
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn resets_to_the_end_leave_the_outcome_unknown() {
    let server = script::serve(vec![Step::Reset]).await;
    let c = client(&server.base_url, 2, true);
    let err = c.psk_generate(ACCOUNT, TUNNEL, false).await.unwrap_err();
    assert_eq!(server.requests().len(), 3);
    assert!(
        matches!(err, ApiError::Transport { sent: true, .. }),
        "{err:?}"
    );
    assert!(err.outcome_unknown());
    assert!(err.to_string().contains("after 2 retries"), "{err}");
}

#[tokio::test]
async fn x_should_retry_false_stops_at_once() {
    let server = script::serve(vec![
        unavailable().header("x-should-retry", "false"),
        list_ok(),
    ])
    .await;
    let c = client(&server.base_url, 3, true);
    let err = c.list_tunnels(ACCOUNT).await.unwrap_err();
    assert_eq!(server.requests().len(), 1, "no retry");
    let text = err.to_string();
    assert!(text.contains("HTTP 503"), "{text}");
    assert!(!text.contains("retries"), "{text}");
}

#[tokio::test]
async fn x_should_retry_true_retries_even_a_400() {
    let server = script::serve(vec![
        Step::json(400, failure(1001, "try again")).header("x-should-retry", "true"),
        list_ok(),
    ])
    .await;
    let c = client(&server.base_url, 3, true);
    c.list_tunnels(ACCOUNT).await.unwrap();
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_plain_400_is_not_retried() {
    let server = script::serve(vec![Step::json(400, failure(1001, "bad")), list_ok()]).await;
    let c = client(&server.base_url, 3, true);
    let err = c.list_tunnels(ACCOUNT).await.unwrap_err();
    assert_eq!(server.requests().len(), 1);
    assert!(!err.outcome_unknown(), "a 4xx did nothing");
}

#[tokio::test]
async fn a_refused_connection_is_retried_and_known_not_sent() {
    // Bind then drop, so the port is (almost surely) closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = client(&format!("http://127.0.0.1:{port}/client/v4"), 2, true);
    let err = c.psk_generate(ACCOUNT, TUNNEL, false).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Transport {
                sent: false,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        !err.outcome_unknown(),
        "a refused connection never reached Cloudflare"
    );
    assert!(err.to_string().contains("after 2 retries"), "{err}");
}

#[tokio::test]
async fn a_retried_generate_keeps_the_newest_answer() {
    let gen = |psk: &str, at: &str| {
        Step::json(
            200,
            success(json!({"ipsec_tunnel_id": TUNNEL, "psk": psk,
                "psk_metadata": {"last_generated_on": at}})),
        )
    };
    let server = script::serve(vec![
        Step::Reset,
        gen("newest-key-0123456789", "2026-11-26T12:00:01Z"),
    ])
    .await;
    let c = client(&server.base_url, 3, true);
    let g = c
        .psk_generate(ACCOUNT, TUNNEL, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g.psk.expose(), "newest-key-0123456789");
    assert_eq!(g.attempt, 2, "the answer came from the second try");
    assert_eq!(
        g.last_generated_on.unwrap().to_rfc3339(),
        "2026-11-26T12:00:01+00:00"
    );
    // psk_generate sends the JSON body the schema requires.
    for seen in server.requests() {
        assert_eq!(seen.body, b"{}");
        assert!(seen
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
    }
}

#[tokio::test]
async fn a_request_timeout_is_retried() {
    // A server that accepts and never answers: each try times out.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    let options = ClientOptions {
        base_url: format!("http://{addr}/client/v4"),
        request_timeout: Duration::from_millis(200),
        retry: RetryPolicy {
            max_attempts: 3,
            no_delay: true,
            ..RetryPolicy::default()
        },
        ..ClientOptions::default()
    };
    let c = Client::new(&Credentials::Token("t".into()), options).unwrap();
    let err = c.list_tunnels(ACCOUNT).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("timed out"), "{text}");
    assert!(text.contains("after 2 retries"), "{text}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn every_request_says_who_is_calling() {
    let server = script::serve(vec![list_ok()]).await;
    let c = client(&server.base_url, 0, true);
    c.list_tunnels(ACCOUNT).await.unwrap();
    let head = server.requests()[0].head.to_ascii_lowercase();
    assert!(
        head.contains(&format!("user-agent: psk/{}", env!("CARGO_PKG_VERSION"))),
        "{head}"
    );
    assert!(head.contains("authorization: bearer retry-test-token"));
}

#[tokio::test]
async fn the_key_scheme_sends_email_and_key() {
    let server = script::serve(vec![list_ok()]).await;
    let options = ClientOptions {
        base_url: server.base_url.clone(),
        ..ClientOptions::default()
    };
    let c = Client::new(
        &Credentials::Key {
            email: "ops@example.com".into(),
            key: "global-key-xyz".into(),
        },
        options,
    )
    .unwrap();
    c.list_tunnels(ACCOUNT).await.unwrap();
    let head = server.requests()[0].head.to_ascii_lowercase();
    assert!(head.contains("x-auth-email: ops@example.com"), "{head}");
    assert!(head.contains("x-auth-key: global-key-xyz"), "{head}");
    assert!(!head.contains("authorization:"), "{head}");
}
