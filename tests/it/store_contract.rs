//! The state store's contract, written once and run against both stores:
//! a folder (the state file beside psk.yaml) and a bucket (`s3://...` on a
//! real SeaweedFS on 127.0.0.1). `contract!` runs every case on each, as
//! `store_contract::folder::CASE` and `store_contract::bucket::CASE`; what
//! only one store has (torn journal lines and a full disk; the lock taken
//! from a live writer, the fault proxy) stays in `state_store`,
//! `custody_disk` and `remote_state`.
//!
//! After every case each key the sandbox's edge holds is one psk can open
//! from the store, or one its next plan flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::seaweed::{Seaweed, BUCKET, SECRET_KEY};
use crate::common::*;
use psk::sandbox::SandboxOptions;
use psk::state::remote::Remote;
use psk::state::{Location, Lock, NewState, State};

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        /// The state as a file beside psk.yaml.
        mod folder {
            $(#[test]
            fn $case() {
                super::$case(super::Kind::Folder)
            })*
        }
        /// The state as an object in a bucket.
        mod bucket {
            $(#[test]
            fn $case() {
                super::$case(super::Kind::Bucket)
            })*
        }
    };
}

contract!(
    a_state_round_trips_through_load_and_save,
    consecutive_applies_carry_the_state,
    sigkill_mid_apply_leaves_a_journal_the_next_run_replays,
    a_second_writer_is_refused_naming_the_first_or_waits,
    the_state_moves_to_the_other_store_and_back,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Folder,
    Bucket,
}

/// The object key, in the test bucket, of a state there.
const KEY: &str = "contract/psk.state.json";

/// One store under test, and a working folder (psk.yaml, the identity,
/// the sandbox) pointed at it.
struct Home {
    kind: Kind,
    env: TestEnv,
    /// The bucket: the store under test for [`Kind::Bucket`], and where a
    /// folder's state moves to.
    sw: Option<Seaweed>,
}

impl Home {
    /// `tunnels` tunnels, answered after `latency` each by the sandbox.
    fn new(kind: Kind, tunnels: usize, latency: Duration) -> Home {
        let mut env = TestEnv::new(tunnels);
        env.start_sandbox_with(SandboxOptions {
            latency,
            ..SandboxOptions::default()
        });
        let mut home = Home {
            kind,
            env,
            sw: None,
        };
        if kind == Kind::Bucket {
            home.start_bucket();
        }
        point_at(home.env.dir.path(), &home.at());
        home
    }

    fn start_bucket(&mut self) -> &Seaweed {
        self.sw.get_or_insert_with(Seaweed::start)
    }

    /// Where the state lives, as psk.yaml's `state:` says it: the file's
    /// whole path (so a second folder can name it too), or the object's URL.
    fn at(&self) -> String {
        match self.kind {
            Kind::Folder => self.env.state_path().display().to_string(),
            Kind::Bucket => format!("s3://{BUCKET}/{KEY}"),
        }
    }

    /// The same place on the other store: where the state moves to.
    fn elsewhere(&mut self) -> String {
        match self.kind {
            Kind::Folder => {
                self.start_bucket();
                format!("s3://{BUCKET}/moved/psk.state.json")
            }
            Kind::Bucket => self.env.path("moved.state.json").display().to_string(),
        }
    }

    fn aws_env(&self) -> Vec<(String, String)> {
        self.sw.as_ref().map(Seaweed::aws_env).unwrap_or_default()
    }

