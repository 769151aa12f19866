//! The command line's shape: each command takes only the options it uses,
//! every command's help has one layout, an option written before its
//! command says where it goes, `--at` takes a span from now, and the quick
//! start runs without GNU `date` and without escape codes off a terminal.

use std::process::Command;

use crate::common::TestEnv;

/// Every command, as `psk help` lists them.
const COMMANDS: &[&str] = &[
    "plan",
    "apply",
    "validate",
    "show",
    "deliver",
    "show-plan",
    "sandbox",
    "schema",
    "export",
    "reseal",
    "import",
    "force-unlock",
    "status",
    "completions",
];

/// Which commands take which shared option (and so which must refuse it).
#[test]
fn options_belong_to_the_commands_that_use_them() {
    let env = TestEnv::new(1);
    let api = ["plan", "apply", "import", "status"];
    let no_files = ["show-plan", "schema", "completions"];
    for command in COMMANDS {
        let help = env.run(&[command, "--help"]).success().stdout;
        let has = |flag: &str| {
            help.contains(&format!(" {flag} ")) || help.contains(&format!(" {flag}\n"))
        };
        for flag in [
            "--sandbox",
            "--retries",
            "--parallelism",
            "--connect-timeout",
        ] {
            assert_eq!(
                has(flag),
                api.contains(command),
                "{command} {flag}:\n{help}"
            );
        }
        for flag in ["--config", "--state"] {
            assert_eq!(
                has(flag),
                !no_files.contains(command),
                "{command} {flag}:\n{help}"
            );
        }
        assert_eq!(
            has("--no-color"),
            ["plan", "apply", "show-plan"].contains(command),
            "{command} --no-color"
        );
        assert!(
            help.contains("-v, --verbose...") && has("--help"),
            "{command}: -v and -h everywhere"
        );
    }
    // Refused, not ignored: the named ones from the issue.
    for args in [
        &["schema", "--sandbox"][..],
        &["show-plan", "plan.json", "--state", "x"],
        &["sandbox", "--sandbox"],
        &["sandbox", "--retries", "2"],
        &["completions", "bash", "--config", "x.yaml"],
    ] {
        let run = env.run(args).failure();
        assert!(run.stderr.contains("unexpected argument"), "{run:?}");
    }
}

/// Each command's help: its own options, then `--no-color`, `-v`, `-h`;
/// then "Files", then "Cloudflare API", then any heading of its own.
#[test]
fn every_help_has_one_layout() {
    let env = TestEnv::new(1);
    for command in COMMANDS {
        let help = env.run(&[command, "-h"]).success().stdout;
        let headings: Vec<&str> = help
            .lines()
            .filter(|l| l.ends_with(':') && !l.starts_with(' '))
            .collect();
        let at = |h: &str| headings.iter().position(|x| *x == h);
        let options = at("Options:").unwrap_or_else(|| panic!("{command}: {headings:?}"));
        if let Some(a) = at("Arguments:") {
            assert!(a < options, "{command}: {headings:?}");
        }
        if let Some(f) = at("Files:") {
            assert_eq!(
                f,
                options + 1,
                "{command}: Files right after Options: {headings:?}"
            );
        }
        if let Some(api) = at("Cloudflare API:") {
            assert_eq!(Some(api - 1), at("Files:"), "{command}: {headings:?}");
        }
        // The last entries under Options are the shared ones, in one order.
        let section: Vec<&str> = help
            .split("Options:\n")
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("  -") || l.starts_with("      --"))
            .collect();
        let tail: Vec<&str> = section.iter().rev().take(2).copied().collect();
        assert!(tail[0].contains("-h, --help"), "{command}: {section:?}");
        assert!(tail[1].contains("-v, --verbose"), "{command}: {section:?}");
    }
}

#[test]
fn an_option_before_its_command_says_where_it_goes() {
    let env = TestEnv::new(1);
    let run = env.run(&["-c", "psk.yaml", "validate"]).failure();
    assert!(
        run.stderr
            .contains("hint: options go after the command: `psk validate -c ...`"),
        "{run:?}"
    );
    let run = env.run(&["--sandbox", "plan"]).failure();
    assert!(run.stderr.contains("plan --sandbox"), "{run:?}");
    // An option no command takes there gets no such hint.
    let run = env.run(&["--sandbox", "schema"]).failure();
    assert!(!run.stderr.contains("hint:"), "{run:?}");
}

/// `--at +100d` is 100 days from now, for `plan` and `status` alike.
#[test]
fn at_takes_a_span_from_now() {
    let env = TestEnv::new(1);
    let before = chrono::Utc::now();
    let run = env
        .run(&["status", "--at", "+100d", "--format", "json"])
        .success();
    let after = chrono::Utc::now();
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(json["evaluated_at"].as_str().unwrap()).unwrap();
    let days = chrono::TimeDelta::days(100);
    // RFC 3339 in the JSON has whole seconds.
    assert!(
        at >= before + days - chrono::TimeDelta::seconds(1) && at <= after + days,
        "{at}"
    );

    let run = env
        .run(&["plan", "--offline", "--at", "-2h", "--format", "json"])
        .success();
    assert!(run.stdout.contains("\"evaluated_at\""), "{run:?}");
    let run = env.run(&["plan", "--offline", "--at", "+100"]).failure();
    assert!(run.stderr.contains("like +100d or -2h"), "{run:?}");
}

/// The quick start as CI runs it (stdout a pipe): it needs no `date` (a
/// `date` that fails is first on PATH) and prints no escape codes.
#[test]
fn the_quickstart_runs_portably_and_plainly() {
    let env = TestEnv::new(0);
    let bin = env.path("bin");
    std::fs::create_dir(&bin).unwrap();
    // The test binary's psk is already built: the build is only shown;
    // the script asks the real cargo where the target folder is.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let fake_cargo =
        format!("#!/bin/sh\necho \"cargo $*\" >&2\n[ \"$1\" = metadata ] && exec '{cargo}' \"$@\"\nexit 0\n");
    for (tool, script) in [
        ("cargo", fake_cargo.as_str()),
        (
            "date",
            "#!/bin/sh\necho 'date must not be needed' >&2\nexit 3\n",
        ),
    ] {
        let path = bin.join(tool);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_psk"));
    let target = exe.parent().unwrap().parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/examples/quickstart/run.sh"))
        .env_clear()
        .env("PATH", path)
        .env("HOME", env.path(""))
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("cargo build --locked"),
        "shows the build: {stderr}"
    );
    assert!(!stderr.contains("--quiet"), "{stderr}");
    assert!(
        !stdout.contains('\x1b') && !stderr.contains('\x1b'),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains("$ psk status --at +100d"), "{stdout}");
    assert!(stdout.contains("The quick start worked."), "{stdout}");
}
