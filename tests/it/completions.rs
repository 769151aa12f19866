//! `psk completions SHELL`: a script each shell accepts, naming every
//! command.

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
