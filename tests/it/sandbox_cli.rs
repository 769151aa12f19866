//! `psk sandbox` as a user runs it: the real binary on a loopback port,
//! with its misbehaviour flags reaching the server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use crate::common::*;

/// Starts `psk sandbox ARGS` on a free loopback port; returns the child and
/// the base URL it printed.
fn serve(env: &TestEnv, args: &[&str]) -> (Child, String) {
    let mut all = vec!["sandbox", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut child = env
        .command(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().expect("psk sandbox printed its URL").unwrap();
        if let Some(url) = line.strip_prefix("export CLOUDFLARE_BASE_URL=") {
            break url.to_string();
        }
    };
    (child, base)
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn statuses(env: &TestEnv, base: &str, n: usize) -> Vec<(u16, Option<String>)> {
    let url = format!("{base}/accounts/{ACCOUNT}/magic/ipsec_tunnels");
    env.block_on(async {
        let http = reqwest::Client::new();
        let mut v = Vec::new();
        for _ in 0..n {
            let r = http.get(&url).bearer_auth("t").send().await.unwrap();
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
            .env("CLOUDFLARE_API_TOKEN", "t")
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
