//! Files psk writes are private, whatever the umask, and a state folder
//! anyone may write to is called out.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs psk under `umask 000`, so any file not created 0600 on purpose
/// would come out world-readable.
fn run_open_umask(env: &TestEnv, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
    // The environment TestEnv would give psk (sandbox URL, token, HOME).
    let cmd = env.command(&[]);
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_psk"))
        .args(args)
        .current_dir(env.dir.path())
        .env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .envs(extra_env.iter().copied())
        .stdin(std::process::Stdio::null());
    to_run(sh.output().unwrap()).with_args(args)
}

#[test]
fn state_backup_journal_and_plan_are_0600_under_any_umask() {
    let mut env = TestEnv::new(3);
    env.start_sandbox();
    run_open_umask(&env, &["apply", "--auto-approve"], &[]).success();
    assert_eq!(mode(&env.state_path()), 0o600);
    assert_eq!(
        mode(&psk::state::backup_path(&env.state_path())),
        0o600,
        "the backup"
    );

    // Kill psk as it folds the journal into the state: the journal it
    // leaves behind holds every record of the apply.
    let crash = run_open_umask(
        &env,
        &["apply", "--auto-approve", "--replace", "tunnel-00"],
        &[("PSK_FAILPOINT", "state-before-rename")],
    );
    assert_ne!(crash.code, 0, "{crash:?}");
    let journal = psk::state::journal_path(&env.state_path());
    assert!(journal.exists(), "{crash:?}");
    assert_eq!(mode(&journal), 0o600, "the journal");
    // The temp file the killed write left is private too.
    for e in std::fs::read_dir(env.dir.path()).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().contains(".tmp-") {
            assert_eq!(mode(&e.path()), 0o600, "{:?}", e.file_name());
        }
    }

    run_open_umask(&env, &["plan", "--out", "plan.json"], &[]).success();
    assert_eq!(mode(&env.path("plan.json")), 0o600, "the saved plan");
    // The next writer folds the journal in; still private.
    run_open_umask(&env, &["apply", "--auto-approve"], &[]).success();
    assert!(!journal.exists());
    assert_eq!(mode(&env.state_path()), 0o600);
    assert_eq!(mode(&psk::state::backup_path(&env.state_path())), 0o600);
}

#[test]
fn a_world_writable_state_folder_gets_a_warning() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    let set = |m: u32| {
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(m)).unwrap()
    };
    set(0o777);
    let run = env.run(&["apply", "--auto-approve"]).success();
    assert!(
        run.stderr.contains("is writable by every user (mode 777)")
            && run.stderr.contains("chmod o-w"),
        "{run:?}"
    );
    assert!(!run.stdout.contains("writable by every user"), "{run:?}");

    set(0o755);
    let run = env
        .run(&["apply", "--auto-approve", "--replace", "tunnel-01"])
        .success();
    assert!(!run.stderr.contains("writable by every user"), "{run:?}");
}
