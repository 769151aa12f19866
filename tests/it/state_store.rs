//! The state file as a database: refusals that change nothing, the lock,
//! and a crash between writing the new state and renaming it.

use std::time::Duration;

use crate::common::*;
use psk::state::{LockHolder, StateLock};

fn applied(tunnels: usize) -> TestEnv {
    let mut env = TestEnv::new(tunnels);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    env
}

/// Every command that reads the state, with the identity where needed.
fn readers(env: &TestEnv) -> Vec<Vec<String>> {
    let id = env.identity.to_str().unwrap().to_string();
    vec![
        vec!["plan".into()],
        vec!["plan".into(), "--offline".into()],
        vec!["apply".into(), "--auto-approve".into()],
        vec!["validate".into()],
        vec!["show".into(), "tunnel-00".into(), "-i".into(), id],
    ]
}

#[test]
fn corrupt_truncated_and_future_states_are_refused_and_left_alone() {
    let env = applied(2);
    let text = String::from_utf8(read(&env.state_path())).unwrap();
    let cases = [
        text.replacen("\"serial\": ", "\"serial\": ,", 1),
        // Cut inside the first record, before anything of varying length.
        text[..text.find("\"account_id\"").unwrap() + 5].to_string(),
        text.replacen("\"version\": 1", "\"version\": 7", 1),
    ];
    let mut messages = String::new();
    for bytes in cases {
        std::fs::write(env.state_path(), &bytes).unwrap();
        let mut first: Option<Run> = None;
        for args in readers(&env) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = env.run(&args);
            assert_eq!(read(&env.state_path()), bytes.as_bytes(), "{run:?}");
            env.assert_no_secrets(&run.all());
            // Every command that reads the state refuses it with the same words.
            match &first {
                None => {
                    messages.push_str(&format!("{}\n", env.snapshot(&run)));
                    first = Some(run);
                }
                Some(f) => assert_eq!(
                    (run.code, &run.stdout, &run.stderr),
                    (f.code, &f.stdout, &f.stderr),
                    "{run:?}"
                ),
            }
        }
    }
    insta::assert_snapshot!("refusals", messages);
    assert_eq!(env.ledger().values().map(Vec::len).sum::<usize>(), 2);
}

#[test]
fn a_locked_state_names_its_holder_and_is_left_alone() {
    let env = applied(1);
    let before = read(&env.state_path());
    let held = StateLock::acquire(&env.state_path(), "reseal", Duration::ZERO).unwrap();
    let record = std::fs::read_to_string(StateLock::lock_path(&env.state_path())).unwrap();
    let holder: LockHolder = serde_json::from_str(record.trim()).unwrap();

    let run = env.run(&["apply", "--auto-approve"]).failure();
    for s in [
        format!("pid {}", std::process::id()),
        "running `psk reseal` since".to_string(),
        format!("lock ID {}", holder.id),
        "--lock-timeout".to_string(),
        holder.who.clone(),
    ] {
        assert!(run.stderr.contains(&s), "no `{s}` in {run:?}");
    }
    assert_eq!(read(&env.state_path()), before);

    // force-unlock never takes the lock from a live process.
    let run = env.run(&["force-unlock", &holder.id, "--force"]).failure();
    assert!(
        run.stderr.contains(&format!("kill {}", std::process::id())),
        "{run:?}"
    );

    // --lock-timeout waits, then gives up with the same message.
    let run = env
        .run(&["apply", "--auto-approve", "--lock-timeout", "1s"])
        .failure();
    assert!(run.stderr.contains("waiting"), "{run:?}");
    assert!(run.stderr.contains(&format!("lock ID {}", holder.id)));
    drop(held);
    assert_eq!(read(&env.state_path()), before);
    env.run(&["apply", "--auto-approve"]).success();
}

#[test]
fn killed_between_temp_write_and_rename_the_state_stays_whole() {
    let env = applied(3);
    // Forget tunnel-01's record, so the next apply generates it again.
    let mut state = env.state_json();
    let key = format!("{ACCOUNT}/{}", tunnel_id(1));
    state["tunnels"].as_object_mut().unwrap().remove(&key);
    let edited = format!("{}\n", serde_json::to_string_pretty(&state).unwrap());
    std::fs::write(env.state_path(), &edited).unwrap();

    let run = to_run(
        env.command(&["apply", "--auto-approve"])
            .env("PSK_FAILPOINT", "state-before-rename")
            .output()
            .unwrap(),
    );
    assert_ne!(run.code, 0, "the failpoint must kill psk: {run:?}");
    assert!(
        run.stderr.contains("failpoint state-before-rename"),
        "{run:?}"
    );
    env.assert_no_secrets(&run.all());
    // The new state reached its temp file, never the state file.
    assert_eq!(read(&env.state_path()), edited.as_bytes());
    let temps: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".psk.state.json.tmp-"))
        .collect();
    assert_eq!(temps.len(), 1, "{temps:?}");

    // Still whole and loadable, and the key generated before the crash is
    // not lost: it is in the journal, which every reader replays.
    let issued = env.ledger()[&tunnel_id(1)].last().unwrap().clone();
    assert_eq!(env.ledger()[&tunnel_id(1)].len(), 2);
    let show = env
        .run(&["show", "tunnel-01", "-i", env.identity.to_str().unwrap()])
        .success();
    assert_eq!(show.stdout, format!("{issued}\n"));
    let plan = env.run(&["plan", "--detailed-exitcode"]).success();
    assert!(plan.stdout.contains("No changes."), "{plan:?}");

    // psk died holding the lock; the kernel released it, its record stayed.
    let record = std::fs::read_to_string(StateLock::lock_path(&env.state_path())).unwrap();
    let holder: LockHolder = serde_json::from_str(record.trim()).unwrap();
    let wrong = env.run(&["force-unlock", "00000000", "--force"]).failure();
    assert!(wrong.stderr.contains("does not match"), "{wrong:?}");
    let unconfirmed = env.run(&["force-unlock", &holder.id]).failure();
    assert!(unconfirmed.stderr.contains("--force"), "{unconfirmed:?}");
    let unlock = env.run(&["force-unlock", &holder.id, "--force"]).success();
    assert!(unlock.stdout.contains("had already ended"), "{unlock:?}");
    assert!(unlock.stdout.contains("journal"), "{unlock:?}");
    env.run(&["force-unlock", &holder.id, "--force"]).failure();

    // The next writer folds the journal in and clears the stale temp file.
    env.run(&["apply", "--auto-approve"]).success();
    assert!(!psk::state::journal_path(&env.state_path()).exists());
    assert!(!env.path(&temps[0]).exists());
    let state = env.state_json();
    assert!(state["tunnels"][&key]["psk"].is_string());
    let show = env.run(&["show", "tunnel-01", "-i", env.identity.to_str().unwrap()]);
    assert_eq!(show.stdout, format!("{issued}\n"));
}

