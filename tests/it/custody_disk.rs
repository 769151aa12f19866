//! No answered key is lost to a failing disk (issue 15): every write of
//! the state (journal line, state file, backup, rescue) made to fail with
//! EIO, EROFS, EDQUOT (a quota) or ENOSPC, once or from then on, at every position an apply reaches.
//! When apply exits, every PSK the sandbox's edge holds is one psk can
//! open, from the state or, after `psk recover`, from the rescue file.

use std::path::{Path, PathBuf};

use crate::common::{Run, TestEnv};

const TUNNELS: usize = 6;

/// A fresh fleet of `TUNNELS` tunnels (keys made by Cloudflare, or by psk
/// with `local`) and its sandbox.
fn fleet(local: bool) -> TestEnv {
    let mut env = TestEnv::new(TUNNELS);
    if local {
        crate::common::local_config(&env, TUNNELS);
    }
    // Answers come back at different times, so a commit can fail with
    // calls still in flight.
    env.start_sandbox_with(psk::sandbox::SandboxOptions {
        latency: std::time::Duration::from_millis(20),
        ..Default::default()
    });
    env
}

/// `apply` with the write failpoints `spec`, two rotations in flight.
fn apply_failing(env: &TestEnv, spec: &str, extra: &[(&str, &str)]) -> Run {
    let args = ["apply", "--auto-approve", "--parallelism", "2"];
    let mut cmd = env.command(&args);
    cmd.env("PSK_FAILPOINT_WRITE", spec)
        .env("PSK_TEST_NO_RETRY_DELAY", "1");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    crate::common::to_run(cmd.output().unwrap()).with_args(&args)
}

/// The rescue file a failed apply names in its `psk recover FILE` line.
fn rescue_named(run: &Run) -> Option<PathBuf> {
    let re = regex::Regex::new(r"(?m)^  psk recover (\S+)$").unwrap();
    re.captures(&run.stderr).map(|c| PathBuf::from(&c[1]))
}

/// Takes a rescue back, twice: the second time changes nothing.
fn recover(env: &TestEnv, rescue: &Path, what: &str) {
    let text = std::fs::read_to_string(rescue).unwrap();
    env.assert_no_secrets(&text);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(rescue).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{what}: rescue file mode");
    }
    let first = env.run(&["recover", rescue.to_str().unwrap()]).success();
    assert!(first.stdout.contains("Recovered "), "{what}: {first:?}");
    let state = std::fs::read(env.state_path()).unwrap();
    let again = env.run(&["recover", rescue.to_str().unwrap()]).success();
    assert!(
        again.stdout.contains("Nothing to recover"),
        "{what}: {again:?}"
    );
    assert_eq!(std::fs::read(env.state_path()).unwrap(), state, "{what}");
}

/// Every PSK the edge holds now is one psk opens from its state.
#[track_caller]
fn every_edge_key_opens(env: &TestEnv, what: &str, run: &Run) {
    let (sealed, _) = env.sealed();
    for (id, psks) in env.ledger() {
        assert_eq!(
            sealed.get(&id),
            psks.last(),
            "{what}: the key tunnel {id} holds on the edge is not in the state\n{run:?}"
        );
    }
}

/// One failpoint spec: apply, recover what it rescued, check the edge.
fn one_position(local: bool, spec: &str) -> Run {
    let env = fleet(local);
    let run = apply_failing(&env, spec, &[]);
    env.assert_no_secrets(&run.all());
    let what = format!(
        "{} keys, {spec}",
        if local { "local" } else { "Cloudflare" }
    );
    if let Some(rescue) = rescue_named(&run) {
        assert_eq!(run.code, 1, "{what}: {run:?}");
        recover(&env, &rescue, &what);
    }
    every_edge_key_opens(&env, &what, &run);
    if run.code != 0 && env.ledger().is_empty() {
        // Refused before its first call: nothing changed anywhere.
        assert!(
            run.stderr.contains("cannot write state file"),
            "{what}: {run:?}"
        );
    }
    run
}

/// Every position of every write, failing once (the retry takes it: the
/// apply completes) or from then on (the apply stops, and what the disk
/// could not take is rescued), for both generators.
#[test]
fn at_every_failing_write_every_edge_key_opens() {
    for local in [false, true] {
        for (what, errno) in [("journal", "EIO"), ("state", "EROFS"), ("backup", "EIO")] {
            for n in 1.. {
                assert!(n < 40, "{what} is written more often than expected");
                // Once: retried, so the apply completes (a state that
                // cannot be created refuses before the first call instead).
                let once = format!("{what}:{n}:{errno}");
                let run = one_position(local, &once);
                assert!(
                    run.code == 0 || (what, n) == ("state", 1),
                    "{once}: {run:?}"
                );
                let errno = ["EIO", "EROFS", "EDQUOT", "ENOSPC"][n % 4];
                let onwards = format!("{what}:{n}+:{errno}");
                let run = one_position(local, &onwards);
                if run.code == 0 {
                    // Past the apply's last write of this kind.
                    assert!(n > 1, "{onwards}: the apply never wrote its {what}");
                    break;
                }
                assert!(
                    run.stderr.contains("The apply stopped there")
                        || run.stderr.contains("nothing was lost")
                        || run.stderr.contains("cannot write state file"),
                    "{onwards}: {run:?}"
                );
            }
        }
    }
}

