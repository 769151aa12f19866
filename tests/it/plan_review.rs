//! `psk plan` as a reviewer meets it: refresh, drift, formats, saved plans,
//! --replace/--target and exit codes, with the real binary and sandbox.

use std::sync::atomic::Ordering;

use crate::common::*;

fn plan_file(env: &TestEnv) -> String {
    env.path("plan.json").to_str().unwrap().to_string()
}

#[test]
fn refresh_is_one_list_call_per_account() {
    let mut env = TestEnv::new(0);
    let other = "99999999999999999999999999999999";
    let mut text = config_text(&env.recipient, 6, "90d");
    for i in 6..10 {
        text.push_str(&format!(
            "  - name: other-{i}\n    id: {}\n    account_id: {other}\n",
            tunnel_id(i)
        ));
    }
    env.write_config(&text);
    env.start_sandbox();
    let run = env.run(&["plan"]).success();
    assert!(
        run.stdout
            .contains("Plan: 0 to rotate, 10 to generate, 0 to reseal, 0 to forget."),
        "{run:?}"
    );
    let c = &env.sandbox().counters;
    assert_eq!(
        c.list.load(Ordering::Relaxed),
        2,
        "one list call per account"
    );
    assert_eq!(c.get.load(Ordering::Relaxed), 0, "never one GET per tunnel");
}

#[test]
fn drift_outside_psk_is_a_rotation_with_its_date() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    env.rotate_outside_psk(&tunnel_id(1));
    let run = env.run(&["plan", "--detailed-exitcode"]);
    insta::assert_snapshot!("drift", env.snapshot(&run));
    // The snapshot hides dates; the drift is dated today.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(
        run.stdout
            .contains(&format!("changed outside psk on {today}")),
        "{run:?}"
    );
    // Offline, drift cannot be seen: the plan says so instead.
    let offline = env.run(&["plan", "--offline", "--detailed-exitcode"]);
    insta::assert_snapshot!("drift_offline", env.snapshot(&offline));
}

#[test]
fn tunnel_missing_at_cloudflare_is_an_error_naming_it() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    let mut text = config_text(&env.recipient, 2, "90d");
    text.push_str("  - name: ghost\n    id: 00000000000000000000000000000bad\n");
    env.write_config(&text);
    let run = env.run(&["plan"]).failure();
    assert!(run.stderr.contains("ghost (id 00000000000000000000000000000bad) in account 023e105f4ecef8ad9ca31a8372d0c353"), "{run:?}");
}

#[test]
fn detailed_exitcode_in_every_case() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    // Changes, online and offline; without the flag, changes exit 0.
    env.run(&["plan", "--detailed-exitcode"]).code(2);
    env.run(&["plan", "--detailed-exitcode", "--offline"])
        .code(2);
    env.run(&["plan"]).success();
    env.run(&["apply", "--auto-approve"]).success();
    // No changes; a usage error; a bad psk.yaml.
    env.run(&["plan", "--detailed-exitcode"]).success();
    env.run(&["plan", "--detailed-exitcode", "--bogus"])
        .failure();
    env.write_config("version: 1\n");
    env.run(&["plan", "--detailed-exitcode"]).failure();
}

#[test]
fn replace_and_target() {
    let mut env = TestEnv::new(3);
    env.start_sandbox();
    // One at a time: tunnel-00 is rotated first, so it is the next due.
    env.run(&["apply", "--auto-approve", "--parallelism", "1"])
        .success();

    let run = env.run(&["plan", "--replace", "tunnel-02"]);
    insta::assert_snapshot!("replace", env.snapshot(&run));
    let unknown = env.run(&["plan", "--replace", "nope"]);
    insta::assert_snapshot!("replace_unknown", env.snapshot(&unknown));
    let later = (chrono::Utc::now() + chrono::TimeDelta::days(100)).to_rfc3339();
    let targeted = env.run(&["plan", "--offline", "--at", &later, "--target", "tunnel-00"]);
    insta::assert_snapshot!("target", env.snapshot(&targeted));

    let before = env.ledger();
    env.run(&["apply", "--auto-approve", "--replace", "tunnel-01"])
        .success();
    let after = env.ledger();
    assert_eq!(after[&tunnel_id(1)].len(), before[&tunnel_id(1)].len() + 1);
    assert_eq!(after[&tunnel_id(0)].len(), before[&tunnel_id(0)].len());
}

