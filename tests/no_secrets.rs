//! Secrets leak nowhere: every command, in every format, on success and on
//! error, against the sandbox; then every file psk left in its folder. A
//! PSK from the sandbox's ledger, a PSK given to `import`, or an API
//! credential in any of them fails the test. (Only `show` and `export`
//! without `--recipient` print PSKs, on request; they are not run here.)
//!
//! psk has no verbose or debug log level to raise: everything it says is
//! what these runs capture. `RUST_LOG`/`PSK_LOG` are set to `trace` anyway,
//! so a logger added later is covered from its first day.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::*;

const IMPORTED: &str = "imported-psk-0123456789-ABCDEFGHIJ-secret";
const API_KEY: &str = "global-api-key-5ecret-do-not-print";

struct Leaks<'a> {
    env: &'a TestEnv,
    seen: Vec<(String, String)>,
}

impl Leaks<'_> {
    fn run(&mut self, args: &[&str]) -> Run {
        let r = self
            .env
            .command(args)
            .env("RUST_LOG", "trace")
            .env("PSK_LOG", "trace")
            .output();
        let r = to_run(r.unwrap());
        self.seen.push((args.join(" "), r.all()));
        r
    }

    fn run_stdin(&mut self, args: &[&str], input: &str) -> Run {
        let r = self.env.run_stdin(args, input);
        self.seen.push((args.join(" "), r.all()));
        r
    }

    fn ok(&mut self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "psk {}: {r:?}", args.join(" "));
        r
    }

    fn fails(&mut self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 1, "psk {}: {r:?}", args.join(" "));
        r
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
    l.ok(&["validate"]);
    let _ = l.run(&["validate", "--format", "json"]);
    for f in ["human", "markdown", "json"] {
        l.ok(&["plan", "--format", f]);
    }
    l.ok(&["apply", "--auto-approve"]);
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
    l.ok(&["plan", "--replace", "tunnel-02", "--out", "plan.json"]);
    for f in ["human", "markdown", "json"] {
        l.ok(&["show-plan", "plan.json", "--format", f]);
    }
    l.ok(&["apply", "plan.json"]);
    l.ok(&["validate"]);

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
    let r = l.run_stdin(&["import", "tunnel-03", "--force"], IMPORTED);
    assert_eq!(r.code, 0, "{r:?}");
    let r = l.run_stdin(&["import", "tunnel-03"], IMPORTED);
    assert_eq!(r.code, 1, "refuses to replace without --force: {r:?}");
    let mut text = config_text(&env.recipient, 6, "90d");
    text = text.replace(
        &format!("  - {}\n", env.recipient),
        &format!("  - {}\n  - {other}\n", env.recipient),
    );
    env.write_config(&text);
    for f in ["human", "markdown", "json"] {
        l.ok(&["plan", "--format", f]);
    }
    l.ok(&["reseal", "--identity", &id]);
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
    let r = l
        .env
        .command(&["plan"])
        .env("CLOUDFLARE_BASE_URL", "http://127.0.0.1:9")
        .output();
    let r = to_run(r.unwrap());
    assert_eq!(r.code, 1, "{r:?}");
    l.seen.push(("plan (API down)".into(), r.all()));
    let r = l
        .env
        .command(&["plan"])
        .env_remove("CLOUDFLARE_API_TOKEN")
        .env("CLOUDFLARE_EMAIL", "ops@example.com")
        .env("CLOUDFLARE_API_KEY", API_KEY)
        .output();
    let r = to_run(r.unwrap());
    l.seen.push(("plan (global key)".into(), r.all()));
    let r = l
        .env
        .command(&["plan"])
        .env("CLOUDFLARE_API_TOKEN", format!("{TOKEN}\n\u{7f}"))
        .output();
    let r = to_run(r.unwrap());
    assert_eq!(
        r.code, 1,
        "a token that is no header value is refused: {r:?}"
    );
    l.seen.push(("plan (bad token)".into(), r.all()));
    l.fails(&["show", "tunnel-00"]);
    l.fails(&["export", "--identity", &id, "ghost"]);
    std::fs::write(env.path("broken.json"), b"{\"format\": \"psk-plan\"").unwrap();
    l.fails(&["show-plan", "broken.json"]);
    l.fails(&["apply", "broken.json"]);
    let r = l
        .env
        .command(&["apply", "--auto-approve", "--replace", "tunnel-00"])
        .env("PSK_FAILPOINT", "state-before-rename")
        .output();
    let r = to_run(r.unwrap());
    assert_ne!(r.code, 0, "{r:?}");
    l.seen.push(("apply (killed)".into(), r.all()));
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
    let mut url = None;
    while url.is_none() {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rest) = line.strip_prefix("export CLOUDFLARE_BASE_URL=") {
            url = Some(rest.trim().trim_matches('\'').trim_matches('"').to_string());
        }
        text.push_str(&line);
    }
    let url = url.unwrap_or_else(|| panic!("no base URL printed:\n{text}"));
    // Rotate through it, so the sandbox has PSKs it could print.
    let mut run = env.command(&["apply", "--auto-approve"]);
    run.env("CLOUDFLARE_BASE_URL", &url)
        .env("CLOUDFLARE_API_TOKEN", TOKEN);
    let r = to_run(run.output().unwrap());
    assert_eq!(r.code, 0, "{r:?}");
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
