//! A new user's first hour, followed literally: the hints psk prints are
//! run as printed, the README's .gitignore leaves `git status` clean, the
//! in-process sandbox rehearses `verify` and `import`, a public key given
//! as an identity is named as such, and the example scripts use the psk
//! cargo built where `CARGO_TARGET_DIR` says.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// Every `` `psk ...` `` command a message suggests, as words.
fn suggested(text: &str) -> Vec<Vec<String>> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.starts_with("psk "))
        .map(|span| span.split_whitespace().skip(1).map(String::from).collect())
        .collect()
}

/// psk.yaml of `env` moved into `lab/`, so that only `-c` finds it.
fn in_lab(env: &TestEnv) {
    std::fs::create_dir(env.path("lab")).unwrap();
    std::fs::rename(env.config_path(), env.path("lab/psk.yaml")).unwrap();
}

#[test]
fn the_apply_hint_followed_literally_keeps_the_sandbox_the_config_and_the_state() {
    let env = TestEnv::new(2);
    in_lab(&env);
    let args = [
        "apply",
        "--sandbox",
        "-c",
        "lab/psk.yaml",
        "--state",
        "lab/team.state.json",
    ];
    let refused = env.run(&args).failure();
    let hints: Vec<_> = suggested(&refused.stderr)
        .into_iter()
        .filter(|c| c.iter().any(|w| w == "--auto-approve"))
        .collect();
    assert_eq!(hints.len(), 1, "{}", refused.stderr);
    let hint = &hints[0];
    for w in ["--sandbox", "lab/psk.yaml", "lab/team.state.json"] {
        assert!(hint.iter().any(|h| h == w), "{w} missing from {hint:?}");
    }
    // No credentials in the environment: only the in-process sandbox can
    // answer, so the hint is followed against it, not against Cloudflare.
    let words: Vec<&str> = hint.iter().map(String::as_str).collect();
    env.run(&words).success();
    assert!(env.path("lab/team.state.json").is_file());
    assert!(!env.state_path().exists());
}

#[test]
fn without_credentials_plan_suggests_a_sandbox_command_that_runs() {
    let env = TestEnv::new(2);
    in_lab(&env);
    let refused = env.run(&["plan", "-c", "lab/psk.yaml"]).failure();
    assert!(
        !refused.stderr.contains("`psk --sandbox`"),
        "{}",
        refused.stderr
    );
    let hint = suggested(&refused.stderr)
        .into_iter()
        .find(|c| c.iter().any(|w| w == "--sandbox"))
        .unwrap_or_else(|| panic!("no --sandbox command in:\n{}", refused.stderr));
    assert_eq!(hint[0], "plan", "{hint:?}");
    let words: Vec<&str> = hint.iter().map(String::as_str).collect();
    env.run(&words).success();
}

#[test]
fn far_end_options_without_sandbox_are_refused() {
    let env = TestEnv::new(2);
    let run = env.run(&["plan", "--far-end-follows", "2"]).failure();
    assert!(run.stderr.contains("add --sandbox"), "{}", run.stderr);
}

/// psk.yaml whose policy verifies every rotation, with short waits.
fn verified_config(env: &TestEnv) {
    let text = config_text(&env.recipient, 2, "90d").replace(
        "    site_parallel: true\n",
        "    verify:\n      settle: 1s\n      timeout: 40s\n",
    );
    env.write_config(&text);
}

#[test]
fn verify_is_rehearsed_with_the_in_process_sandbox() {
    let env = TestEnv::new(2);
    verified_config(&env);
    // The far ends take each new key a second after it changes, as
    // `psk sandbox --far-end-follows 1` would: both paths of the site
    // rotate one after the other, each verified back up.
    let start = Instant::now();
    env.run(&[
        "apply",
        "--sandbox",
        "--auto-approve",
        "--far-end-follows",
        "1",
        "--health-delay",
        "1",
    ])
    .success();
    assert!(start.elapsed() < Duration::from_secs(40));
    let (sealed, uncertain) = env.sealed();
    assert_eq!(sealed.len(), 2);
    assert!(uncertain.is_empty(), "{uncertain:?}");
    let plan = env.run(&["plan", "--offline", "--detailed-exitcode"]);
    plan.code(0);
}

