//! Secrets leak nowhere: every command, in every format, on success and on
//! error, against the sandbox; then every file psk left in its folder. A
//! PSK from the sandbox's ledger, a PSK given to `import`, or an API
//! credential in any of them fails the test. (Only `show` and `export`
//! without `--recipient` print PSKs, on request; they are not run here.)
//!
//! Every command runs at psk's most verbose log level (`-vvv`, and
//! `PSK_LOG`/`RUST_LOG=trace` too), and the test checks that the log lines
//! are really there (HTTP requests, dry-run verdicts, the lock, state and
//! plan files), so logging that silently stopped would fail it, and that
//! they stay on stderr, off stdout.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::common::*;

const IMPORTED: &str = "imported-psk-0123456789-ABCDEFGHIJ-secret";
const API_KEY: &str = "global-api-key-5ecret-do-not-print";

struct Leaks<'a> {
    env: &'a TestEnv,
    seen: Vec<(String, String)>,
}

/// The line `-vvv` starts every run's log with.
const LOG_START: &str = "DEBUG psk::cli::log: psk logging started";

/// `args` at the most verbose level.
fn verbose<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.push("-vvv");
    v
}

/// A verbose run logs, and only on stderr.
fn assert_logged(what: &str, r: &Run) {
    assert!(
        r.stderr.contains(LOG_START),
        "`psk {what}` logged nothing: {r:?}"
    );
    assert!(
        !r.stdout.contains(" psk::"),
        "`psk {what}` logged on stdout: {r:?}"
    );
}

/// Asserts that `r`'s log holds every one of `lines`.
fn assert_log_has(what: &str, r: &Run, lines: &[&str]) {
    for l in lines {
        assert!(
            r.stderr.contains(l),
            "`psk {what}` did not log `{l}`: {r:?}"
        );
    }
}

impl Leaks<'_> {
    fn run(&mut self, args: &[&str]) -> Run {
        let r = self
            .env
            .command(&verbose(args))
            .env("RUST_LOG", "trace")
            .env("PSK_LOG", "trace")
            .output();
        let r = to_run(r.unwrap()).with_args(&verbose(args));
        assert_logged(&args.join(" "), &r);
        self.seen.push((args.join(" "), r.all()));
        r
    }

    fn run_stdin(&mut self, args: &[&str], input: &str) -> Run {
        let r = self.env.run_stdin(&verbose(args), input);
        assert_logged(&args.join(" "), &r);
        self.seen.push((args.join(" "), r.all()));
        r
    }

    /// A run with its own environment, at the most verbose level.
    fn run_cmd(&mut self, what: &str, mut cmd: std::process::Command) -> Run {
        let r = to_run(cmd.arg("-vvv").output().unwrap());
        assert_logged(what, &r);
        self.seen.push((what.into(), r.all()));
        r
    }

    #[track_caller]
    fn ok(&mut self, args: &[&str]) -> Run {
        self.run(args).success()
    }

    #[track_caller]
    fn fails(&mut self, args: &[&str]) -> Run {
        self.run(args).failure()
    }

    /// Checks every captured output and every file in the folder.
    fn check(&self) {
        let secrets = self.secrets();
        assert!(secrets.len() > 10, "the ledger should hold many PSKs");
        for (what, text) in &self.seen {
            for s in &secrets {
                assert!(
                    !text.contains(s.as_str()),
                    "`psk {what}` printed a secret:\n{text}"
                );
            }
        }
        for e in std::fs::read_dir(self.env.dir.path()).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            // The sandbox's own record of valid keys, and our identity.
            if name == "ledger.jsonl" || name.starts_with("identity") {
                continue;
            }
            let bytes = std::fs::read(e.path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for s in &secrets {
                assert!(
                    !text.contains(s.as_str()),
                    "{name} holds a secret in plain text"
                );
            }
        }
    }

    fn secrets(&self) -> Vec<String> {
        let mut v: Vec<String> = self.env.ledger().into_values().flatten().collect();
        v.push(TOKEN.to_string());
        v.push(API_KEY.to_string());
        v.push(IMPORTED.to_string());
        v
    }
}