#[test]
fn saved_plan_applies_exactly_without_a_prompt() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    let file = plan_file(&env);
    let plan = env.run(&["plan", "--out", &file]).success();
    assert!(plan.stderr.contains("Saved this plan to"), "{plan:?}");

    let shown = env.run(&["show-plan", &file]).success();
    assert_eq!(shown.stdout, plan.stdout, "show-plan renders the same plan");

    // No --auto-approve and no terminal: a saved plan needs no prompt.
    let apply = env.run(&["apply", &file]).success();
    assert!(apply.stdout.contains("0 rotated, 2 generated"), "{apply:?}");
    assert_eq!(env.ledger().len(), 2);

    // Applying it again: the state moved on, so it is stale.
    let again = env.run(&["apply", &file]).failure();
    assert!(
        again.stderr.contains("was made when there was no state"),
        "{again:?}"
    );
}

#[test]
fn stale_saved_plans_are_refused_and_change_nothing() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    let file = plan_file(&env);

    let refused = |env: &TestEnv, why: &str| {
        let state = read(&env.state_path());
        let ledger = env.ledger();
        let run = env.run(&["apply", &file]).failure();
        assert!(run.stderr.contains(why), "expected `{why}`:\n{run:?}");
        assert!(run.stderr.contains("psk plan --out"), "{run:?}");
        assert_eq!(read(&env.state_path()), state, "state changed");
        assert_eq!(env.ledger(), ledger, "a PSK changed");
    };

    // The state changed since planning.
    env.run(&["plan", "--replace", "tunnel-00", "--out", &file])
        .success();
    env.run(&["apply", "--auto-approve", "--replace", "tunnel-01"])
        .success();
    refused(&env, "the state changed since the plan was made");

    // psk.yaml changed since planning.
    env.run(&["plan", "--replace", "tunnel-00", "--out", &file])
        .success();
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    env.write_config(&format!("{text}# a reviewed comment\n"));
    refused(&env, "psk.yaml changed since the plan was made");

    // Expired.
    env.run(&[
        "plan",
        "--replace",
        "tunnel-00",
        "--expires-in",
        "1s",
        "--out",
        &file,
    ])
    .success();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    refused(&env, "the plan expired at");

    // Another state (another lineage) in its place.
    env.run(&["plan", "--replace", "tunnel-00", "--out", &file])
        .success();
    let mut v = env.state_json();
    v["lineage"] = serde_json::json!("00000000-0000-4000-8000-000000000000");
    // Hand-written, not in psk's own formatting: left alone all the same.
    std::fs::write(env.state_path(), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    refused(&env, "the plan was made for another state");

    // Not a plan at all.
    std::fs::write(&file, "{\"format\": \"psk-plan\", \"format_version\": 1").unwrap();
    let run = env.run(&["apply", &file]).failure();
    assert!(run.stderr.contains("is not a psk plan file"), "{run:?}");
    assert!(!run.stderr.contains("panicked"));
}

#[test]
fn markdown_of_two_thousand_tunnels_fits_a_github_comment() {
    let env = TestEnv::new(2_000);
    let run = env
        .run(&["plan", "--offline", "--format", "markdown"])
        .success();
    assert!(run.stdout.len() <= 65_536, "{} bytes", run.stdout.len());
    assert!(run
        .stdout
        .contains("**Plan: 0 to rotate, 2000 to generate, 0 to reseal, 0 to forget.**"));
    assert!(run
        .stdout
        .contains("Shortened to fit GitHub's 65536-character comment limit"));
}

#[test]
fn no_psk_or_token_in_any_format() {
    let mut env = TestEnv::new(3);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    env.rotate_outside_psk(&tunnel_id(2));
    let file = plan_file(&env);
    let mut outputs = Vec::new();
    for format in ["human", "markdown", "json"] {
        outputs.push(env.run(&[
            "plan",
            "--format",
            format,
            "--replace",
            "tunnel-00",
            "--out",
            &file,
        ]));
        outputs.push(env.run(&["show-plan", &file, "--format", format]));
    }
    outputs.push(env.run(&["apply", &file]));
    for o in &outputs {
        env.assert_no_secrets(&o.all());
    }
    env.assert_no_secrets(&std::fs::read_to_string(&file).unwrap());
    assert!(env.ledger().values().map(Vec::len).sum::<usize>() >= 4);
}
