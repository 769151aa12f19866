//! Credentials and keys never travel in the clear: plain HTTP only to a
//! loopback host, refused before any I/O; redirects never followed (and a
//! redirected rotation is an interrupted one); the proxy named in `-v`
//! and handed only a `CONNECT`; identity files others can read warned
//! about by every command that opens keys.

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::common::script::{self, Step};
use crate::common::*;
use psk::cloudflare::{ApiError, Client, ClientOptions, Credentials, Failure, RetryPolicy};

/// A loopback listener psk must never reach: whatever connects is seen.
fn tripwire() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

/// The only road to a remote `http://` host is the proxy variables, all
/// pointed at a listener on 127.0.0.1: without the refusal, reqwest would
/// hand it the request, token and all. Nothing connects, and the error
/// names the URL with its password masked.
#[test]
fn plain_http_to_a_remote_host_is_refused_before_any_request() {
    let env = TestEnv::new(1);
    let (listener, proxy) = tripwire();
    for base in [
        "http://user:hunter2@api.example.test/client/v4",
        "http://10.1.2.3:8787/client/v4",
        "http://0.0.0.0:8787/client/v4",
    ] {
        let run = env
            .command(&["plan", "--retries", "0", "--request-timeout", "3s"])
            .env("CLOUDFLARE_BASE_URL", base)
            .env("CLOUDFLARE_API_TOKEN", TOKEN)
            .env("HTTP_PROXY", &proxy)
            .env("http_proxy", &proxy)
            .env("ALL_PROXY", &proxy)
            .output()
            .unwrap();
        let run = to_run(run).failure();
        let shown = base.replace("hunter2", "****");
        assert!(
            run.stderr
                .contains(&format!("refusing to send the API token to {shown}")),
            "{run:?}"
        );
        assert!(run.stderr.contains("unencrypted"), "{run:?}");
        assert!(run.stderr.contains("https://"), "{run:?}");
        assert!(!run.all().contains("hunter2"), "{run:?}");
        assert!(!run.all().contains(TOKEN), "{run:?}");
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("psk connected to the proxy: {other:?}"),
    }
}

fn client(base_url: &str) -> Client {
    let options = ClientOptions {
        base_url: base_url.to_string(),
        retry: RetryPolicy {
            max_attempts: 3,
            no_delay: true,
            ..RetryPolicy::default()
        },
        // A followed redirect would hang on the tripwire's backlog.
        request_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    Client::new(&Credentials::Token(TOKEN.into()), options).unwrap()
}

/// A 3xx on a read is an error naming the status and the (masked)
/// `Location`; it is neither followed nor retried.
#[tokio::test]
async fn a_redirect_is_an_error_and_is_not_followed() {
    let (listener, elsewhere) = tripwire();
    let location = elsewhere.replace("http://", "http://user:hunter2@") + "/client/v4/x";
    for status in [301, 302, 307, 308] {
        let server = script::serve(vec![Step::raw(status, "").header("location", &location)]).await;
        let err = client(&server.base_url)
            .list_tunnels(ACCOUNT)
            .await
            .unwrap_err();
        let text = format!("{err}\n{err:?}");
        assert!(text.contains(&format!("HTTP {status}")), "{text}");
        assert!(
            text.contains(&location.replace("hunter2", "****")),
            "{text}"
        );
        assert!(!text.contains("hunter2") && !text.contains(TOKEN), "{text}");
        assert!(matches!(err, ApiError::Redirected { .. }), "{err:?}");
        assert_eq!(err.failure(), Failure::Redirected);
        assert!(err.outcome_unknown(), "a redirected POST may have acted");
        assert!(!err.is_transient(), "it would only be redirected again");
        assert_eq!(server.requests().len(), 1, "sent once, never again");
    }
    assert!(listener.accept().is_err(), "the redirect was followed");
}

/// Forwards to the sandbox, except that a real PSK change (which the
/// sandbox carries out: the key on the edge changes) is answered with a
/// 307 to `location`. Counts the changes it answered so.
struct Redirecting {
    upstream: String,
    location: String,
    http: reqwest::Client,
    redirected: AtomicUsize,
}

async fn redirect_changes(
    State(r): State<Arc<Redirecting>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().unwrap().as_str().to_string();
    let mut req = r
        .http
        .request(method.clone(), format!("{}{path}", r.upstream));
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let resp = req.body(body.to_vec()).send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let bytes = resp.bytes().await.unwrap();
    if method == Method::POST && !path.contains("validate_only=true") {
        r.redirected.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", r.location.clone())],
            "",
        )
            .into_response();
    }
    (
        status,
        [("content-type", "application/json")],
        bytes.to_vec(),
    )
        .into_response()
}

