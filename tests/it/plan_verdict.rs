//! Dry runs that fail in passing are "no verdict", a warning; Cloudflare's
//! own refusal still stops the plan. The real binary against the sandbox's
//! fault knobs (5xx, dropped answers, the rate limit), and against a
//! scripted server where an exact 4xx or bulk answer is needed.

use std::sync::atomic::Ordering;

use crate::common::script::{self, failure, success, Step};
use crate::common::*;
use psk::sandbox::SandboxOptions;

fn statuses(plan_json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(plan_json).unwrap();
    v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["dry_run"]["status"].as_str().unwrap().to_string())
        .collect()
}

/// Finds a seed whose faults spare the list call and fall on some, not
/// all, of the dry runs (one request at a time, no retries, so each seed
/// gives the same faults on every run), and returns the environment and
/// the plan's JSON. The sandbox's counters are checked against the plan by
/// the caller, so a seed that stopped doing this would fail loudly.
fn plan_with_faulty_dry_runs(faults: SandboxOptions) -> (TestEnv, Run) {
    const TUNNELS: usize = 4;
    for seed in 0..200 {
        let mut env = TestEnv::new(TUNNELS);
        env.start_sandbox_with(SandboxOptions {
            seed: Some(seed),
            ..faults.clone()
        });
        let plan_file = env.path("plan.json");
        let run = run_fast(
            &env,
            &[
                "plan",
                "--format",
                "json",
                "--retries",
                "0",
                "--parallelism",
                "1",
                "--out",
                plan_file.to_str().unwrap(),
            ],
        );
        if run.code != 0 {
            // The list call itself was hit: no plan at all. Next seed.
            assert!(run.stderr.contains("cannot list"), "{run:?}");
            continue;
        }
        let s = statuses(&run.stdout);
        if s.iter().any(|x| x == "no_verdict") && s.iter().any(|x| x == "accepted") {
            return (env, run);
        }
    }
    panic!("no seed in 0..200 put faults on some dry runs only");
}

fn assert_no_verdict_plan(env: &TestEnv, run: &Run, faulted: u64) {
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let s = statuses(&run.stdout);
    let no_verdicts = s.iter().filter(|x| *x == "no_verdict").count();
    assert_eq!(
        no_verdicts as u64, faulted,
        "one no-verdict per faulted dry run"
    );
    assert_eq!(v["applyable"], true, "{run:?}");
    assert_eq!(v["summary"]["no_verdict"], no_verdicts, "{run:?}");
    assert!(!s.iter().any(|x| x == "refused"), "{run:?}");
    for a in v["actions"].as_array().unwrap() {
        if a["dry_run"]["status"] == "no_verdict" {
            let m = a["dry_run"]["message"].as_str().unwrap();
            assert!(m.starts_with("the dry run itself failed"), "{m}");
        }
    }
    env.assert_no_secrets(&run.all());

    // The saved plan, in every format, says the same and is not refused.
    let file = env.path("plan.json");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    // 2 holds no_verdict; a first plan holds unknown_live_key too (3).
    let version = saved["format_version"].as_u64().unwrap();
    assert!(version >= 2, "a plan holding no_verdict: {version}");
    let human = env.run(&["show-plan", file.to_str().unwrap()]).success();
    assert!(human.stdout.contains("NO VERDICT:"), "{human:?}");
    assert!(
        human.stdout.contains(&format!("{no_verdicts} dry run")),
        "{human:?}"
    );
    assert!(!human.stdout.contains("REFUSED"), "{human:?}");
    let md = env.run(&["show-plan", file.to_str().unwrap(), "--format", "markdown"]);
    assert!(md.stdout.contains("| no verdict: "), "{md:?}");
    assert!(md.stdout.contains("gave no verdict"), "{md:?}");
}