#[test]
fn no_command_prints_or_writes_a_secret() {
    let mut env = TestEnv::new(6);
    env.start_sandbox();
    let other = age::x25519::Identity::generate().to_public().to_string();
    let id = env.identity.to_str().unwrap().to_string();
    let mut l = Leaks {
        env: &env,
        seen: Vec::new(),
    };

    // Before any state, then the first apply (every tunnel generated).
    let r = l.ok(&["validate"]);
    assert_log_has("validate", &r, &["INFO psk::state: no state file yet"]);
    let _ = l.run(&["validate", "--format", "json"]);
    for f in ["human", "markdown", "json"] {
        let r = l.ok(&["plan", "--format", f]);
        assert_log_has(
            "plan",
            &r,
            &[
                "INFO psk::cli::session: psk.yaml loaded",
                &format!("TRACE psk::cloudflare: HTTP request sent method=GET path=/accounts/{ACCOUNT}/magic/ipsec_tunnels attempt=1"),
                &format!("DEBUG psk::cloudflare: HTTP request method=GET path=/accounts/{ACCOUNT}/magic/ipsec_tunnels status=200 attempt=1"),
                &format!("INFO psk::remote: listed the account's IPsec tunnels account={ACCOUNT} tunnels=6"),
                "psk_generate?validate_only=true status=200 attempt=1",
                &format!("INFO psk::remote: dry run tunnel=tunnel-00 tunnel_id={} account={ACCOUNT} generator=\"cloudflare\" verdict=\"accepted\"", tunnel_id(0)),
            ],
        );
        if f == "json" {
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            assert_eq!(v["actions"].as_array().unwrap().len(), 6);
        }
    }
    let r = l.ok(&["apply", "--auto-approve"]);
    assert_log_has(
        "apply",
        &r,
        &[
            "INFO psk::state::lock: state lock acquired lock=psk.state.json.lock",
            "operation=\"apply\"",
            &format!("DEBUG psk::cloudflare: HTTP request method=POST path=/accounts/{ACCOUNT}/magic/ipsec_tunnels/{}/psk_generate status=200 attempt=1", tunnel_id(5)),
            "INFO psk::state::lock: state lock released lock=psk.state.json.lock",
        ],
    );
    l.ok(&[
        "apply",
        "--auto-approve",
        "--json",
        "--replace",
        "tunnel-00",
    ]);

    // Drift, a forced rotation and saved plans in every format.
    env.rotate_outside_psk(&tunnel_id(1));
    for f in ["human", "markdown", "json"] {
        let _ = l.run(&["plan", "--format", f, "--replace", "tunnel-02"]);
        let _ = l.run(&["plan", "--offline", "--format", f]);
    }
    let r = l.ok(&["plan", "--replace", "tunnel-02", "--out", "plan.json"]);
    assert_log_has(
        "plan --out",
        &r,
        &["INFO psk::planfile: plan file written path=plan.json format_version=1 actions=2"],
    );
    for f in ["human", "markdown", "json"] {
        let r = l.ok(&["show-plan", "plan.json", "--format", f]);
        assert_log_has(
            "show-plan",
            &r,
            &["INFO psk::planfile: plan file loaded path=plan.json"],
        );
    }
    let r = l.ok(&["apply", "plan.json"]);
    assert_log_has(
        "apply plan.json",
        &r,
        &[
            "INFO psk::planfile: plan file loaded path=plan.json",
            "INFO psk::state: state loaded for writing path=psk.state.json serial=",
        ],
    );
    let r = l.ok(&["validate"]);
    assert_log_has(
        "validate",
        &r,
        &["INFO psk::state: state loaded path=psk.state.json serial="],
    );

    // Custody: export re-sealed to someone else, import, reseal.
    for f in ["json", "env", "csv"] {
        let r = l.ok(&[
            "export",
            "--identity",
            &id,
            "--recipient",
            &other,
            "--format",
            f,
        ]);
        assert!(r.stdout.contains("BEGIN AGE ENCRYPTED FILE"), "{r:?}");
    }
    let r = l
        .run_stdin(&["import", "tunnel-03", "--force"], IMPORTED)
        .success();
    assert_log_has(
        "import",
        &r,
        &[
            "operation=\"import\"",
            "INFO psk::state: state written path=psk.state.json serial=",
            "state lock released",
        ],
    );
    // Refuses to replace without --force.
    l.run_stdin(&["import", "tunnel-03"], IMPORTED).failure();
    let mut text = config_text(&env.recipient, 6, "90d");
    text = text.replace(
        &format!("  - {}\n", env.recipient),
        &format!("  - {}\n  - {other}\n", env.recipient),
    );
    env.write_config(&text);
    for f in ["human", "markdown", "json"] {
        l.ok(&["plan", "--format", f]);
    }
    let r = l.ok(&["reseal", "--identity", &id]);
    assert_log_has(
        "reseal",
        &r,
        &["operation=\"reseal\"", "INFO psk::state: state written"],
    );
    l.ok(&[
        "apply",
        "--auto-approve",
        "--replace",
        "tunnel-04",
        "--replace",
        "tunnel-05",
    ]);

    // Errors: unreachable API, refused credentials shape, missing identity,
    // unknown tunnel, a damaged plan, a killed apply.
    let mut cmd = l.env.command(&["plan"]);
    cmd.env("CLOUDFLARE_BASE_URL", "http://127.0.0.1:9")
        .env("PSK_TEST_NO_RETRY_DELAY", "1");
    let r = l.run_cmd("plan (API down)", cmd).failure();
    assert_log_has(
        "plan (API down)",
        &r,
        &[
            &format!("DEBUG psk::cloudflare: HTTP request got no answer method=GET path=/accounts/{ACCOUNT}/magic/ipsec_tunnels attempt=1"),
            "WARN psk::cloudflare: retrying method=GET",
            "retry=3 of=3",
            "INFO psk::cloudflare: request failed method=GET",
            "attempts=4",
        ],
    );
    let mut cmd = l.env.command(&["plan"]);
    cmd.env_remove("CLOUDFLARE_API_TOKEN")
        .env("CLOUDFLARE_EMAIL", "ops@example.com")
        .env("CLOUDFLARE_API_KEY", API_KEY);
    let r = l.run_cmd("plan (global key)", cmd);
    assert_log_has("plan (global key)", &r, &["HTTP request method=GET"]);
    let mut cmd = l.env.command(&["plan"]);
    cmd.env("CLOUDFLARE_API_TOKEN", format!("{TOKEN}\n\u{7f}"));
    // A token that is no header value is refused.
    l.run_cmd("plan (bad token)", cmd).failure();
    l.fails(&["show", "tunnel-00"]);
    l.fails(&["export", "--identity", &id, "ghost"]);
    std::fs::write(env.path("broken.json"), b"{\"format\": \"psk-plan\"").unwrap();
    l.fails(&["show-plan", "broken.json"]);
    l.fails(&["apply", "broken.json"]);
    let mut cmd = l
        .env
        .command(&["apply", "--auto-approve", "--replace", "tunnel-00"]);
    cmd.env("PSK_FAILPOINT", "state-before-rename");
    let r = l.run_cmd("apply (killed)", cmd);
    assert_ne!(r.code, 0, "{r:?}");
    l.ok(&["validate"]);

    l.check();
    // The check is not vacuous: the state really holds sealed keys.
    let state = String::from_utf8(read(&env.state_path())).unwrap();
    assert!(state.contains("BEGIN AGE ENCRYPTED FILE"));
}

