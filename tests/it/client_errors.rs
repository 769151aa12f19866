//! Errors a person can act on, and never a PSK or a credential in them:
//! each message of the client against a scripted server (and the sandbox
//! where it can produce the case itself).

use std::time::Duration;

use crate::common::script::{self, failure, success, Step};
use crate::common::*;
use psk::cloudflare::{ApiError, Client, ClientOptions, Credentials, PskEntry, RetryPolicy};
use psk::seal::Psk;
use serde_json::json;

const TUNNEL: &str = "c4a7362d577a6c3019a474fd6f485821";
const SECRET_PSK: &str = "Zq9SECRETpskNeverPrintMe42";

fn client(base_url: &str) -> Client {
    let options = ClientOptions {
        base_url: base_url.to_string(),
        retry: RetryPolicy {
            max_attempts: 2,
            no_delay: true,
            ..RetryPolicy::default()
        },
        request_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    Client::new(&Credentials::Token(TOKEN.into()), options).unwrap()
}

/// The error's text, checked for secrets at every verbosity psk has: the
/// message and the Debug form.
fn text(err: &ApiError) -> String {
    let shown = format!("{err}\n{err:?}");
    assert!(!shown.contains(TOKEN), "token leaked: {shown}");
    assert!(!shown.contains(SECRET_PSK), "PSK leaked: {shown}");
    shown
}

async fn generate_error(step: Step) -> String {
    let server = script::serve(vec![step]).await;
    let err = client(&server.base_url)
        .psk_generate(ACCOUNT, TUNNEL, false)
        .await
        .unwrap_err();
    text(&err)
}

#[tokio::test]
async fn a_401_names_the_permissions_needed() {
    let t = generate_error(Step::json(401, failure(10000, "Authentication error"))).await;
    assert!(t.contains("HTTP 401"), "{t}");
    assert!(t.contains("Magic WAN Write"), "{t}");
    assert!(t.contains("Magic Transit Write"), "{t}");
    assert!(t.contains("CLOUDFLARE_API_TOKEN"), "{t}");
}

#[tokio::test]
async fn a_403_names_the_permissions_needed() {
    let t = generate_error(Step::json(
        403,
        failure(9109, "Unauthorized to access requested resource"),
    ))
    .await;
    assert!(t.contains("HTTP 403"), "{t}");
    assert!(t.contains("code 9109: Unauthorized"), "{t}");
    assert!(
        t.contains("\"Magic WAN Write\" or \"Magic Transit Write\""),
        "{t}"
    );
    // A token of another account is refused alike: the hint says so.
    assert!(t.contains("check `account_id` in psk.yaml"), "{t}");
}

#[tokio::test]
async fn a_refused_connection_points_at_the_base_url_and_the_sandbox() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = client(&format!("http://{closed}/client/v4"))
        .list_tunnels(ACCOUNT)
        .await
        .unwrap_err();
    let t = text(&err);
    assert!(t.contains("could not connect"), "{t}");
    assert!(t.contains("CLOUDFLARE_BASE_URL"), "{t}");
    assert!(t.contains("`psk sandbox`"), "{t}");
    assert!(t.contains("--sandbox"), "{t}");
}

#[tokio::test]
async fn a_404_names_the_tunnel_and_the_account() {
    let t = generate_error(Step::json(404, failure(1003, "IPsec tunnel not found"))).await;
    assert!(t.contains(&format!("tunnel {TUNNEL}")), "{t}");
    assert!(t.contains(&format!("account {ACCOUNT}")), "{t}");
    let server = script::serve(vec![Step::json(404, failure(7003, "No route"))]).await;
    let err = client(&server.base_url)
        .list_tunnels(ACCOUNT)
        .await
        .unwrap_err();
    let t = text(&err);
    assert!(
        t.contains(&format!("account {ACCOUNT} was not found")),
        "{t}"
    );
}

#[tokio::test]
async fn code_1012_says_the_account_is_not_onboarded() {
    let t = generate_error(Step::json(
        400,
        failure(1012, "account is not entitled to Magic Transit"),
    ))
    .await;
    assert!(t.contains("code 1012"), "{t}");
    assert!(
        t.contains("not onboarded to Magic WAN or Magic Transit"),
        "{t}"
    );
}

#[tokio::test]
async fn a_body_that_is_not_json_says_so() {
    let t = generate_error(Step::raw(200, "<html>gateway</html>")).await;
    assert!(t.contains("not JSON"), "{t}");
    assert!(!t.contains("gateway"), "bodies are never quoted: {t}");
}

#[tokio::test]
async fn a_truncated_body_says_so_without_quoting_the_psk() {
    let body = format!(
        "{{\"success\":true,\"errors\":[],\"messages\":[],\"result\":{{\"psk\":\"{SECRET_PSK}"
    );
    let t = generate_error(Step::raw(200, &body)).await;
    assert!(t.contains("truncated"), "{t}");
}