/// A dry run answered with a 5xx after every retry is no verdict; the plan
/// exits 0 (2 under --detailed-exitcode), and applying it rotates every
/// tunnel, the no-verdict ones included.
#[test]
fn a_5xx_dry_run_is_no_verdict_and_apply_still_applies() {
    let (env, run) = plan_with_faulty_dry_runs(SandboxOptions {
        fail_rate: 0.5,
        ..SandboxOptions::default()
    });
    let c = &env.sandbox().counters;
    assert_eq!(c.list.load(Ordering::Relaxed), 1);
    let failed = c.failed.load(Ordering::Relaxed);
    assert!(failed >= 1);
    assert_no_verdict_plan(&env, &run, failed);

    // The same faulty sandbox; retries carry apply through the 5xx.
    applies_every_tunnel_of_the_saved_plan(&env);
}

/// `apply plan.json` on the still faulty sandbox rotates all four tunnels,
/// each sealed key the newest on the edge, and prints no secret.
fn applies_every_tunnel_of_the_saved_plan(env: &TestEnv) {
    let file = env.path("plan.json");
    let apply = run_fast(
        env,
        &[
            "apply",
            file.to_str().unwrap(),
            "--retries",
            "40",
            "--parallelism",
            "1",
        ],
    )
    .success();
    env.assert_no_secrets(&apply.all());
    let (sealed, uncertain) = env.sealed();
    assert!(uncertain.is_empty(), "{uncertain:?}");
    let ledger = env.ledger();
    assert_eq!(sealed.len(), 4, "every tunnel rotated");
    for (id, psk) in &sealed {
        assert_eq!(ledger[id].last(), Some(psk), "{id}: newest key sealed");
    }
}

/// A dry run whose answer was lost (the connection dropped) is no verdict,
/// and the saved plan applies.
#[test]
fn a_dropped_dry_run_is_no_verdict_and_apply_still_applies() {
    let (env, run) = plan_with_faulty_dry_runs(SandboxOptions {
        drop_rate: 0.5,
        ..SandboxOptions::default()
    });
    let c = &env.sandbox().counters;
    let dropped = c.dropped.load(Ordering::Relaxed);
    assert!(dropped >= 1);
    assert!(env.ledger().is_empty(), "a dry run changes nothing");
    assert_no_verdict_plan(&env, &run, dropped);
    applies_every_tunnel_of_the_saved_plan(&env);
}

/// The rate limit: the list call fits, every dry run after it gets 429.
/// No verdict, and the exit codes are those of an accepted plan.
#[test]
fn a_rate_limited_dry_run_is_no_verdict_with_the_exit_codes_of_a_plan() {
    let mut env = TestEnv::new(2);
    env.start_sandbox_with(SandboxOptions {
        rate_limit: Some("1/300".parse().unwrap()),
        // Told nothing, psk finds the limit the hard way.
        hide_rate_limit_headers: true,
        ..SandboxOptions::default()
    });
    let plain = run_fast(&env, &["plan", "--retries", "1"]).success();
    assert!(
        plain
            .stdout
            .contains("NO VERDICT: the dry run itself failed: Cloudflare rate-limited"),
        "{plain:?}"
    );
    assert!(
        plain.stdout.contains("2 dry runs gave no verdict."),
        "{plain:?}"
    );
    assert!(
        plain.stdout.contains("Dry runs: NO VERDICT means"),
        "legend: {plain:?}"
    );
    assert!(!plain.stdout.contains("REFUSED"), "{plain:?}");
    // A fresh sandbox: the first one now refuses everything for 300 s.
    env.start_sandbox_with(SandboxOptions {
        rate_limit: Some("1/300".parse().unwrap()),
        // Told nothing, psk finds the limit the hard way.
        hide_rate_limit_headers: true,
        ..SandboxOptions::default()
    });
    // Changes present: exit 2.
    run_fast(&env, &["plan", "--retries", "0", "--detailed-exitcode"]).code(2);
    assert_eq!(
        env.sandbox().counters.rate_limited.load(Ordering::Relaxed),
        2
    );
}