/// The done-when for redirects through the real binary, for both ways of
/// rotating: the change's answer was a 307, so the key on the edge is
/// unknown (the sandbox did change it). apply fails and says so, nothing
/// follows the redirect or re-sends the change, the next plan rotates the
/// tunnel again (`interrupted`, or `pending` for a key psk made), and that
/// converges on the key the edge holds.
#[test]
fn a_redirected_psk_generate_is_an_interrupted_rotation() {
    redirected_change(
        "cloudflare",
        "the next plan rotates this tunnel again",
        "interrupted",
    );
}

#[test]
fn a_redirected_bulk_set_leaves_the_key_pending() {
    redirected_change("local", "The PSK stays pending in the state", "pending");
}

fn redirected_change(generator: &str, said: &str, reason: &str) {
    let mut env = TestEnv::new(0);
    env.write_config(&config_text(&env.recipient, 1, "90d").replace(
        "    site_parallel: true\n",
        &format!("    site_parallel: true\n    generator: {generator}\n"),
    ));
    env.start_sandbox();
    let (listener, elsewhere) = tripwire();
    let location = format!(
        "{}/client/v4/accounts/{ACCOUNT}/magic/ipsec_tunnels",
        elsewhere.replace("http://", "http://user:hunter2@"),
    );
    let front = Arc::new(Redirecting {
        upstream: env.base_url().trim_end_matches("/client/v4").to_string(),
        location: location.clone(),
        http: psk::tls::client(),
        redirected: AtomicUsize::new(0),
    });
    let state = front.clone();
    let addr = env.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(redirect_changes)
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    let apply = env
        .command(&["apply", "--auto-approve", "--request-timeout", "5s"])
        .env("CLOUDFLARE_BASE_URL", format!("http://{addr}/client/v4"))
        .env("PSK_TEST_NO_RETRY_DELAY", "1")
        .output()
        .unwrap();
    let apply = to_run(apply).failure();
    let all = apply.all();
    assert!(all.contains("HTTP 307"), "{apply:?}");
    assert!(
        all.contains(&location.replace("hunter2", "****")),
        "{apply:?}"
    );
    assert!(all.contains(said), "{apply:?}");
    env.assert_no_secrets(&all);
    assert!(!all.contains("hunter2"), "{apply:?}");
    assert_eq!(front.redirected.load(Ordering::SeqCst), 1, "not re-sent");
    assert!(listener.accept().is_err(), "the redirect was followed");
    assert_eq!(env.ledger()[&tunnel_id(0)].len(), 1, "the edge did change");
    let (_, uncertain) = env.sealed();
    assert_eq!(uncertain, vec![tunnel_id(0)], "the state knows it may have");

    let plan = env.run(&["plan", "--detailed-exitcode"]).code(2);
    assert!(plan.stdout.contains(reason), "{plan:?}");
    env.run(&["apply", "--auto-approve"]).success();
    env.run(&["plan", "--detailed-exitcode"]).success();
    let (opened, uncertain) = env.sealed();
    assert!(uncertain.is_empty());
    assert_eq!(
        opened[&tunnel_id(0)],
        *env.ledger()[&tunnel_id(0)].last().unwrap(),
        "the state holds the key on the edge"
    );
}

