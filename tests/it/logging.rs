//! `-v`/`PSK_LOG`: logs go to stderr only, leave stdout byte for byte as
//! without them, and are off unless asked. (The no-secrets sweep runs every
//! command at `-vvv`; see no_secrets.rs.)

use crate::common::*;

#[test]
fn logs_are_off_by_default_and_never_touch_stdout() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    let quiet = env.run(&["plan", "--format", "json"]).success();
    assert!(!quiet.stderr.contains("psk::"), "{quiet:?}");

    let loud = to_run(
        env.command(&["plan", "--format", "json"])
            .env("PSK_LOG", "debug")
            .output()
            .unwrap(),
    )
    .success();
    assert!(
        loud.stderr
            .contains("DEBUG psk::cloudflare: HTTP request method=GET"),
        "{loud:?}"
    );
    assert!(loud.stderr.contains("verdict=\"accepted\""), "{loud:?}");
    // Same plan, same bytes: only `evaluated_at` may differ between runs.
    let strip = |s: &str| {
        let mut v: serde_json::Value = serde_json::from_str(s).unwrap();
        v["evaluated_at"] = serde_json::Value::Null;
        v
    };
    assert_eq!(strip(&quiet.stdout), strip(&loud.stdout));

    // -v is info: no per-request lines; -vv adds them.
    let info = env.run(&["plan", "-v"]);
    assert!(
        info.stderr.contains("INFO psk::remote: dry run"),
        "{info:?}"
    );
    assert!(!info.stderr.contains("HTTP request"), "{info:?}");
    let debug = env.run(&["-vv", "plan"]);
    assert!(
        debug.stderr.contains("HTTP request method=POST"),
        "{debug:?}"
    );
    env.assert_no_secrets(&format!("{}{}{}", loud.all(), info.all(), debug.all()));
}

#[test]
fn a_bad_psk_log_is_a_usage_error() {
    let env = TestEnv::new(1);
    let r = to_run(
        env.command(&["validate"])
            .env("PSK_LOG", "loud")
            .output()
            .unwrap(),
    )
    .failure();
    assert!(
        r.stderr.contains(
            "error: PSK_LOG=`loud` is not a log level; use off, error, warn, info, debug or trace"
        ),
        "{r:?}"
    );
    assert!(r.stdout.is_empty(), "{r:?}");
}

/// The shared rate limiter says when it holds a request back.
#[test]
fn rate_limiter_waits_are_logged() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    // Two requests a second: the list and the first dry run go at once,
    // the second dry run waits for a slot, and the log names the cause.
    let r = env.run(&["plan", "-vv", "--rate-limit", "2/1"]).success();
    assert!(
        r.stderr
            .contains("psk::cloudflare::limit: rate limiter: waiting")
            && r.stderr.contains("cause=\"own rate limit\""),
        "{r:?}"
    );
}

/// Apply says how it made its changes durable: group commits at debug,
/// the final fold at info; with logging on, progress is plain lines.
#[test]
fn apply_logs_its_commits_and_the_fold() {
    let mut env = TestEnv::new(6);
    env.start_sandbox();
    let apply = env
        .run(&["-vv", "apply", "--auto-approve", "--parallelism", "3"])
        .success();
    let commits: Vec<&str> = apply
        .stderr
        .lines()
        .filter(|l| l.contains("psk::state::journal: journal commit"))
        .collect();
    // Six intents and six PSKs, fewer lines than changes: the first turn
    // alone commits three intents together.
    assert!(!commits.is_empty() && commits.len() < 12, "{apply:?}");
    assert!(commits[0].contains("changes=3"), "{}", commits[0]);
    assert!(
        apply
            .stderr
            .contains("psk::state::journal: journal folded into the state")
            && apply.stderr.contains("changes=12"),
        "{apply:?}"
    );
    assert!(!apply.stdout.contains("psk::"), "{apply:?}");
    env.assert_no_secrets(&apply.all());
}
