//! `psk sandbox` as a user runs it: the real binary on a loopback port,
//! with its misbehaviour flags reaching the server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use crate::common::*;

/// Starts `psk sandbox ARGS` on a free loopback port; returns the child and
/// the base URL it printed, after checking it printed the token it accepts.
fn serve(env: &TestEnv, args: &[&str]) -> (Child, String) {
    let (child, printed) = serve_printing(env, args);
    assert!(
        printed.contains(&format!("export CLOUDFLARE_API_TOKEN={SANDBOX_TOKEN}\n")),
        "{printed}"
    );
    let base = printed
        .lines()
        .find_map(|l| l.strip_prefix("export CLOUDFLARE_BASE_URL="))
        .expect("psk sandbox printed its URL")
        .to_string();
    (child, base)
}

/// Starts `psk sandbox ARGS`; returns the child and what it printed up to
/// "Press Ctrl-C to stop.".
fn serve_printing(env: &TestEnv, args: &[&str]) -> (Child, String) {
    let mut all = vec!["sandbox", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut child = env
        .command(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut printed = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("Press Ctrl-C") {
            return (child, printed);
        }
    }
    stop(child);
    panic!("psk sandbox stopped early, having printed:\n{printed}");
}

/// The token `psk sandbox` prints and accepts.
const SANDBOX_TOKEN: &str = "sandbox-token";

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn statuses(env: &TestEnv, base: &str, n: usize) -> Vec<(u16, Option<String>)> {
    let url = format!("{base}/accounts/{ACCOUNT}/magic/ipsec_tunnels");
    env.block_on(async {
        let http = psk::tls::client();
        let mut v = Vec::new();
        for _ in 0..n {
            let r = http
                .get(&url)
                .bearer_auth(SANDBOX_TOKEN)
                .send()
                .await
                .unwrap();
            let ra = r
                .headers()
                .get("retry-after")
                .map(|h| h.to_str().unwrap().to_string());
            v.push((r.status().as_u16(), ra));
        }
        v
    })
}

#[test]
fn rate_limit_flag_blocks_like_cloudflare() {
    let env = TestEnv::new(2);
    let (child, base) = serve(&env, &["--rate-limit", "2/300"]);
    let got = statuses(&env, &base, 3);
    stop(child);
    assert_eq!(got[0].0, 200);
    assert_eq!(got[1].0, 200);
    assert_eq!(got[2], (429, Some("300".into())));
}

#[test]
fn fail_rate_flag_fails_every_request_at_one() {
    let env = TestEnv::new(1);
    let (child, base) = serve(&env, &["--fail-rate", "1", "--seed", "5"]);
    let got = statuses(&env, &base, 3);
    stop(child);
    assert!(got.iter().all(|(s, _)| (500..600).contains(s)), "{got:?}");
}

#[test]
fn the_binary_survives_a_faulty_sandbox_with_its_retries() {
    let env = TestEnv::new(4);
    let (child, base) = serve(&env, &["--fail-rate", "0.3", "--seed", "1"]);
    let run = to_run(
        env.command(&["plan", "--retries", "8"])
            .env("CLOUDFLARE_BASE_URL", &base)
            .env("CLOUDFLARE_API_TOKEN", SANDBOX_TOKEN)
            .env("PSK_TEST_NO_RETRY_DELAY", "1")
            .output()
            .unwrap(),
    );
    stop(child);
    let run = run.success();
    assert!(run.stdout.contains("4 to generate"), "{run:?}");
}

#[test]
fn bad_misbehaviour_values_are_usage_errors() {
    let env = TestEnv::new(1);
    for args in [
        &["sandbox", "--fail-rate", "1.5"][..],
        &["sandbox", "--drop-rate", "-0.1"][..],
        &["sandbox", "--rate-limit", "10"][..],
        &["sandbox", "--latency", "soon"][..],
    ] {
        let run = env.run(args).failure();
        assert!(run.stderr.contains("error:"), "{run:?}");
    }
}

/// psk run against a `psk sandbox` with `credentials` as its environment.
fn plan_with(env: &TestEnv, base: &str, credentials: &[(&str, &str)]) -> Run {
    let mut cmd = env.command(&["plan"]);
    cmd.env("CLOUDFLARE_BASE_URL", base);
    for (k, v) in credentials {
        cmd.env(k, v);
    }
    to_run(cmd.output().unwrap()).with_args(&["plan"])
}

#[test]
fn only_the_printed_credentials_are_accepted() {
    let env = TestEnv::new(2);
    let (child, printed) = serve_printing(&env, &[]);
    let base = printed
        .lines()
        .find_map(|l| l.strip_prefix("export CLOUDFLARE_BASE_URL="))
        .unwrap()
        .to_string();
    // Both schemes it prints, exactly as printed.
    let token = printed
        .lines()
        .find_map(|l| l.strip_prefix("export CLOUDFLARE_API_TOKEN="))
        .unwrap();
    let pair: Vec<(&str, &str)> = printed
        .lines()
        .find_map(|l| l.strip_prefix("# or, as an email and key: export "))
        .expect("the email and key are printed")
        .split(' ')
        .map(|kv| kv.split_once('=').unwrap())
        .collect();
    assert_eq!(
        pair.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        ["CLOUDFLARE_EMAIL", "CLOUDFLARE_API_KEY"]
    );
    let with_token = plan_with(&env, &base, &[("CLOUDFLARE_API_TOKEN", token)]);
    let with_key = plan_with(&env, &base, &pair);
    // Anything else is refused, with psk's message for a wrong credential.
    let wrong_token = plan_with(&env, &base, &[("CLOUDFLARE_API_TOKEN", TOKEN)]);
    let wrong_key = plan_with(
        &env,
        &base,
        &[
            ("CLOUDFLARE_EMAIL", pair[0].1),
            (
                "CLOUDFLARE_API_KEY",
                "0123456789abcdef0123456789abcdef01234",
            ),
        ],
    );
    let malformed = plan_with(&env, &base, &[("CLOUDFLARE_API_TOKEN", "not a token")]);
    stop(child);
    for run in [with_token, with_key] {
        let run = run.success();
        assert!(run.stdout.contains("2 to generate"), "{run:?}");
    }
    for (run, code) in [
        (wrong_token, "code 10000: Authentication error"),
        (wrong_key, "code 9103: Unknown X-Auth-Key or X-Auth-Email"),
        (
            malformed,
            "code 6111: Invalid format for Authorization header",
        ),
    ] {
        let run = run.failure();
        let all = run.all();
        assert!(all.contains(code), "{all}");
        assert!(
            all.contains("hint: the credentials were not accepted"),
            "{all}"
        );
        assert!(!all.contains(TOKEN), "the token leaked: {all}");
        assert!(
            !all.contains("0123456789abcdef0123"),
            "the key leaked: {all}"
        );
        assert!(run.stdout.is_empty(), "{run:?}");
    }
}

/// A port in use says so, and names `--listen`.
#[test]
fn a_port_in_use_names_listen() {
    let env = TestEnv::new(1);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = env.run(&["sandbox", "--listen", &addr]).failure();
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr.starts_with(&format!(
            "error: cannot listen on {addr}: the port is in use"
        )),
        "{run:?}"
    );
    assert!(
        run.stderr
            .contains("hint: choose another address with `--listen`"),
        "{run:?}"
    );
    drop(taken);
}