/// An `https://` API behind `HTTPS_PROXY`: the proxy (a listener here)
/// gets a `CONNECT` to the API's host and nothing else, so the token would
/// travel only inside TLS; `-v` names the proxy with its password masked.
#[test]
fn the_proxy_gets_only_a_connect_and_verbose_names_it() {
    let env = TestEnv::new(1);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = conn.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
        String::from_utf8_lossy(&head).into_owned()
    });
    let run = env
        .command(&["plan", "-v", "--retries", "0"])
        .env("CLOUDFLARE_BASE_URL", "https://api.example.test/client/v4")
        .env("CLOUDFLARE_API_TOKEN", TOKEN)
        .env(
            "HTTPS_PROXY",
            format!("http://proxy-user:hunter2@127.0.0.1:{port}"),
        )
        .output()
        .unwrap();
    let run = to_run(run).failure();
    let head = seen.join().unwrap();
    assert!(
        head.starts_with("CONNECT api.example.test:443 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(!head.contains(TOKEN), "the token reached the proxy: {head}");
    assert!(
        !head.to_ascii_lowercase().contains("\r\nauthorization:"),
        "{head}"
    );
    assert!(
        run.stderr.contains(&format!(
            "proxy=http://proxy-user:****@127.0.0.1:{port}/ (from HTTPS_PROXY)"
        )),
        "{run:?}"
    );
    assert!(!run.all().contains("hunter2"), "{run:?}");
    assert!(!run.all().contains(TOKEN), "{run:?}");
}

/// The sandbox's own URL goes straight to it, whatever proxy is set.
#[test]
fn a_loopback_base_url_is_never_proxied() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    let (listener, proxy) = tripwire();
    let run = env
        .command(&["plan", "-v", "--retries", "0", "--request-timeout", "5s"])
        .env("HTTP_PROXY", &proxy)
        .env("HTTPS_PROXY", &proxy)
        .env("ALL_PROXY", &proxy)
        .output()
        .unwrap();
    let run = to_run(run).success();
    assert!(
        run.stderr
            .contains("proxy=none (a loopback host is never proxied)"),
        "{run:?}"
    );
    assert!(listener.accept().is_err(), "the proxy was used");
}

/// show, export, deliver and reseal each warn about an identity file
/// others can read, naming it and the chmod that fixes it, and go on;
/// a private file gets no warning.
#[cfg(unix)]
#[test]
fn an_identity_file_others_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = TestEnv::new(0);
    let text = config_text(&env.recipient, 2, "90d").replace(
        "    site_parallel: true\n",
        "    site_parallel: true\n    deliver: [\"/bin/sh\", \"-c\", \"cat > /dev/null\"]\n",
    );
    env.write_config(&text);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    let id = env.identity.to_str().unwrap().to_string();
    let chmod = |m: u32| {
        std::fs::set_permissions(&env.identity, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let warning =
        format!("the age identity file {id} is accessible by group or others (mode 0644)");
    let fix = format!("hint: chmod 600 {id}");

    chmod(0o644);
    let mut runs = vec![
        env.run(&["show", "tunnel-00", "-i", &id]).success(),
        env.run(&["export", "-i", &id]).success(),
        env.run(&["deliver", "tunnel-01", "-i", &id]).success(),
    ];
    let by_env = env
        .command(&["show", "tunnel-01"])
        .env("PSK_AGE_KEY_FILE", &id)
        .output()
        .unwrap();
    runs.push(to_run(by_env).success());
    // A second recipient: the state must be resealed, with the identity.
    let other = age::x25519::Identity::generate().to_public().to_string();
    env.write_config(&text.replace("recipients:\n", &format!("recipients:\n  - {other}\n")));
    runs.push(env.run(&["reseal", "-i", &id]).success());
    for run in &runs {
        assert!(run.stderr.contains(&warning), "{run:?}");
        assert!(run.stderr.contains(&fix), "{run:?}");
    }

    chmod(0o600);
    let quiet = env.run(&["show", "tunnel-00", "-i", &id]).success();
    assert_eq!(quiet.stderr, "", "{quiet:?}");
}
