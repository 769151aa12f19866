//! A test environment: a temp dir with psk.yaml and a fresh age identity,
//! the sandbox served on 127.0.0.1 by the test itself, and the real `psk`
//! binary run with a cleared environment.

#![allow(dead_code)]

pub mod actions;
pub mod fault_proxy;
mod run;
pub mod script;
pub mod seaweed;
pub mod strongswan;
pub mod tools;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use age::secrecy::ExposeSecret;
use psk::config::Config;
use psk::sandbox::{self, Running, Sandbox, SandboxCredentials, SandboxOptions};

pub use run::{to_run, Run};
pub use tools::tool;

pub const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
pub const TOKEN: &str = "test-token-5ecret-do-not-print";

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub identity: PathBuf,
    pub recipient: String,
    runtime: tokio::runtime::Runtime,
    sandbox: Option<Running>,
}

/// `n` tunnel ids, deterministic.
pub fn tunnel_id(i: usize) -> String {
    format!("{:032x}", 0xabc0_0000_u64 + i as u64)
}

/// psk.yaml for `tunnels` tunnels in site pairs. The policy lets a site's
/// tunnels rotate together (`site_parallel`), so every apply here settles
/// every tunnel; one-per-site deferral has its own tests.
pub fn config_text(recipient: &str, tunnels: usize, rotate_every: &str) -> String {
    let mut s = format!(
        "version: 1\naccount_id: {ACCOUNT}\nrecipients:\n  - {recipient}\npolicies:\n  default:\n    rotate_every: {rotate_every}\n    site_parallel: true\ntunnels:\n"
    );
    for i in 0..tunnels {
        s.push_str(&format!(
            "  - name: tunnel-{i:02}\n    id: {}\n    site: site-{}\n",
            tunnel_id(i),
            i / 2
        ));
    }
    s
}

/// Writes psk.yaml with `tunnels` tunnels whose keys psk makes itself
/// (`generator: local`).
pub fn local_config(env: &TestEnv, tunnels: usize) {
    let text = config_text(&env.recipient, tunnels, "90d").replace(
        "    site_parallel: true\n",
        "    site_parallel: true\n    generator: local\n",
    );
    env.write_config(&text);
}

/// Writes a file only its owner may read, as `age-keygen -o` writes an
/// identity: psk warns about an identity file others can read.
pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// The real binary run in `dir` with an empty environment (PATH aside):
/// exit code, stdout and stderr.
pub fn psk_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_psk"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs psk without the waits between retries, for tests of faults.
pub fn run_fast(env: &TestEnv, args: &[&str]) -> Run {
    let out = env
        .command(args)
        .env("PSK_TEST_NO_RETRY_DELAY", "1")
        .output()
        .unwrap();
    to_run(out).with_args(args)
}

impl TestEnv {
    pub fn new(tunnels: usize) -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let recipient = id.to_public().to_string();
        let identity = dir.path().join("identity.txt");
        write_private(&identity, &format!("{}\n", id.to_string().expose_secret()));
        std::fs::write(
            dir.path().join("psk.yaml"),
            config_text(&recipient, tunnels, "90d"),
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        TestEnv {
            dir,
            identity,
            recipient,
            runtime,
            sandbox: None,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("psk.yaml")
    }

    pub fn state_path(&self) -> PathBuf {
        self.path("psk.state.json")
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.path("ledger.jsonl")
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Starts the sandbox on 127.0.0.1 for the tunnels of psk.yaml.
    pub fn start_sandbox(&mut self) {
        self.start_sandbox_with(SandboxOptions::default());
    }

    /// Starts the sandbox with `options` (latency, faults, rate limit, seed);
    /// the ledger is always `ledger_path()`, and the token it accepts is
    /// always `TOKEN`, which `command` gives psk.
    pub fn start_sandbox_with(&mut self, options: SandboxOptions) {
        let config = Config::load(&self.config_path()).unwrap();
        let options = SandboxOptions {
            ledger: Some(self.ledger_path()),
            credentials: SandboxCredentials {
                token: TOKEN.into(),
                ..options.credentials
            },
            ..options
        };
        let sb = Arc::new(Sandbox::from_config(&config, None, &options).unwrap());
        let running = self.runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            sandbox::spawn(listener, sb).unwrap()
        });
        self.sandbox = Some(running);
    }

