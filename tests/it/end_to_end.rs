//! The walking skeleton, end to end: the real binary against the sandbox.

use crate::common::*;
use chrono::{TimeDelta, Utc};

#[test]
fn plan_apply_plan_show_against_the_sandbox() {
    let mut env = TestEnv::new(3);
    env.start_sandbox();

    let plan = env.run(&["plan"]).success();
    insta::assert_snapshot!("first_plan", env.snapshot(&plan));
    assert_eq!(
        env.sandbox()
            .counters
            .generate
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        env.sandbox()
            .counters
            .generate_validate
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert!(!env.state_path().exists(), "plan must not write state");

    let detailed = env.run(&["plan", "--detailed-exitcode"]).code(2);
    env.assert_no_secrets(&detailed.all());

    // One at a time, so that the progress lines come in plan order.
    let apply = env.run(&["apply", "--auto-approve", "--parallelism", "1"]);
    insta::assert_snapshot!("apply", env.snapshot(&apply));

    let again = env.run(&["plan", "--detailed-exitcode"]);
    insta::assert_snapshot!("plan_after_apply", env.snapshot(&again));

    // `show` returns exactly the PSK the sandbox issued, and nothing else.
    let ledger = env.ledger();
    assert_eq!(ledger.len(), 3);
    for i in 0..3 {
        let name = format!("tunnel-{i:02}");
        let show = env
            .run(&["show", &name, "--identity", env.identity.to_str().unwrap()])
            .success();
        let issued = ledger[&tunnel_id(i)].last().unwrap();
        assert_eq!(show.stdout, format!("{issued}\n"));
        assert_eq!(show.stderr, "");
    }

    // Past rotate_every, every tunnel is due.
    let later = (Utc::now() + TimeDelta::days(91)).to_rfc3339();
    let future = env.run(&["plan", "--at", &later]);
    insta::assert_snapshot!("plan_when_due", env.snapshot(&future));
    let markdown = env.run(&["plan", "--at", &later, "--format", "markdown"]);
    insta::assert_snapshot!("plan_when_due_markdown", env.snapshot(&markdown));
}

#[test]
fn json_plan_has_the_documented_fields() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    let run = env.run(&["plan", "--format", "json"]).success();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["format_version"], "1.5");
    assert_eq!(v["health"], serde_json::json!([]));
    assert_eq!(v["unmanaged"], serde_json::json!([]));
    let actions = v["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[0]["name"], "tunnel-00");
    assert_eq!(actions[0]["tunnel_id"], tunnel_id(0));
    assert_eq!(actions[0]["account_id"], ACCOUNT);
    assert_eq!(actions[0]["action"], "generate");
    assert_eq!(actions[0]["reasons"][0]["code"], "unknown_live_key");
    assert_eq!(actions[0]["dry_run"]["status"], "accepted");
    assert_eq!(v["summary"]["generate"], 2);
}

#[test]
fn offline_plan_needs_no_credentials_and_says_so() {
    let env = TestEnv::new(2);
    let run = env.run(&["plan", "--offline"]);
    insta::assert_snapshot!("offline_plan", env.snapshot(&run));
    let online = env.run(&["plan"]);
    insta::assert_snapshot!("plan_without_a_token", env.snapshot(&online));
}

#[test]
fn sealed_psk_opens_with_the_reference_age_cli() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    let state = env.state_json();
    let key = format!("{ACCOUNT}/{}", tunnel_id(0));
    let sealed = state["tunnels"][&key]["psk"].as_str().unwrap();
    let sealed_path = env.path("sealed.age");
    std::fs::write(&sealed_path, sealed).unwrap();
    let out = std::process::Command::new(tool("age"))
        .args(["--decrypt", "-i"])
        .arg(&env.identity)
        .arg(&sealed_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued = env.ledger()[&tunnel_id(0)].last().unwrap().clone();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), issued);
}

#[test]
fn bad_config_exits_1_naming_file_and_line_and_leaves_state_alone() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    let before = read(&env.state_path());

    let good = std::fs::read_to_string(env.config_path()).unwrap();
    let cases = [
        good.replace("    site: site-0\n", "    sight: site-0\n"),
        good.replace(&tunnel_id(1), "xyz"),
        good.replace("rotate_every: 90d", "rotate_every: 0d"),
        good.replace("tunnel-01", "tunnel-00"),
    ];
    let mut messages = String::new();
    for text in cases {
        env.write_config(&text);
        let plan = env.run(&["plan"]);
        messages.push_str(&format!("{}\n", env.snapshot(&plan)));
        // Every command that reads psk.yaml refuses it with the same words.
        for args in [
            &["apply", "--auto-approve"][..],
            &["validate"],
            &["plan", "--offline"],
        ] {
            let run = env.run(args);
            assert_eq!(
                (run.code, &run.stdout, &run.stderr),
                (plan.code, &plan.stdout, &plan.stderr),
                "{run:?}"
            );
            assert_eq!(read(&env.state_path()), before, "state changed by {args:?}");
        }
    }
    insta::assert_snapshot!("bad_config_messages", messages);
}

#[test]
fn apply_without_a_terminal_needs_auto_approve() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    let run = env.run(&["apply"]).failure();
    assert!(run.stderr.contains("--auto-approve"), "{run:?}");
    assert!(!env.state_path().exists());
    assert!(env.ledger().is_empty(), "nothing may be rotated");
}

#[test]
fn exit_codes_for_usage_help_and_version() {
    let env = TestEnv::new(1);
    env.run(&["plan", "--no-such-flag"]).failure();
    env.run(&["frobnicate"]).failure();
    env.run(&[]).failure();
    let help = env.run(&["--help"]).success();
    assert!(help.stdout.contains("Exit codes:"));
    env.run(&["--version"]).success();
}

#[test]
fn in_process_sandbox_flag_runs_the_whole_flow() {
    let env = TestEnv::new(2);
    let apply = env.run(&["apply", "--sandbox", "--auto-approve"]).success();
    assert!(apply.stdout.contains("2 generated"));
    let plan = env
        .run(&["plan", "--sandbox", "--detailed-exitcode"])
        .success();
    assert!(plan.stdout.contains("No changes."));
}

#[test]
fn validate_checks_config_and_state_offline() {
    let env = TestEnv::new(2);
    let ok = env.run(&["validate"]).success();
    assert!(ok.stdout.contains("is valid: 2 tunnels"));
    std::fs::write(env.state_path(), "{\"version\": 1, \"lineage\": ").unwrap();
    let bad = env.run(&["validate"]).failure();
    assert!(bad.stderr.contains("psk.state.json"), "{bad:?}");
    assert!(bad.stderr.contains("line 1"), "{bad:?}");
}
