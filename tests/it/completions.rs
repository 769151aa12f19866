//! What the CLI says of itself: `psk completions SHELL` (a script each
//! shell accepts, naming every command) and `psk --version`.

use crate::common::TestEnv;

#[test]
fn completion_scripts_name_every_command_and_parse() {
    let env = TestEnv::new(0);
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let run = env.run(&["completions", shell]).success();
        for command in ["plan", "apply", "force-unlock", "status", "completions"] {
            assert!(run.stdout.contains(command), "{shell}: {command}: {run:?}");
        }
    }
    // bash checks the script's syntax without running it.
    let script = env.path("psk.bash");
    let run = env.run(&["completions", "bash"]).success();
    std::fs::write(&script, &run.stdout).unwrap();
    let status = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("bash runs");
    assert!(status.success(), "bash -n refused the completion script");

    let run = env.run(&["completions", "tcsh"]).failure();
    assert!(run.stderr.contains("invalid value 'tcsh'"), "{run:?}");
}

/// `--version` names the commit the binary was built from, and its date.
#[test]
fn version_names_the_commit() {
    let env = TestEnv::new(0);
    let run = env.run(&["--version"]).success();
    let version = env!("CARGO_PKG_VERSION");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let expected = match (
        git(&["rev-parse", "--short=12", "HEAD"]),
        git(&["log", "-1", "--format=%cs"]),
    ) {
        (Some(commit), Some(date)) => format!("psk {version} (commit {commit}, {date})\n"),
        _ => format!("psk {version} (commit unknown)\n"),
    };
    assert_eq!(run.stdout, expected);
}
