//! The executor: parallel rotations that never lose a key, progress for
//! people and CI, and how it ends.

use crate::common::*;

#[test]
fn parallel_apply_seals_exactly_the_newest_key_of_every_tunnel() {
    let mut env = TestEnv::new(60);
    env.start_sandbox();
    let run = env
        .run(&["apply", "--auto-approve", "--parallelism", "8"])
        .success();
    assert!(run.stdout.contains("0 rotated, 60 generated"), "{run:?}");
    let ledger = env.ledger();
    let sealed = env.sealed().0;
    assert_eq!(sealed.len(), 60);
    for (id, psks) in &ledger {
        assert_eq!(sealed.get(id), psks.last(), "tunnel {id}");
    }
    // A second round rotates them all again, in parallel, losing nothing.
    let later = (chrono::Utc::now() + chrono::TimeDelta::days(91)).to_rfc3339();
    let due = env.run(&["plan", "--at", &later, "--offline"]);
    assert!(due.stdout.contains("Plan: 60 to rotate"), "{due:?}");
    let run = env
        .run(&[
            "apply",
            "--auto-approve",
            "--replace",
            "tunnel-07",
            "--replace",
            "tunnel-08",
        ])
        .success();
    let ledger = env.ledger();
    let sealed = env.sealed().0;
    for (id, psks) in &ledger {
        assert_eq!(sealed.get(id), psks.last(), "tunnel {id}");
    }
    assert_eq!(ledger[&tunnel_id(7)].len(), 2);
    env.assert_no_secrets(&run.all());
}

#[test]
fn json_events_one_object_per_line() {
    let mut env = TestEnv::new(3);
    env.start_sandbox();
    let needs_approval = env.run(&["apply", "--json"]).failure();
    assert!(needs_approval.stderr.contains("--auto-approve"));

    let run = env.run(&["apply", "--json", "--auto-approve"]).success();
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(events[0]["type"], "plan");
    assert_eq!(events[0]["generate"], 3);
    let finished: Vec<_> = events.iter().filter(|e| e["type"] == "finished").collect();
    assert_eq!(finished.len(), 3);
    assert!(finished
        .iter()
        .all(|e| e["outcome"] == "generated" && e["last_rotated"].is_string()));
    assert_eq!(events.iter().filter(|e| e["type"] == "started").count(), 3);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(last["generated"], 3);
    assert_eq!(last["failed"], 0);
    env.assert_no_secrets(&run.all());
}
