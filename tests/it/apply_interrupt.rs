//! Interrupting apply: Ctrl-C finishes what is in flight and stops; SIGKILL
//! at random moments never loses a key.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use psk::sandbox::SandboxOptions;

/// The invariant: every tunnel's sealed PSK is the newest valid on the
/// edge, unless the state marks it uncertain, in which case the plan must
/// show it as interrupted or pending.
fn check_no_key_lost(env: &TestEnv) {
    let (sealed, uncertain) = env.sealed();
    let ledger = env.ledger();
    let mut must_replan = Vec::new();
    for (id, psks) in &ledger {
        let newest = psks.last().unwrap();
        if sealed.get(id) != Some(newest) {
            assert!(
                uncertain.contains(id),
                "tunnel {id}: the sealed PSK is not the newest on the edge and nothing says so"
            );
            must_replan.push(id.clone());
        }
    }
    if !must_replan.is_empty() {
        let plan = env
            .run(&["plan", "--offline", "--format", "json"])
            .success();
        let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
        for id in must_replan {
            let a = v["actions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["tunnel_id"] == id.as_str())
                .unwrap_or_else(|| panic!("no action for uncertain tunnel {id}:\n{}", plan.stdout));
            let codes: Vec<&str> = a["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["code"].as_str().unwrap())
                .collect();
            assert!(
                codes.contains(&"interrupted") || codes.contains(&"pending"),
                "{id}: {codes:?}"
            );
        }
    }
}

fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ctrl_c_finishes_in_flight_work_and_stops() {
    let mut env = TestEnv::new(24);
    env.start_sandbox_with(SandboxOptions {
        latency: Duration::from_millis(300),
        ..SandboxOptions::default()
    });
    let child = env
        .command(&["apply", "--auto-approve", "--parallelism", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(|| !env.ledger().is_empty(), "the first rotation");
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let run = to_run(child.wait_with_output().unwrap()).failure();
    assert!(
        run.stderr
            .contains("Interrupt: finishing the rotations in flight"),
        "{run:?}"
    );
    assert!(run.stdout.contains("Apply stopped."), "{run:?}");
    assert!(run.stdout.contains("not started"), "{run:?}");
    assert!(run.stdout.contains("Left for the next apply:"), "{run:?}");

    // Consistent: nothing in flight was abandoned, every key recorded.
    let (sealed, uncertain) = env.sealed();
    assert!(
        uncertain.is_empty(),
        "in-flight rotations were finished: {uncertain:?}"
    );
    let ledger = env.ledger();
    assert!(sealed.len() < 24, "it stopped early");
    assert_eq!(sealed.len(), ledger.len());
    for (id, psks) in &ledger {
        assert_eq!(sealed.get(id), psks.last());
    }
    // The next apply does the rest.
    env.run(&["apply", "--auto-approve", "--parallelism", "8"])
        .success();
    assert_eq!(env.sealed().0.len(), 24);
    env.assert_no_secrets(&run.all());
}

/// SIGKILL apply at random moments, with both generators, then finish with
/// a clean apply: no key is ever lost. `PSK_KILL_TRIALS` raises the count.
#[test]
fn sigkill_at_random_moments_never_loses_a_key() {
    let trials: usize = std::env::var("PSK_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut env = TestEnv::new(0);
    let mut text = config_text(&env.recipient, 8, "90d").replace(
        "tunnels:\n",
        "  made-here:\n    rotate_every: 90d\n    generator: local\n    site_parallel: true\ntunnels:\n",
    );
    for i in [1, 4, 6] {
        text = text.replace(
            &format!("    id: {}\n", tunnel_id(i)),
            &format!("    id: {}\n    policy: made-here\n", tunnel_id(i)),
        );
    }
    env.write_config(&text);
    env.start_sandbox_with(SandboxOptions {
        latency: Duration::from_millis(20),
        seed: Some(7),
        ..SandboxOptions::default()
    });
    let mut replace = vec!["apply", "--auto-approve", "--parallelism", "3"];
    let names: Vec<String> = (0..8).map(|i| format!("tunnel-{i:02}")).collect();
    let mut killed = 0;
    for trial in 0..trials {
        let mut args = replace.clone();
        if trial > 0 {
            for n in &names {
                args.push("--replace");
                args.push(n);
            }
        }
        let mut child = env
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The first apply writes the state: killed before that, it would
        // leave its lock record beside no state, which every later run
        // rightly refuses as a state gone missing (`missing`).
        if trial == 0 {
            assert!(child.wait().unwrap().success(), "the first apply");
            continue;
        }
        // A pseudo-random moment in the first ~250 ms (deterministic per trial).
        let wait = (trial as u64 * 7919 + 13) % 250;
        std::thread::sleep(Duration::from_millis(wait));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        check_no_key_lost(&env);
    }
    assert!(
        killed >= trials / 2,
        "only {killed} of {trials} runs were killed mid-way"
    );
    replace.truncate(2);
    env.run(&replace).success();
    let (sealed, uncertain) = env.sealed();
    assert!(uncertain.is_empty(), "{uncertain:?}");
    assert_eq!(sealed.len(), 8);
    for (id, psks) in &env.ledger() {
        assert_eq!(sealed.get(id), psks.last(), "tunnel {id}");
    }
}