fn list_answer(n: usize) -> Step {
    let tunnels: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": tunnel_id(i),
                "name": format!("tunnel-{i:02}"),
                "psk_metadata": {"last_generated_on": "2026-01-01T00:00:00Z"},
            })
        })
        .collect();
    Step::json(
        200,
        success(serde_json::json!({ "ipsec_tunnels": tunnels })),
    )
}

/// Runs psk against a scripted server instead of the sandbox.
fn run_scripted(env: &TestEnv, server: &script::Scripted, args: &[&str]) -> Run {
    let out = env
        .command(args)
        .env("PSK_TEST_NO_RETRY_DELAY", "1")
        .env("CLOUDFLARE_BASE_URL", &server.base_url)
        .env("CLOUDFLARE_API_TOKEN", TOKEN)
        .output()
        .unwrap();
    to_run(out).with_args(args)
}

/// Cloudflare's 4xx with its error is a refusal, as before: REFUSED, plan
/// exits 1 (with or without --detailed-exitcode), apply changes nothing,
/// and a saved plan holding it is refused.
#[test]
fn a_4xx_refusal_still_blocks() {
    let env = TestEnv::new(1);
    let refusal = Step::json(
        400,
        failure(1002, "Invalid IPsec tunnel for PSK generation"),
    );
    let server = env.block_on(script::serve(vec![list_answer(1), refusal.clone()]));
    let plan = run_scripted(&env, &server, &["plan", "--detailed-exitcode"]).failure();
    assert!(
        plan.stdout.contains("REFUSED: Cloudflare refused"),
        "{plan:?}"
    );
    assert!(
        plan.stdout
            .contains("Invalid IPsec tunnel for PSK generation"),
        "{plan:?}"
    );
    assert!(!plan.stdout.contains("NO VERDICT"), "{plan:?}");
    assert_eq!(server.requests().len(), 2, "a 400 is not retried");

    let file = env.path("plan.json");
    let server = env.block_on(script::serve(vec![list_answer(1), refusal.clone()]));
    let json = run_scripted(
        &env,
        &server,
        &["plan", "--format", "json", "--out", file.to_str().unwrap()],
    )
    .failure();
    assert_eq!(statuses(&json.stdout), ["refused"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["applyable"], false);
    assert_eq!(v["summary"]["no_verdict"], 0);

    let server = env.block_on(script::serve(vec![list_answer(1), refusal]));
    let apply = run_scripted(&env, &server, &["apply", "--auto-approve"]).failure();
    assert!(apply.stderr.contains("nothing was applied"), "{apply:?}");
    assert_eq!(server.requests().len(), 2, "list and dry run, no rotation");
    assert!(!env.state_path().exists());

    let saved = run_scripted(&env, &server, &["apply", file.to_str().unwrap()]).failure();
    assert!(
        saved.stderr.contains("Cloudflare refused a dry run"),
        "{saved:?}"
    );
}

/// The `local` generator's bulk dry run: a chunk answered 503 after every
/// retry, or dropped, is no verdict for its tunnels.
#[test]
fn a_failed_bulk_dry_run_chunk_is_no_verdict() {
    let env = TestEnv::new(0);
    local_config(&env, 2);
    for fault in [
        Step::json(503, failure(1500, "Internal error")),
        Step::Reset,
    ] {
        let server = env.block_on(script::serve(vec![list_answer(2), fault]));
        let run = run_scripted(
            &env,
            &server,
            &[
                "plan",
                "--format",
                "json",
                "--retries",
                "1",
                "--detailed-exitcode",
            ],
        )
        .code(2);
        assert_eq!(
            statuses(&run.stdout),
            ["no_verdict", "no_verdict"],
            "{run:?}"
        );
        assert_eq!(server.requests().len(), 3, "list, one chunk, one retry");
        assert!(
            server.requests()[1]
                .head
                .contains("/ipsec_tunnels/psk?validate_only=true"),
            "{:?}",
            server.requests()[1].head
        );
    }
}

/// Cloudflare listing a tunnel in `unapplied_psks` is a real refusal; the
/// other tunnel of the same answer is accepted.
#[test]
fn an_unapplied_bulk_dry_run_is_a_refusal() {
    let env = TestEnv::new(0);
    local_config(&env, 2);
    let answer = Step::json(
        200,
        success(serde_json::json!({
            "successfully_applied_psks": {
                tunnel_id(0): {"ipsec_tunnel_id": tunnel_id(0), "psk_metadata": {"last_generated_on": "2026-01-01T00:00:00Z"}}
            },
            "unapplied_psks": {tunnel_id(1): "The IPsec tunnel is being modified"},
        })),
    );
    let server = env.block_on(script::serve(vec![list_answer(2), answer]));
    let run = run_scripted(&env, &server, &["plan", "--format", "json"]).failure();
    assert_eq!(statuses(&run.stdout), ["accepted", "refused"], "{run:?}");
    assert!(
        run.stdout.contains("The IPsec tunnel is being modified"),
        "{run:?}"
    );
}

/// `psk apply` without a saved plan: its own dry run gives no verdict (a
/// 503), it shows the warning and goes ahead, and the rotation's answer is
/// sealed into the state.
#[test]
fn apply_goes_ahead_after_a_dry_run_with_no_verdict() {
    let env = TestEnv::new(1);
    let generated = Step::json(
        200,
        success(serde_json::json!({
            "ipsec_tunnel_id": tunnel_id(0),
            "psk": "scripted-psk-0123456789-abcdefghij",
            "psk_metadata": {"last_generated_on": "2026-11-26T12:00:00Z"},
        })),
    );
    let server = env.block_on(script::serve(vec![
        list_answer(1),
        Step::json(503, failure(1500, "Internal error")),
        generated,
    ]));
    let apply = run_scripted(
        &env,
        &server,
        &["apply", "--auto-approve", "--retries", "0"],
    )
    .success();
    assert!(
        apply
            .stdout
            .contains("NO VERDICT: the dry run itself failed"),
        "{apply:?}"
    );
    assert!(
        apply.stdout.contains("1 dry run gave no verdict"),
        "{apply:?}"
    );
    assert!(
        !apply.all().contains("scripted-psk-0123456789"),
        "{apply:?}"
    );
    let heads: Vec<String> = server.requests().iter().map(|r| r.head.clone()).collect();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert!(
        heads[1].contains("psk_generate?validate_only=true"),
        "{heads:?}"
    );
    assert!(
        heads[2].contains("psk_generate HTTP"),
        "the real rotation: {heads:?}"
    );
    let (sealed, uncertain) = env.sealed();
    assert!(uncertain.is_empty(), "{uncertain:?}");
    assert_eq!(
        sealed.get(&tunnel_id(0)).map(String::as_str),
        Some("scripted-psk-0123456789-abcdefghij")
    );
}

/// `apply --json` counts the dry runs that gave no verdict in its `plan`
/// line, and says the plan is still applyable.
#[test]
fn apply_json_counts_no_verdicts() {
    let env = TestEnv::new(1);
    let server = env.block_on(script::serve(vec![
        list_answer(1),
        Step::json(503, failure(1500, "Internal error")),
        Step::json(
            200,
            success(serde_json::json!({
                "ipsec_tunnel_id": tunnel_id(0),
                "psk": "scripted-psk-0123456789-abcdefghij",
                "psk_metadata": {"last_generated_on": "2026-11-26T12:00:00Z"},
            })),
        ),
    ]));
    let apply = run_scripted(
        &env,
        &server,
        &["apply", "--auto-approve", "--json", "--retries", "0"],
    )
    .success();
    let first: serde_json::Value =
        serde_json::from_str(apply.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "plan", "{first}");
    assert_eq!(first["no_verdict"], 1, "{first}");
    assert_eq!(first["applyable"], true, "{first}");
    assert!(!apply.all().contains("scripted-psk-0123456789"));
}
