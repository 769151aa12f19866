//! Both generators end to end, and partial failures that must not stop the
//! rest or lose a key.

use std::sync::atomic::Ordering;

use crate::common::*;
use psk::sandbox::SandboxOptions;

#[test]
fn local_generator_seals_sends_in_bulk_and_promotes() {
    let mut env = TestEnv::new(0);
    local_config(&env, 5);
    env.start_sandbox();
    let plan = env.run(&["plan"]).success();
    assert!(plan.stdout.contains("dry run:      accepted"), "{plan:?}");
    let c = &env.sandbox().counters;
    assert_eq!(
        c.bulk_validate.load(Ordering::Relaxed),
        1,
        "one bulk dry run for the account"
    );
    assert_eq!(c.generate_validate.load(Ordering::Relaxed), 0);

    let apply = env.run(&["apply", "--auto-approve"]).success();
    assert!(apply.stdout.contains("0 rotated, 5 generated"), "{apply:?}");
    assert_eq!(
        c.generate.load(Ordering::Relaxed),
        0,
        "Cloudflare made no key"
    );
    assert!(c.bulk_set.load(Ordering::Relaxed) >= 1);
    let ledger = env.ledger();
    let sealed = env.sealed().0;
    assert_eq!(sealed.len(), 5);
    for (id, psks) in &ledger {
        let p = psks.last().unwrap();
        assert_eq!(sealed.get(id), Some(p), "{id}");
        assert_eq!(p.len(), 32);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
    }
    let state = env.state_json();
    assert!(
        !state.to_string().contains("\"pending\""),
        "every key promoted"
    );
    env.run(&["plan", "--detailed-exitcode"]).success();
    env.assert_no_secrets(&format!("{}{}", plan.all(), apply.all()));
}

#[test]
fn partial_bulk_failure_reports_the_reason_and_keeps_the_rest() {
    let mut env = TestEnv::new(0);
    local_config(&env, 4);
    let mut refuse = std::collections::BTreeSet::new();
    refuse.insert(tunnel_id(1));
    env.start_sandbox_with(SandboxOptions {
        refuse_changes: refuse,
        ..SandboxOptions::default()
    });
    // One at a time, so that the progress lines come in plan order.
    let apply = env.run(&["apply", "--auto-approve", "--parallelism", "1"]);
    insta::assert_snapshot!("bulk_partial_failure", env.snapshot(&apply));
    let sealed = env.sealed().0;
    let ledger = env.ledger();
    assert_eq!(sealed.len(), 3);
    assert!(!ledger.contains_key(&tunnel_id(1)));
    for (id, psks) in &ledger {
        assert_eq!(sealed.get(id), psks.last());
    }
    // Cloudflare surely did nothing: no pending key is left to confuse.
    assert!(!env.state_json().to_string().contains("\"pending\""));
    let plan = env.run(&["plan", "--offline"]);
    insta::assert_snapshot!("plan_after_bulk_partial_failure", env.snapshot(&plan));
}

#[test]
fn cloudflare_generator_refusal_does_not_stop_the_others() {
    let mut env = TestEnv::new(4);
    let mut refuse = std::collections::BTreeSet::new();
    refuse.insert(tunnel_id(2));
    env.start_sandbox_with(SandboxOptions {
        refuse_changes: refuse,
        ..SandboxOptions::default()
    });
    let apply = env.run(&["apply", "--auto-approve", "--parallelism", "1"]);
    insta::assert_snapshot!("generate_refused", env.snapshot(&apply));
    let state = env.state_json();
    assert!(
        !state.to_string().contains("\"intent\""),
        "a definite refusal withdraws the intent"
    );
    let plan = env.run(&["plan", "--offline"]);
    assert!(
        plan.stdout.contains("Plan: 0 to rotate, 1 to generate"),
        "{plan:?}"
    );
}

#[test]
fn mixed_generators_in_one_apply() {
    let mut env = TestEnv::new(0);
    let mut text = config_text(&env.recipient, 6, "90d");
    text = text.replace(
        "tunnels:\n",
        "  made-here:\n    rotate_every: 30d\n    generator: local\n    site_parallel: true\ntunnels:\n",
    );
    for i in [1, 3, 5] {
        text = text.replace(
            &format!("    id: {}\n", tunnel_id(i)),
            &format!("    id: {}\n    policy: made-here\n", tunnel_id(i)),
        );
    }
    env.write_config(&text);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    let c = &env.sandbox().counters;
    assert_eq!(c.generate.load(Ordering::Relaxed), 3);
    assert_eq!(c.bulk_set.load(Ordering::Relaxed), 1);
    let sealed = env.sealed().0;
    for (id, psks) in &env.ledger() {
        assert_eq!(sealed.get(id), psks.last());
    }
    assert_eq!(sealed.len(), 6);
}

/// A key left pending by `generator: local` (its answer was lost), then the
/// policy moved to Cloudflare's generator: the key Cloudflare makes settles
/// the tunnel. Recording it drops the pending key, which the edge no longer
/// holds; a pending key left behind would make every later plan rotate the
/// tunnel again.
#[test]
fn a_generated_key_settles_a_pending_one_left_by_the_local_generator() {
    let mut env = TestEnv::new(1);
    local_config(&env, 1);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    // As if a later local rotation's answer was lost: a pending key beside
    // the recorded one.
    let mut state = env.state_json();
    let rec = state["tunnels"]
        .as_object_mut()
        .unwrap()
        .values_mut()
        .next()
        .unwrap();
    rec["pending"] = serde_json::json!({
        "generated": "2026-11-01T00:00:00Z",
        "psk": rec["psk"].clone(),
    });
    let mut bytes = serde_json::to_vec_pretty(&state).unwrap();
    bytes.push(b'\n');
    std::fs::write(env.state_path(), bytes).unwrap();
    env.write_config(&config_text(&env.recipient, 1, "90d"));

    let plan = env.run(&["plan"]);
    assert!(plan.stdout.contains("pending"), "{plan:?}");
    let apply = env.run(&["apply", "--auto-approve"]).success();
    assert!(apply.stdout.contains("1 rotated"), "{apply:?}");
    assert_eq!(env.sandbox().counters.generate.load(Ordering::Relaxed), 1);
    assert!(
        !env.state_json().to_string().contains("\"pending\""),
        "the pending key went with the new one"
    );
    // Nothing left to do.
    env.run(&["plan", "--detailed-exitcode"]).success();
}