/// Once the journal cannot be written, no further call goes to
/// Cloudflare: with two rotations in flight and the second commit
/// failing, only the two whose intents were recorded ever reach the edge.
#[test]
fn an_unwritable_state_stops_the_calls() {
    let env = fleet(false);
    let run = apply_failing(&env, "journal:2+:EROFS", &[]).failure();
    assert_eq!(env.ledger().len(), 2, "{run:?}");
    assert!(run.stderr.contains("Read-only file system"), "{run:?}");
    assert!(
        run.stderr
            .contains("psk makes no call to Cloudflare it cannot record"),
        "{run:?}"
    );
    let rescue = rescue_named(&run).expect("a rescue file");
    recover(&env, &rescue, "journal:2+");
    every_edge_key_opens(&env, "journal:2+", &run);
    // The disk is back: the next apply rotates the rest.
    env.run(&["apply", "--auto-approve"]).success();
    every_edge_key_opens(&env, "after", &run);
    assert_eq!(env.ledger().len(), TUNNELS);

    // The first commit failing: nothing was sent at all.
    let env = fleet(true);
    let run = apply_failing(&env, "journal:1+:EIO", &[]).failure();
    assert!(env.ledger().is_empty(), "{run:?}");
    assert!(rescue_named(&run).is_none(), "{run:?}");
}

/// The rescue goes to `$PSK_RESCUE_DIR`, else the next place that takes
/// it; with no place at all, the sealed records are printed between
/// marker lines, and `psk recover` takes them from a file made of those.
#[test]
fn the_rescue_finds_a_place_or_is_printed() {
    let env = fleet(false);
    let chosen = env.path("rescue-here");
    let run = apply_failing(
        &env,
        "journal:3+:EIO",
        &[("PSK_RESCUE_DIR", chosen.to_str().unwrap())],
    )
    .failure();
    let rescue = rescue_named(&run).expect("a rescue file");
    assert_eq!(rescue.parent(), Some(chosen.as_path()), "{run:?}");
    recover(&env, &rescue, "PSK_RESCUE_DIR");
    every_edge_key_opens(&env, "PSK_RESCUE_DIR", &run);

    // The first place fails too: the next one (~/.local/state/psk) takes it.
    let env = fleet(false);
    let run = apply_failing(
        &env,
        "journal:3+:EIO,rescue:1:EROFS",
        &[("PSK_RESCUE_DIR", env.path("broken").to_str().unwrap())],
    )
    .failure();
    let rescue = rescue_named(&run).expect("a rescue file");
    assert!(
        rescue.starts_with(env.path(".local/state/psk")),
        "{rescue:?}: {run:?}"
    );
    recover(&env, &rescue, "fallback");
    every_edge_key_opens(&env, "fallback", &run);

    // Nowhere takes it: printed, sealed.
    let env = fleet(false);
    let run = apply_failing(&env, "journal:3+:EIO,rescue:1+:EIO", &[]).failure();
    env.assert_no_secrets(&run.all());
    let (_, rest) = run
        .stderr
        .split_once("-----BEGIN PSK RESCUE-----\n")
        .expect("printed");
    let (text, _) = rest.split_once("-----END PSK RESCUE-----").unwrap();
    let saved = env.path("saved-rescue.json");
    crate::common::write_private(&saved, text);
    recover(&env, &saved, "printed");
    every_edge_key_opens(&env, "printed", &run);

    // A rescue of this state is refused by another state.
    let other = fleet(false);
    other.run(&["apply", "--auto-approve"]).success();
    let state = std::fs::read(other.state_path()).unwrap();
    let refused = other.run(&["recover", saved.to_str().unwrap()]).failure();
    assert!(
        refused.stderr.contains("belongs to another state"),
        "{refused:?}"
    );
    assert_eq!(std::fs::read(other.state_path()).unwrap(), state);
}

/// A later apply that rotated a rescued tunnel again wins over the rescue:
/// its newer key stays, and the rescue says so.
#[test]
fn recover_keeps_a_key_rotated_since() {
    let env = fleet(false);
    let run = apply_failing(&env, "journal:2+:EIO", &[]).failure();
    let rescue = rescue_named(&run).expect("a rescue file");
    // The next apply sees the intents on disk and rotates those tunnels
    // again (the rescue is not back yet).
    env.run(&["apply", "--auto-approve"]).success();
    every_edge_key_opens(&env, "after the second apply", &run);
    let r = env.run(&["recover", rescue.to_str().unwrap()]).success();
    assert!(r.stdout.contains("Kept as the state has them"), "{r:?}");
    every_edge_key_opens(&env, "after recover", &run);
}