#[test]
fn import_with_the_sandbox_is_not_followed_by_a_rotation() {
    let env = TestEnv::new(2);
    for name in ["tunnel-00", "tunnel-01"] {
        env.run_stdin(
            &["import", name, "--sandbox"],
            "an-existing-key-of-the-router-0123\n",
        )
        .success();
    }
    // "Nothing changes on day one": the adopted keys are not due.
    env.run(&["plan", "--sandbox", "--detailed-exitcode"])
        .code(0);
    env.run(&["plan", "--offline", "--detailed-exitcode"])
        .code(0);
}

#[test]
fn a_recipient_given_as_identity_is_named_as_such() {
    let env = TestEnv::new(2);
    env.run(&["apply", "--sandbox", "--auto-approve"]).success();
    let public = env.path("public.txt");
    std::fs::write(&public, format!("{}\n", env.recipient)).unwrap();
    let run = env
        .run(&["show", "tunnel-00", "--identity", public.to_str().unwrap()])
        .failure();
    assert!(
        run.stderr.contains("is an age recipient (a public key"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("non-identity"), "{}", run.stderr);
}

/// The names a README line `printf '%s\n' NAME... >> .gitignore` adds.
fn readme_ignores() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("printf '%s\\n' ") && l.ends_with(">> .gitignore"))
        .expect("the README's .gitignore line");
    let mut names: Vec<String> = line
        .trim_start_matches("printf '%s\\n' ")
        .trim_end_matches(">> .gitignore")
        .split_whitespace()
        .map(String::from)
        .collect();
    names.sort();
    names
}

/// The README's `git add ...` line of the same step.
fn readme_git_add() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    readme
        .lines()
        .find(|l| l.starts_with("git add psk.yaml"))
        .expect("the README's git add line")
        .split(" && ")
        .next()
        .unwrap()
        .to_string()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_readme_gitignore_and_the_example_agree_and_leave_git_status_clean() {
    let names = readme_ignores();
    let mut example: Vec<String> =
        std::fs::read_to_string(root().join("examples/github-actions/.gitignore"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
    example.sort();
    assert_eq!(
        names, example,
        "README.md and examples/github-actions/.gitignore"
    );

    // The README's steps in a new repository: schema, apply, then
    // "Commit the state" as written.
    let env = TestEnv::new(2);
    let repo = env.path("netops-psk");
    std::fs::create_dir(&repo).unwrap();
    std::fs::rename(env.config_path(), repo.join("psk.yaml")).unwrap();
    git(&repo, &["init", "-q"]);
    let schema = env
        .command(&["schema"])
        .current_dir(&repo)
        .output()
        .unwrap();
    std::fs::write(repo.join("psk.schema.json"), schema.stdout).unwrap();
    let apply = env
        .command(&["apply", "--sandbox", "--auto-approve"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(apply.status.success(), "{apply:?}");
    // A second apply leaves the previous state as the backup.
    let again = env
        .command(&["apply", "--sandbox", "--auto-approve"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(again.status.success(), "{again:?}");
    assert!(repo.join("psk.state.json.backup").is_file());
    std::fs::write(repo.join(".gitignore"), names.join("\n") + "\n").unwrap();
    let add = Command::new("bash")
        .args(["-ec", &readme_git_add()])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(add.status.success(), "{add:?}");
    let status = git(&repo, &["status", "--porcelain", "--untracked-files=all"]);
    let untracked: Vec<&str> = status.lines().filter(|l| l.starts_with("??")).collect();
    assert!(
        untracked.is_empty(),
        "untracked after the README's git add: {untracked:?}"
    );
}

/// The example scripts run the psk cargo built, wherever
/// `CARGO_TARGET_DIR` put it: here a target folder of the test's own,
/// whose `psk` leaves a mark when run, with a `cargo` on PATH that builds
/// nothing (the test binary's psk is already built).
#[test]
fn the_verified_example_uses_the_psk_in_cargo_target_dir() {
    let env = TestEnv::new(0);
    let bin = env.path("bin");
    let target = env.path("elsewhere/target");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(target.join("debug")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    write_script(
        &bin.join("cargo"),
        &format!("#!/bin/sh\n[ \"$1\" = build ] && exit 0\nexec '{cargo}' \"$@\"\n"),
    );
    let mark = env.path("used");
    write_script(
        &target.join("debug/psk"),
        &format!(
            "#!/bin/sh\ntouch '{}'\nexec '{}' \"$@\"\n",
            mark.display(),
            env!("CARGO_BIN_EXE_psk")
        ),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(root().join("examples/verified/run.sh"))
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", &target)
        .env("NO_COLOR", "1")
        .current_dir(env.path(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        mark.is_file(),
        "run.sh did not run $CARGO_TARGET_DIR/debug/psk"
    );
}

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