#[test]
fn a_damaged_or_orphaned_journal_is_refused_and_left_alone() {
    let env = applied(1);
    let before = read(&env.state_path());
    let journal = psk::state::journal_path(&env.state_path());
    let damaged = b"{not json}\n{\"also\": \"not an entry\"}\n".to_vec();
    std::fs::write(&journal, &damaged).unwrap();
    for args in [
        &["plan", "--offline"][..],
        &["apply", "--auto-approve"],
        &["show", "tunnel-00", "-i", "identity.txt"],
    ] {
        let run = env.run(args).failure();
        assert!(
            run.stderr
                .contains("psk.state.json.journal is damaged at line 1"),
            "{run:?}"
        );
        assert!(run.stderr.contains("keep a copy"), "{run:?}");
        assert_eq!(read(&env.state_path()), before);
        assert_eq!(read(&journal), damaged);
    }

    std::fs::remove_file(env.state_path()).unwrap();
    let run = env.run(&["apply", "--auto-approve"]).failure();
    assert!(run.stderr.contains("no state file"), "{run:?}");
    assert!(run.stderr.contains("restore"), "{run:?}");
    assert!(!env.state_path().exists());
    assert_eq!(read(&journal), damaged);
    assert_eq!(env.ledger().values().map(Vec::len).sum::<usize>(), 1);
}

/// The journal lines an apply killed as it folded them into the state left
/// behind: one per commit, each with the tunnels it changed.
fn commits_of_killed_apply(env: &TestEnv, args: &[&str]) -> Vec<serde_json::Value> {
    let mut cmd = env.command(args);
    cmd.env("PSK_FAILPOINT", "state-before-rename");
    let crash = to_run(cmd.output().unwrap());
    assert_ne!(crash.code, 0, "{crash:?}");
    let journal = std::fs::read_to_string(psk::state::journal_path(&env.state_path())).unwrap();
    journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn changes(commit: &serde_json::Value) -> usize {
    commit["changes"].as_object().unwrap().len()
}

/// Group commit: changes that happen together share one fsynced journal
/// line, yet each is durable before anything depends on it, and a killed
/// apply loses none of them.
#[test]
fn apply_commits_changes_in_groups_and_loses_none() {
    // `local`: every pending key in one commit before the bulk set, every
    // promotion in one commit after it.
    let mut env = TestEnv::new(9);
    local_config(&env, 9);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve", "--target", "tunnel-00"])
        .success();
    let commits = commits_of_killed_apply(&env, &["apply", "--auto-approve"]);
    // Sites of two tunnels go in two rounds: tunnels 1, 2, 4, 6, 8 first
    // (one per site), then 3, 5, 7; each round is two commits.
    let sizes: Vec<usize> = commits.iter().map(changes).collect();
    assert_eq!(sizes, vec![5, 5, 3, 3], "{commits:?}");
    for c in &commits {
        for rec in c["changes"].as_object().unwrap().values() {
            assert!(rec["pending"].is_object() || rec["psk"].is_string());
        }
    }
    // Nothing lost: the next reader replays all of it, and the edge agrees.
    let (sealed, uncertain) = env.sealed();
    assert_eq!(sealed.len(), 9);
    assert!(uncertain.is_empty(), "{uncertain:?}");
    let ledger = env.ledger();
    for (id, psk) in &sealed {
        assert_eq!(ledger[id].last().unwrap(), psk);
    }

    // `cloudflare`: the first turn stages every intent it starts and
    // commits them with one fsync before any call goes out.
    let mut env = TestEnv::new(12);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve", "--target", "tunnel-00"])
        .success();
    let commits = commits_of_killed_apply(&env, &["apply", "--auto-approve", "--parallelism", "4"]);
    assert_eq!(changes(&commits[0]), 4, "{:?}", commits[0]);
    for rec in commits[0]["changes"].as_object().unwrap().values() {
        assert!(rec["intent"].is_object(), "{rec}");
    }
    let total: usize = commits.iter().map(changes).sum();
    assert_eq!(total, 22, "an intent and a PSK for each of 11 tunnels");
    assert!(commits.len() < 22, "{} commits", commits.len());
    let (sealed, uncertain) = env.sealed();
    assert_eq!(sealed.len(), 12);
    assert!(uncertain.is_empty(), "{uncertain:?}");
    let ledger = env.ledger();
    for (id, psk) in &sealed {
        assert_eq!(ledger[id].last().unwrap(), psk);
    }
}