    /// Rotates a tunnel's PSK "outside psk", as a colleague in the
    /// dashboard would: a real `psk_generate` straight to the sandbox.
    pub fn rotate_outside_psk(&self, tunnel_id: &str) {
        let url = format!(
            "{}/accounts/{ACCOUNT}/magic/ipsec_tunnels/{tunnel_id}/psk_generate",
            self.sandbox.as_ref().expect("sandbox started").base_url()
        );
        let status = self.runtime.block_on(async {
            psk::tls::client()
                .post(url)
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap()
                .status()
        });
        assert!(status.is_success(), "{status}");
    }

    /// The base URL of the running sandbox.
    pub fn base_url(&self) -> String {
        self.sandbox.as_ref().expect("sandbox started").base_url()
    }

    /// Runs a future on the environment's runtime (the one serving the
    /// sandbox), for tests that drive psk's library client directly.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox.as_ref().expect("sandbox started").sandbox
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_psk"));
        cmd.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .args(args)
            .stdin(Stdio::null());
        if let Some(sb) = &self.sandbox {
            cmd.env("CLOUDFLARE_BASE_URL", sb.base_url())
                .env("CLOUDFLARE_API_TOKEN", TOKEN);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().unwrap();
        to_run(out).with_args(args)
    }

    /// Runs psk with `input` on its stdin (a pipe, not a terminal).
    pub fn run_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // psk may refuse before reading; a closed pipe is not a test failure.
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        to_run(child.wait_with_output().unwrap()).with_args(args)
    }

    /// Every PSK the sandbox made valid, per tunnel id, oldest first.
    pub fn ledger(&self) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let Ok(text) = std::fs::read_to_string(self.ledger_path()) else {
            return m;
        };
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            m.entry(v["tunnel_id"].as_str().unwrap().to_string())
                .or_default()
                .push(v["psk"].as_str().unwrap().to_string());
        }
        m
    }

    /// `run` as a whole-run snapshot holds it (`Run::normalized`), after
    /// checking that it shows no PSK and no token.
    #[track_caller]
    pub fn snapshot(&self, run: &Run) -> String {
        self.assert_no_secrets(&run.all());
        run.normalized()
    }

    /// Fails if any PSK from the ledger or the API token appears in `text`.
    pub fn assert_no_secrets(&self, text: &str) {
        assert!(!text.contains(TOKEN), "the API token leaked:\n{text}");
        for (id, psks) in self.ledger() {
            for p in psks {
                assert!(!text.contains(&p), "the PSK of {id} leaked:\n{text}");
            }
        }
    }

    /// The state as psk reads it (journal replayed): each tunnel's sealed
    /// PSK opened with the test identity, and the tunnels whose state marks
    /// the edge as uncertain (an intent or a pending key).
    pub fn sealed(&self) -> (BTreeMap<String, String>, Vec<String>) {
        let text = std::fs::read_to_string(&self.identity).unwrap();
        let mut ids = psk::seal::Identities::default();
        ids.add_text(&text, "test").unwrap();
        let Some(state) = psk::state::load(
            &psk::state::Location::File(self.state_path()),
            psk::state::NewState::Allowed,
        )
        .unwrap() else {
            return Default::default();
        };
        let mut sealed = BTreeMap::new();
        let mut uncertain = Vec::new();
        for r in state.tunnels.values() {
            if r.intent.is_some() || r.pending.is_some() {
                uncertain.push(r.tunnel_id.clone());
            }
            if let Some(s) = &r.psk {
                let psk = psk::seal::open(s, &ids).unwrap();
                sealed.insert(r.tunnel_id.clone(), psk.expose().to_string());
            }
        }
        (sealed, uncertain)
    }

    pub fn state_json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.state_path()).unwrap()).unwrap()
    }
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}