/// `psk sandbox` prints how to reach it, never a PSK it generates.
#[test]
fn the_sandbox_command_prints_no_psk() {
    let env = TestEnv::new(3);
    let mut child = env
        .command(&[
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--ledger",
            "ledger.jsonl",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let (mut url, mut token) = (None, None);
    while url.is_none() || token.is_none() {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rest) = line.strip_prefix("export CLOUDFLARE_BASE_URL=") {
            url = Some(rest.trim().trim_matches('\'').trim_matches('"').to_string());
        }
        if let Some(rest) = line.strip_prefix("export CLOUDFLARE_API_TOKEN=") {
            token = Some(rest.trim().to_string());
        }
        text.push_str(&line);
    }
    let url = url.unwrap_or_else(|| panic!("no base URL printed:\n{text}"));
    // The sandbox's own token, which it prints: it accepts no other.
    let token = token.unwrap_or_else(|| panic!("no token printed:\n{text}"));
    // Rotate through it, so the sandbox has PSKs it could print.
    let mut run = env.command(&["apply", "--auto-approve", "-vvv"]);
    run.env("CLOUDFLARE_BASE_URL", &url)
        .env("CLOUDFLARE_API_TOKEN", &token);
    let r = to_run(run.output().unwrap()).success();
    assert_logged("apply", &r);
    assert!(r.stderr.contains("psk_generate status=200"), "{r:?}");
    child.kill().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    child.wait().unwrap();
    let all = format!("{text}{rest}{err}{}", r.all());
    let psks: Vec<String> = env.ledger().into_values().flatten().collect();
    assert_eq!(psks.len(), 3, "{all}");
    for p in psks {
        assert!(!all.contains(&p), "the sandbox printed a PSK:\n{all}");
    }
    assert!(!all.contains(TOKEN), "{all}");
}

/// Debug output of the types that hold or pass secrets redacts them.
#[test]
fn debug_formatting_redacts_secrets() {
    use psk::cloudflare::{Client, ClientOptions, Credentials};
    let psk = psk::seal::Psk::new("plain-psk-value-1234567890".into());
    let d = format!("{psk:?}");
    assert!(!d.contains("plain-psk-value"), "{d}");

    let token = Credentials::Token(TOKEN.into());
    let key = Credentials::Key {
        email: "ops@example.com".into(),
        key: API_KEY.into(),
    };
    for c in [&token, &key] {
        let d = format!("{c:?}");
        assert!(!d.contains(TOKEN) && !d.contains(API_KEY), "{d}");
        let client = Client::new(
            c,
            ClientOptions {
                base_url: "https://user:hunter2-password@127.0.0.1:1/client/v4".into(),
                ..ClientOptions::default()
            },
        )
        .unwrap();
        let d = format!("{client:?}");
        assert!(
            !d.contains(TOKEN) && !d.contains(API_KEY) && !d.contains("hunter2-password"),
            "{d}"
        );
    }

    // Config and state hold no plaintext secrets, but their Debug output
    // must not grow one: psk.yaml has public recipients, the state armor.
    let env = TestEnv::new(2);
    let config = psk::config::Config::load(&env.config_path()).unwrap();
    let d = format!("{config:?}");
    assert!(d.contains("tunnel-00"), "{d}");
    let mut identities = psk::seal::Identities::default();
    identities.add_file(&env.identity).unwrap();
    let d = format!("{identities:?}");
    let secret_key = std::fs::read_to_string(&env.identity).unwrap();
    assert!(
        !d.contains(secret_key.trim()),
        "identities leak in Debug: {d}"
    );
    assert!(!d.contains("AGE-SECRET-KEY"), "{d}");
}

/// No snapshot holds a credential or anything shaped like a PSK the sandbox
/// makes (32 letters and digits, capitals among them; tunnel and account
/// ids are lowercase hex). `TestEnv::snapshot` checks each run against the
/// ledger as it is taken; this catches a snapshot made any other way.
#[test]
fn no_snapshot_holds_a_secret() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/snapshots");
    let psk_like = regex::Regex::new(r"\b[A-Za-z0-9]{32}\b").unwrap();
    let mut files = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for secret in [TOKEN, API_KEY, IMPORTED] {
            assert!(
                !text.contains(secret),
                "{}: holds `{secret}`",
                path.display()
            );
        }
        for m in psk_like.find_iter(&text) {
            assert!(
                !m.as_str().contains(|c: char| c.is_ascii_uppercase()),
                "{}: `{}` looks like a PSK",
                path.display(),
                m.as_str()
            );
        }
        files += 1;
    }
    assert!(files > 10, "no snapshots found in {}", dir.display());
}