#[tokio::test]
async fn an_empty_body_says_so() {
    let t = generate_error(Step::raw(200, "")).await;
    assert!(t.contains("body is empty"), "{t}");
}

#[tokio::test]
async fn a_wrong_shape_never_quotes_the_value() {
    // `psk_metadata.last_generated_on` as a number: serde would quote the
    // whole value in its message; psk does not.
    let t = generate_error(Step::json(
        200,
        success(json!({"psk": SECRET_PSK, "psk_metadata": {"last_generated_on": [SECRET_PSK]}})),
    ))
    .await;
    assert!(t.contains("does not have the shape"), "{t}");
}

#[tokio::test]
async fn success_false_with_http_200_is_an_error_that_says_so() {
    let t = generate_error(Step::json(200, failure(1000, "something went wrong"))).await;
    assert!(t.contains("HTTP 200"), "{t}");
    assert!(t.contains("`success: false`"), "{t}");
    assert!(t.contains("code 1000: something went wrong"), "{t}");
}

#[tokio::test]
async fn a_5xx_html_page_is_named_as_such() {
    let t = generate_error(Step::raw(502, "<html>Bad gateway</html>")).await;
    assert!(t.contains("HTTP 502 after 1 retries"), "{t}");
    assert!(t.contains("not Cloudflare's error envelope"), "{t}");
}

#[tokio::test]
async fn missing_psk_in_a_generate_answer_says_the_key_is_unknown() {
    let t = generate_error(Step::json(200, success(json!({"ipsec_tunnel_id": TUNNEL})))).await;
    assert!(t.contains("no `result.psk`"), "{t}");
}

#[test]
fn debug_forms_hide_credentials_and_psks() {
    let c = Client::new(&Credentials::Token(TOKEN.into()), ClientOptions::default()).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    let k = Credentials::Key {
        email: "ops@example.com".into(),
        key: TOKEN.into(),
    };
    assert!(!format!("{k:?}").contains(TOKEN));
    let e = PskEntry {
        tunnel_id: TUNNEL.into(),
        psk: Psk::new(SECRET_PSK.into()),
    };
    assert!(!format!("{e:?}").contains(SECRET_PSK));
}

/// The real binary against the sandbox: a sandbox refuses requests with no
/// credentials (401), and an account the token cannot use (403); psk's
/// message names the permissions.
#[test]
fn the_binary_explains_a_403_from_the_sandbox() {
    let mut env = TestEnv::new(1);
    // The sandbox holds the tunnels of this config...
    env.start_sandbox();
    // ...and psk asks about another account.
    let other = "ffffffffffffffffffffffffffffffff";
    env.write_config(&config_text(&env.recipient, 1, "90d").replace(ACCOUNT, other));
    let run = env.run(&["plan"]).failure();
    assert!(run.stderr.contains("HTTP 403"), "{run:?}");
    assert!(run.stderr.contains("Magic Transit Write"), "{run:?}");
    assert!(run.stderr.contains(other), "{run:?}");
    env.assert_no_secrets(&run.all());

    let raw = env.block_on(async {
        psk::tls::client()
            .get(format!(
                "{}/accounts/{ACCOUNT}/magic/ipsec_tunnels",
                env.base_url()
            ))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(raw.status(), 400, "no credentials: Cloudflare's code 9106");
}

#[tokio::test]
async fn a_password_in_the_base_url_is_never_shown() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = client(&format!(
        "http://proxy-user:pr0xy-pa55@127.0.0.1:{port}/client/v4"
    ));
    assert!(!format!("{c:?}").contains("pr0xy-pa55"));
    let err = c.list_tunnels(ACCOUNT).await.unwrap_err();
    let t = text(&err);
    assert!(!t.contains("pr0xy-pa55"), "{t}");
    assert!(t.contains("proxy-user:****@127.0.0.1"), "{t}");
}

/// psk's whole message for credentials the sandbox does not accept, as
/// Cloudflare refuses them: a wrong token (403, code 10000) and a malformed
/// one (400, code 6003 with its chain). Neither is retried.
#[test]
fn the_binary_explains_refused_credentials_from_the_sandbox() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    let mut shown = String::new();
    for token in ["someone-elses-token", "two words"] {
        let run = to_run(
            env.command(&["plan"])
                .env("CLOUDFLARE_API_TOKEN", token)
                .output()
                .unwrap(),
        )
        .with_args(&["plan"])
        .failure();
        assert!(!run.all().contains(token), "{run:?}");
        shown.push_str(&env.snapshot(&run));
    }
    insta::assert_snapshot!("refused_credentials", shown);
    assert_eq!(
        env.sandbox()
            .counters
            .unauthorized
            .load(std::sync::atomic::Ordering::Relaxed),
        2,
        "one request each: a refusal is final"
    );
}