    /// psk in `dir`, with the bucket's credentials when there is one.
    fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = self.env.command(args);
        c.current_dir(dir).envs(self.aws_env());
        c
    }

    /// Runs psk in `dir`, checking it printed no secret.
    fn run_in(&self, dir: &Path, args: &[&str]) -> Run {
        let run = to_run(self.command(dir, args).output().unwrap()).with_args(args);
        assert!(
            !run.all().contains(SECRET_KEY),
            "the AWS secret key leaked:\n{}",
            run.all()
        );
        self.env.assert_no_secrets(&run.all());
        run
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_in(self.env.dir.path(), args)
    }

    /// A second working folder on the same state: a checkout of the same
    /// psk.yaml and identity on another machine, say.
    fn second_folder(&self) -> tempfile::TempDir {
        let b = tempfile::tempdir().unwrap();
        std::fs::copy(self.env.config_path(), b.path().join("psk.yaml")).unwrap();
        let id = std::fs::read_to_string(&self.env.identity).unwrap();
        write_private(&b.path().join("identity.txt"), &id);
        b
    }

    fn location(&self) -> Location {
        match self.kind {
            Kind::Folder => Location::File(self.env.state_path()),
            Kind::Bucket => {
                Location::Bucket(Remote::open_with(&self.at(), self.aws_env()).unwrap())
            }
        }
    }

    /// The state as psk reads it, journal replayed.
    fn state(&self) -> Option<State> {
        psk::state::load(&self.location(), NewState::Allowed).unwrap()
    }

    /// A sibling of the state (`.backup`, `.lock`) as stored, if there.
    fn stored(&self, suffix: &str) -> Option<Vec<u8>> {
        match self.kind {
            Kind::Folder => {
                let mut p = self.env.state_path().into_os_string();
                p.push(suffix);
                std::fs::read(PathBuf::from(p)).ok()
            }
            Kind::Bucket => self.sw.as_ref().unwrap().get(&format!("{KEY}{suffix}")),
        }
    }

    /// The commits of an apply not yet folded into the state.
    fn journal_commits(&self) -> usize {
        match self.kind {
            Kind::Folder => self
                .stored(".journal")
                .map_or(0, |j| j.iter().filter(|b| **b == b'\n').count()),
            Kind::Bucket => self
                .sw
                .as_ref()
                .unwrap()
                .list(&format!("{KEY}.journal"))
                .len(),
        }
    }

    /// The lock's holder record, while one is there (a psk that ended
    /// normally leaves the file's empty, and removes the bucket's; a
    /// killed one leaves its record in either).
    fn lock_record(&self) -> Option<serde_json::Value> {
        // A record being written reads as none yet.
        self.stored(".lock")
            .and_then(|r| serde_json::from_slice(&r).ok())
    }

    /// After a psk was killed: its lock record is cleared the way an
    /// operator does, `psk force-unlock ID --force`.
    fn clear_killed_lock(&self) {
        if let Some(h) = self.lock_record() {
            let id = h["id"].as_str().unwrap();
            self.run(&["force-unlock", id, "--force"]).success();
        }
    }

    /// Each tunnel's PSK opened from the store, and the tunnels whose
    /// record says the edge is uncertain (an intent or a pending key).
    fn sealed(&self) -> (BTreeMap<String, String>, Vec<String>) {
        let text = std::fs::read_to_string(&self.env.identity).unwrap();
        let mut ids = psk::seal::Identities::default();
        ids.add_text(&text, "test").unwrap();
        let Some(state) = self.state() else {
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

    /// Every key on the edge is the one sealed on the store.
    #[track_caller]
    fn check_settled(&self) {
        let (sealed, uncertain) = self.sealed();
        assert!(uncertain.is_empty(), "{uncertain:?}");
        for (id, psks) in self.env.ledger() {
            assert_eq!(sealed.get(&id), psks.last(), "tunnel {id}");
        }
    }

    /// Every tunnel's newest key on the edge is the sealed one, or the
    /// state marks the tunnel uncertain and the plan shows it as
    /// interrupted or pending.
    #[track_caller]
    fn check_no_key_lost(&self) {
        let (sealed, uncertain) = self.sealed();
        let flagged: Vec<String> = (self.env.ledger().into_iter())
            .filter(|(id, psks)| sealed.get(id) != psks.last())
            .map(|(id, _)| id)
            .collect();
        if flagged.is_empty() {
            return;
        }
        let plan = self
            .run(&["plan", "--offline", "--format", "json"])
            .success();
        let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
        for id in flagged {
            assert!(
                uncertain.contains(&id),
                "tunnel {id}: the sealed PSK is not the newest on the edge and nothing says so"
            );
            let action = (v["actions"].as_array().unwrap().iter())
                .find(|a| a["tunnel_id"] == id.as_str())
                .unwrap_or_else(|| panic!("no action for uncertain tunnel {id}:\n{}", plan.stdout));
            let codes: Vec<&str> = (action["reasons"].as_array().unwrap().iter())
                .map(|r| r["code"].as_str().unwrap())
                .collect();
            assert!(
                codes.contains(&"interrupted") || codes.contains(&"pending"),
                "{id}: {codes:?}"
            );
        }
    }
}

/// psk.yaml of `dir` pointed at `at`.
fn point_at(dir: &Path, at: &str) {
    let p = dir.join("psk.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, format!("state: {at}\n{text}")).unwrap();
}

fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `apply` replacing tunnels 00..=05 one at a time.
const REPLACE_SIX: &[&str] = &[
    "apply",
    "--auto-approve",
    "--parallelism",
    "1",
    "--replace",
    "tunnel-00",
    "--replace",
    "tunnel-01",
    "--replace",
    "tunnel-02",
    "--replace",
    "tunnel-03",
    "--replace",
    "tunnel-04",
    "--replace",
    "tunnel-05",
];

/// What psk writes it reads back the same: through the commands, and
/// through the library's load and save under the lock (the serial bumped,
/// the bytes deterministic, the version replaced kept as the backup).
fn a_state_round_trips_through_load_and_save(kind: Kind) {
    let home = Home::new(kind, 3, Duration::ZERO);
    home.run(&["apply", "--auto-approve"]).success();
    home.check_settled();
    let first = home.state().expect("apply wrote a state");
    assert_eq!(first.tunnels.len(), 3);
    assert_eq!(home.stored("").unwrap(), first.to_bytes());

    let lock = Lock::acquire(&home.location(), "test", Duration::ZERO).unwrap();
    let mut state = psk::state::load_for_write(&lock, NewState::IfNoTraces)
        .unwrap()
        .unwrap();
    assert_eq!(state, first);
    psk::state::save(&lock, &mut state).unwrap();
    drop(lock);
    let again = home.state().unwrap();
    assert_eq!(again, state);
    assert_eq!(
        (&again.lineage, again.serial),
        (&first.lineage, first.serial + 1)
    );
    assert_eq!(home.stored("").unwrap(), again.to_bytes());
    assert_eq!(home.stored(".backup").unwrap(), first.to_bytes());
    assert!(home.lock_record().is_none(), "the lock is released");

    // The PSK opens from the store (show prints it: compared, not run()).
    let show = home
        .command(
            home.env.dir.path(),
            &[
                "show",
                "tunnel-01",
                "-i",
                home.env.identity.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
    assert!(show.status.success(), "{show:?}");
    let newest = home.env.ledger()[&tunnel_id(1)].last().unwrap().clone();
    assert_eq!(String::from_utf8(show.stdout).unwrap().trim(), newest);
    let plan = home.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "nothing is due: {plan:?}");
}

/// Each apply starts from the state the last one left (lineage kept,
/// serial higher, other tunnels' keys untouched), folds its journal in,
/// and leaves nothing due.
fn consecutive_applies_carry_the_state(kind: Kind) {
    let home = Home::new(kind, 4, Duration::ZERO);
    home.run(&["apply", "--auto-approve"]).success();
    let mut last = home.state().unwrap();
    for i in 0..3 {
        let name = format!("tunnel-{i:02}");
        home.run(&["apply", "--auto-approve", "--replace", &name])
            .success();
        let now = home.state().unwrap();
        assert_eq!(now.lineage, last.lineage, "one lineage across applies");
        assert!(
            now.serial > last.serial,
            "{} after {}",
            now.serial,
            last.serial
        );
        for (k, r) in &now.tunnels {
            let changed = r.psk != last.tunnels[k].psk;
            assert_eq!(changed, r.tunnel_id == tunnel_id(i), "{}", r.tunnel_id);
        }
        assert_eq!(home.journal_commits(), 0, "the journal is folded in");
        home.check_settled();
        let plan = home.run(&["plan", "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "nothing is due after apply {i}: {plan:?}");
        last = now;
    }
}

/// A psk killed mid-apply leaves commits that every reader replays and the
/// next writer folds in: no key is lost.
fn sigkill_mid_apply_leaves_a_journal_the_next_run_replays(kind: Kind) {
    let home = Home::new(kind, 8, Duration::from_millis(120));
    home.run(&["apply", "--auto-approve"]).success();
    let mut killed_with_journal = 0;
    for round in 0..3 {
        let mut child = home
            .command(home.env.dir.path(), REPLACE_SIX)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed after 1, 2 or 3 commits became durable.
        wait_for(
            || home.journal_commits() > round || child.try_wait().unwrap().is_some(),
            "journal commits",
        );
        let _ = child.kill();
        child.wait().unwrap();
        if home.journal_commits() > 0 {
            killed_with_journal += 1;
        }
        home.check_no_key_lost();
        home.clear_killed_lock();
    }
    assert!(killed_with_journal > 0, "no kill landed mid-apply");
    home.run(&["apply", "--auto-approve"]).success();
    assert_eq!(home.journal_commits(), 0);
    home.check_settled();
}

/// While one apply runs, another (from a second folder on the same state)
/// is refused naming it, or waits for it with `--lock-timeout`.
fn a_second_writer_is_refused_naming_the_first_or_waits(kind: Kind) {
    let home = Home::new(kind, 6, Duration::from_millis(120));
    let other = home.second_folder();
    let first = home
        .command(
            home.env.dir.path(),
            &["apply", "--auto-approve", "--parallelism", "1"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        || home.lock_record().is_some_and(|h| h["pid"] == first.id()),
        "the first apply's lock",
    );
    let id = home.lock_record().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let refused = home
        .run_in(other.path(), &["apply", "--auto-approve"])
        .failure();
    for said in [
        "is locked by".to_string(),
        format!("pid {}", first.id()),
        "running `psk apply`".to_string(),
        format!("lock ID {id}"),
        "--lock-timeout".to_string(),
    ] {
        assert!(refused.stderr.contains(&said), "no `{said}` in {refused:?}");
    }
    let waited = home
        .run_in(
            other.path(),
            &[
                "apply",
                "--auto-approve",
                "--lock-timeout",
                "60s",
                "--replace",
                "tunnel-00",
            ],
        )
        .success();
    assert!(waited.stderr.contains("waiting"), "{waited:?}");
    let first = to_run(first.wait_with_output().unwrap());
    assert_eq!(first.code, 0, "{first:?}");
    assert!(home.lock_record().is_none(), "the lock is released");
    assert_eq!(home.journal_commits(), 0);
    home.check_settled();
}

/// `move-state` takes the state to the other store (lineage and serial
/// kept); `--state` applies there; and it comes back with what was done
/// there.
fn the_state_moves_to_the_other_store_and_back(kind: Kind) {
    let mut home = Home::new(kind, 3, Duration::ZERO);
    home.run(&["apply", "--auto-approve"]).success();
    let here = home.at();
    let there = home.elsewhere();
    let before = home.state().unwrap();

    let moved = home.run(&["move-state", &there]).success();
    assert!(moved.stdout.contains(&format!("to {there}")), "{moved:?}");
    let plan = home.run(&["plan", "--state", &there, "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "the copy is the state as it was: {plan:?}");
    home.run(&[
        "apply",
        "--auto-approve",
        "--state",
        &there,
        "--replace",
        "tunnel-00",
    ])
    .success();
    // The original did not move on; the copy did.
    assert_eq!(home.state().unwrap(), before);
    let plan = home.run(&["plan", "--state", &there, "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan:?}");

    // Back again, with the rotation made there.
    home.run(&["move-state", &here, "--state", &there])
        .success();
    let back = home.state().unwrap();
    assert_eq!(back.lineage, before.lineage);
    assert!(back.serial > before.serial);
    home.check_settled();
    let plan = home.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan:?}");
}
