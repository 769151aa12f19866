//! What only the bucket has, against a real SeaweedFS on 127.0.0.1:
//! moving a state there and back with saved plans bound to it, the
//! compare-and-swap that refuses a stale writer, fencing of a writer whose
//! lock was forced (paused while it waited on the store, or in the window
//! after the fence), an outage or a hung store mid-apply, faults injected
//! by a proxy, and the edges of the set-up (credentials, a misspelled
//! bucket). What both stores promise (load and save, consecutive applies,
//! SIGKILL then replay, a second writer refused) is `store_contract`.
//! After every one: each key the sandbox's edge holds is one psk can open,
//! or one its next plan flags.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::fault_proxy::{Action, FaultProxy};
use crate::common::seaweed::{Seaweed, BUCKET, SECRET_KEY};
use crate::common::*;
use psk::sandbox::SandboxOptions;
use psk::state::remote::{self, Remote};
use psk::state::{Location, Lock, NewState};

fn url(name: &str) -> String {
    format!("s3://{BUCKET}/{name}/psk.state.json")
}

/// The object key of `url` in the bucket.
fn key(url: &str) -> String {
    url.strip_prefix(&format!("s3://{BUCKET}/"))
        .unwrap()
        .to_string()
}

/// psk.yaml of `dir` pointed at `url`.
fn point_at(dir: &Path, url: &str) {
    let p = dir.join("psk.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, format!("state: {url}\n{text}")).unwrap();
}

/// A second working folder: a checkout of the same psk.yaml (and the
/// same identity) on another machine, say.
fn second_folder(env: &TestEnv) -> tempfile::TempDir {
    let b = tempfile::tempdir().unwrap();
    std::fs::copy(env.config_path(), b.path().join("psk.yaml")).unwrap();
    let id = std::fs::read_to_string(&env.identity).unwrap();
    write_private(&b.path().join("identity.txt"), &id);
    b
}

fn command(env: &TestEnv, sw: &Seaweed, dir: &Path, args: &[&str]) -> Command {
    let mut c = env.command(args);
    c.current_dir(dir).envs(sw.aws_env());
    c
}

fn run(env: &TestEnv, sw: &Seaweed, dir: &Path, args: &[&str]) -> Run {
    let out = command(env, sw, dir, args).output().unwrap();
    let run = to_run(out).with_args(args);
    assert!(
        !run.all().contains(SECRET_KEY),
        "the AWS secret key leaked:\n{}",
        run.all()
    );
    env.assert_no_secrets(&run.all());
    run
}

fn open(sw: &Seaweed, url: &str) -> Remote {
    Remote::open_with(url, sw.aws_env()).unwrap()
}

/// The state on the store (journal replayed): each tunnel's PSK opened
/// with the test identity, and the tunnels the state marks uncertain.
fn sealed(env: &TestEnv, sw: &Seaweed, url: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let text = std::fs::read_to_string(&env.identity).unwrap();
    let mut ids = psk::seal::Identities::default();
    ids.add_text(&text, "test").unwrap();
    let Some(state) = remote::store::load(&open(sw, url)).unwrap() else {
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

/// The invariant: every tunnel's newest key on the edge is the sealed one,
/// or the state marks the tunnel uncertain and the plan shows it as
/// interrupted or pending.
fn check_no_key_lost(env: &TestEnv, sw: &Seaweed, url: &str) {
    let (sealed, uncertain) = sealed(env, sw, url);
    let mut flagged = Vec::new();
    for (id, psks) in env.ledger() {
        if sealed.get(&id) != psks.last() {
            assert!(
                uncertain.contains(&id),
                "tunnel {id}: the sealed PSK is not the newest on the edge and nothing says so"
            );
            flagged.push(id);
        }
    }
    if flagged.is_empty() {
        return;
    }
    let plan = run(
        env,
        sw,
        env.dir.path(),
        &["plan", "--offline", "--format", "json"],
    )
    .success();
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    for id in flagged {
        let a = v["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["tunnel_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no action for uncertain tunnel {id}:\n{}", plan.stdout));
        let codes: Vec<&str> = a["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["code"].as_str().unwrap())
            .collect();
        assert!(
            codes.contains(&"interrupted") || codes.contains(&"pending"),
            "{id}: {codes:?}"
        );
    }
}

/// Every key on the edge is the one sealed in the state: nothing pending.
fn check_settled(env: &TestEnv, sw: &Seaweed, url: &str) {
    let (sealed, uncertain) = sealed(env, sw, url);
    assert!(uncertain.is_empty(), "{uncertain:?}");
    for (id, psks) in env.ledger() {
        assert_eq!(sealed.get(&id), psks.last(), "tunnel {id}");
    }
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

/// A sandbox slow enough that an apply of `tunnels` tunnels one at a time
/// takes a few seconds.
fn slow_env(tunnels: usize) -> TestEnv {
    let mut env = TestEnv::new(tunnels);
    env.start_sandbox_with(SandboxOptions {
        latency: Duration::from_millis(120),
        ..SandboxOptions::default()
    });
    env
}

#[test]
fn a_state_moves_to_a_bucket_and_back_and_plans_bind_to_it() {
    let sw = Seaweed::start();
    let mut env = TestEnv::new(4);
    env.start_sandbox();
    let here = env.dir.path().to_path_buf();
    run(&env, &sw, &here, &["apply", "--auto-approve"]).success();
    let team = url("team");

    // Day one: the local state moves to the bucket, lineage and serial kept.
    let moved = run(&env, &sw, &here, &["move-state", &team]).success();
    assert!(moved.stdout.contains(&format!("to {team}")), "{moved:?}");
    let local = env.state_json();
    let remote: serde_json::Value = serde_json::from_slice(&sw.get(&key(&team)).unwrap()).unwrap();
    assert_eq!(remote, local, "the copy is the state as it was");
    let again = run(&env, &sw, &here, &["move-state", &team]).success();
    assert!(again.stdout.contains("Nothing to do"), "{again:?}");

    point_at(&here, &team);
    let plan = run(&env, &sw, &here, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "nothing is due: {plan:?}");
    // The PSK opens from the bucket (show prints it: compared, not run()).
    let show = command(
        &env,
        &sw,
        &here,
        &[
            "show",
            "tunnel-00",
            "--identity",
            env.identity.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(show.status.success(), "{show:?}");
    let newest = env.ledger()[&tunnel_id(0)].last().unwrap().clone();
    assert_eq!(String::from_utf8(show.stdout).unwrap().trim(), newest);

    // A saved plan binds to the remote state's lineage and serial: another
    // operator's apply in between makes it stale.
    run(
        &env,
        &sw,
        &here,
        &["plan", "--replace", "tunnel-00", "--out", "p.json"],
    )
    .success();
    let other = second_folder(&env);
    run(
        &env,
        &sw,
        other.path(),
        &["apply", "--auto-approve", "--replace", "tunnel-01"],
    )
    .success();
    let stale = run(&env, &sw, &here, &["apply", "p.json"]).failure();
    assert!(
        stale.stderr.contains("refusing to apply p.json"),
        "{stale:?}"
    );
    assert!(stale.stderr.contains("the state changed"), "{stale:?}");
    check_settled(&env, &sw, &team);

    // The old local copy is behind the bucket's: moving it back over the
    // bucket is refused; the bucket's state moves back to a file.
    let behind = run(
        &env,
        &sw,
        &here,
        &["move-state", &team, "--state", "psk.state.json"],
    )
    .failure();
    assert!(behind.stderr.contains("newer version"), "{behind:?}");
    run(&env, &sw, &here, &["move-state", "back.json"]).success();
    let back: serde_json::Value =
        serde_json::from_slice(&std::fs::read(here.join("back.json")).unwrap()).unwrap();
    let remote: serde_json::Value = serde_json::from_slice(&sw.get(&key(&team)).unwrap()).unwrap();
    assert_eq!(back, remote);

    // Another fleet's state never overwrites this one.
    let stranger = TestEnv::new(2);
    let mut c = stranger.command(&["apply", "--sandbox", "--auto-approve"]);
    assert!(c.output().unwrap().status.success());
    let refused = run(&stranger, &sw, stranger.dir.path(), &["move-state", &team]).failure();
    assert!(refused.stderr.contains("another state"), "{refused:?}");
    let after: serde_json::Value = serde_json::from_slice(&sw.get(&key(&team)).unwrap()).unwrap();
    assert_eq!(after, remote, "nothing was overwritten");
}

#[test]
fn a_stale_writer_is_refused_and_overwrites_nothing() {
    let sw = Seaweed::start();
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    let team = url("cas");
    point_at(env.dir.path(), &team);
    run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).success();

    // This process takes the lock and reads the state (and its ETag); then
    // another psk forces the lock and writes.
    let stale = Location::Bucket(open(&sw, &team));
    let lock = Lock::acquire(&stale, "apply", Duration::ZERO).unwrap();
    let mut state = psk::state::load_for_write(&lock, NewState::Allowed)
        .unwrap()
        .unwrap();
    let mut journal = lock.journal(&mut state).unwrap();
    let id = lock_id(&sw, &team);
    run(&env, &sw, env.dir.path(), &["force-unlock", &id, "--force"]).success();
    run(
        &env,
        &sw,
        env.dir.path(),
        &["apply", "--auto-approve", "--replace", "tunnel-00"],
    )
    .success();
    let written = sw.get(&key(&team)).unwrap();

    // Neither a journal commit nor a whole write of the stale copy counts:
    // the commit finds its lock gone, the write its ETag.
    let k = state.tunnels.keys().next().unwrap().clone();
    state.tunnels.get_mut(&k).unwrap().psk = Some("stale".into());
    journal.stage(&k);
    let e = journal.commit(&mut state).unwrap_err().to_string();
    assert!(e.contains("lost the lock"), "{e}");
    assert!(e.contains(&format!("lock ID {id}")), "{e}");
    // Fenced once, fenced for good: no second try reaches the store.
    let again = journal.commit(&mut state).unwrap_err().to_string();
    assert!(again.contains("lost the lock"), "{again}");
    let e = psk::state::save(&lock, &mut state).unwrap_err().to_string();
    assert!(e.contains("changed by another writer"), "{e}");
    assert!(e.contains("Nothing was overwritten"), "{e}");
    assert_eq!(sw.get(&key(&team)).unwrap(), written);
    drop(lock);
    // The late commit is never replayed: readers skip it, the next writer
    // sets it aside.
    let journal_prefix = format!("{}.journal", key(&team));
    assert_eq!(sw.list(&journal_prefix).len(), 1);
    check_settled(&env, &sw, &team);
    let next = run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).success();
    assert!(next.stderr.contains("kept under"), "{next:?}");
    assert!(sw.list(&journal_prefix).is_empty());
    assert_eq!(sw.list(&format!("{}.fenced", key(&team))).len(), 1);
    check_settled(&env, &sw, &team);

    // A state object removed by mistake is not silently started afresh:
    // its backup says it existed.
    sw.delete(&key(&team));
    let missing = run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).failure();
    assert!(missing.stderr.contains("went missing"), "{missing:?}");
    assert!(sw.get(&key(&team)).is_none(), "nothing was written");
}

#[test]
fn the_store_going_away_mid_apply_loses_no_key() {
    let mut sw = Seaweed::start();
    let env = slow_env(8);
    let team = url("outage");
    point_at(env.dir.path(), &team);
    run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).success();
    let journal = format!("{}.journal", key(&team));
    let child = command(
        &env,
        &sw,
        env.dir.path(),
        &[
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
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for(
        || !sw.list(&journal).is_empty(),
        "a journal commit on the store",
    );
    sw.stop();
    let started = Instant::now();
    let cut = to_run(child.wait_with_output().unwrap());
    assert_eq!(cut.code, 1, "{cut:?}");
    assert!(cut.stderr.contains(&team), "{cut:?}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "psk stops soon after the store goes"
    );
    env.assert_no_secrets(&cut.all());
    assert!(!cut.all().contains(SECRET_KEY));

    sw.restart();
    check_no_key_lost(&env, &sw, &team);
    // The lock psk could not remove while the store was gone stays, and
    // names its holder; force-unlock clears it.
    let lock = format!("{}.lock", key(&team));
    let h: serde_json::Value = serde_json::from_slice(&sw.get(&lock).unwrap()).unwrap();
    let refused = run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).failure();
    assert!(refused.stderr.contains("is locked by"), "{refused:?}");
    run(
        &env,
        &sw,
        env.dir.path(),
        &["force-unlock", h["id"].as_str().unwrap(), "--force"],
    )
    .success();
    // A key Cloudflare answered after the store went away went to a rescue
    // file (sealed); `psk recover` takes it into the state in the bucket.
    if let Some(rescue) = cut.stderr.split("psk recover ").nth(1) {
        let rescue = rescue.lines().next().unwrap().trim();
        let recovered = run(&env, &sw, env.dir.path(), &["recover", rescue]).success();
        assert!(recovered.stdout.contains(&team), "{recovered:?}");
    }
    run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).success();
    assert!(sw.list(&journal).is_empty());
    check_settled(&env, &sw, &team);
}

/// An operator's laptop: no AWS variable, a named profile in `~/.aws`
/// written by `aws configure` (keys in `credentials`, region and endpoint
/// in `config`), chosen with AWS_PROFILE. A profile that is not there is
/// named, and nothing is written.
#[test]
fn a_named_aws_profile_in_the_home_folder_reaches_the_bucket() {
    let sw = Seaweed::start();
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    let aws = env.dir.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    write_private(
        &aws.join("credentials"),
        &format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[team]\naws_access_key_id = {}\naws_secret_access_key = {SECRET_KEY}\n",
            crate::common::seaweed::ACCESS_KEY
        ),
    );
    std::fs::write(
        aws.join("config"),
        format!(
            "[profile team]\nregion = us-east-1\nendpoint_url = {}\n",
            sw.endpoint()
        ),
    )
    .unwrap();
    let team = url("profile");
    point_at(env.dir.path(), &team);
    let with_profile = |profile: &str, args: &[&str]| {
        let out = env
            .command(args)
            .env("AWS_PROFILE", profile)
            .output()
            .unwrap();
        let run = to_run(out).with_args(args);
        assert!(!run.all().contains(SECRET_KEY), "{}", run.all());
        run
    };

    let missing = with_profile("nope", &["apply", "--auto-approve"]).failure();
    assert!(
        missing.stderr.contains("\"nope\"") && missing.stderr.contains(".aws"),
        "{missing:?}"
    );
    assert!(sw.get(&key(&team)).is_none(), "nothing was written");

    with_profile("team", &["apply", "--auto-approve"]).success();
    assert!(sw.get(&key(&team)).is_some(), "the state is in the bucket");
    let plan = with_profile("team", &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan:?}");
}

/// The store behind a fault proxy, for one folder's psk.
fn via(env: &TestEnv, proxy: &FaultProxy, sw: &Seaweed, args: &[&str]) -> Command {
    let mut c = env.command(args);
    c.current_dir(env.dir.path())
        .envs(sw.aws_env())
        .env("AWS_ENDPOINT_URL", proxy.endpoint());
    c
}

fn lock_id(sw: &Seaweed, url: &str) -> String {
    let record = sw
        .get(&format!("{}.lock", key(url)))
        .expect("a lock object");
    let h: serde_json::Value = serde_json::from_slice(&record).unwrap();
    h["id"].as_str().unwrap().to_string()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Kleppmann's paused writer: A waits on the store (its journal commit
/// held by the proxy) and is stopped there (SIGSTOP: a VM migration, a
/// long GC); B is refused, forces the lock and applies; A resumes. A's
/// commit lands, but A finds its lock gone and stops: no call to
/// Cloudflare, nothing replayed over B's state, and the team's next plan
/// and apply go on, the late object set aside.
#[test]
fn a_writer_paused_while_waiting_on_the_store_changes_nothing_after_its_lock_is_forced() {
    let sw = Seaweed::start();
    let proxy = FaultProxy::start(&sw.endpoint());
    let env = slow_env(4);
    let team = url("fence");
    point_at(env.dir.path(), &team);
    run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).success();
    let other = second_folder(&env);

    // A's next journal commit waits in the proxy, as on a slow store.
    proxy.arm(Some("PUT"), Some(".journal/"), Action::Hold, Some(1));
    let a = via(
        &env,
        &proxy,
        &sw,
        &[
            "apply",
            "--auto-approve",
            "--parallelism",
            "1",
            "--replace",
            "tunnel-00",
            "--replace",
            "tunnel-01",
        ],
    )
    // Warnings on: a retry of the fenced commit would show.
    .env("PSK_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for(|| proxy.held() == 1, "A's journal commit held by the proxy");
    signal(a.id(), "-STOP");
    let ledger_before_b = env.ledger();

    // B is refused, forces A's lock (A looks dead) and applies.
    let refused = run(&env, &sw, other.path(), &["apply", "--auto-approve"]).failure();
    assert!(refused.stderr.contains("is locked by"), "{refused:?}");
    let id = lock_id(&sw, &team);
    run(&env, &sw, other.path(), &["force-unlock", &id, "--force"]).success();
    run(
        &env,
        &sw,
        other.path(),
        &["apply", "--auto-approve", "--replace", "tunnel-02"],
    )
    .success();
    assert_ne!(env.ledger(), ledger_before_b, "B rotated tunnel-02");
    let after_b = env.ledger();
    let state_after_b = sw.get(&key(&team)).unwrap();

    // A resumes: its held commit reaches the store, then A finds its lock
    // gone and stops without calling Cloudflare.
    signal(a.id(), "-CONT");
    proxy.release();
    let a = to_run(a.wait_with_output().unwrap());
    assert_eq!(a.code, 1, "{a:?}");
    env.assert_no_secrets(&a.all());
    // A says plainly what happened, and is not retried: a fenced writer
    // stays fenced.
    for said in [
        format!("this apply lost the lock of {team} (lock ID {id})"),
        "no one holds it now".to_string(),
        format!("Someone ran `psk force-unlock {id}`"),
        "It made no further call to Cloudflare".to_string(),
        "It made no key the state lacks: there is nothing to recover".to_string(),
        "the next `psk plan` reads the state without it".to_string(),
        format!("sets it aside under {team}.fenced/"),
    ] {
        assert!(a.stderr.contains(&said), "no `{said}` in {a:?}");
    }
    assert!(!a.stderr.contains("retrying"), "{a:?}");
    assert!(!a.stderr.contains("psk recover"), "no rescue: {a:?}");
    assert_eq!(env.ledger(), after_b, "A made no call to Cloudflare");
    assert_eq!(
        sw.get(&key(&team)).unwrap(),
        state_after_b,
        "A overwrote nothing"
    );
    let journal = format!("{}.journal", key(&team));
    assert_eq!(
        sw.list(&journal).len(),
        1,
        "A's late commit is on the store"
    );

    // The team is not blocked: plan reads B's state (the late object is
    // not replayed), and the next apply sets it aside with a word.
    let plan = run(&env, &sw, env.dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "nothing is due after B's apply: {plan:?}");
    check_settled(&env, &sw, &team);
    let next = run(
        &env,
        &sw,
        other.path(),
        &["apply", "--auto-approve", "--replace", "tunnel-03"],
    )
    .success();
    assert!(
        next.stderr.contains("set aside") || next.stderr.contains("kept under"),
        "{next:?}"
    );
    assert!(sw.list(&journal).is_empty(), "{:?}", sw.list(&journal));
    assert_eq!(sw.list(&format!("{}.fenced", key(&team))).len(), 1);
    check_settled(&env, &sw, &team);
}

/// Whether process `pid` is stopped (SIGSTOP).
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}

/// The window no store can close: A proved its lock and is paused right
/// after (before its `psk_generate` goes out); B forces the lock and
/// rotates the same tunnel; A resumes and its call replaces B's key on
/// the edge. A's key commit is fenced, so A stops and its key goes to its
/// rescue file; the team's plan still works, and `psk recover` takes A's
/// key, because Cloudflare's edge holds it. No key is lost.
#[test]
fn a_key_made_in_the_window_after_the_fence_is_found_and_kept() {
    let sw = Seaweed::start();
    let mut env = TestEnv::new(3);
    env.start_sandbox();
    let team = url("window");
    point_at(env.dir.path(), &team);
    run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).success();
    let other = second_folder(&env);
    let rescue_dir = tempfile::tempdir().unwrap();

    let a = command(
        &env,
        &sw,
        env.dir.path(),
        &["apply", "--auto-approve", "--replace", "tunnel-00"],
    )
    .env("PSK_FAILPOINT", "stop-after-fence")
    .env("PSK_RESCUE_DIR", rescue_dir.path())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for(|| stopped(a.id()), "A stopped after proving its lock");

    let id = lock_id(&sw, &team);
    run(&env, &sw, other.path(), &["force-unlock", &id, "--force"]).success();
    run(
        &env,
        &sw,
        other.path(),
        &["apply", "--auto-approve", "--replace", "tunnel-00"],
    )
    .success();
    let b_key = env.ledger()[&tunnel_id(0)].last().unwrap().clone();

    signal(a.id(), "-CONT");
    let a = to_run(a.wait_with_output().unwrap());
    assert_eq!(a.code, 1, "{a:?}");
    assert!(a.stderr.contains("lost the lock"), "{a:?}");
    // The key A made in the window is in its rescue file, and A says so.
    assert!(
        a.stderr.contains("1 new tunnel record the state did not take (tunnel-00) is sealed in this apply's rescue file"),
        "{a:?}"
    );
    assert!(
        a.stderr
            .contains("Take it back on this machine with:\n  psk recover "),
        "{a:?}"
    );
    assert!(a.stderr.contains(&format!("{team}.fenced/")), "{a:?}");
    env.assert_no_secrets(&a.all());
    let a_key = env.ledger()[&tunnel_id(0)].last().unwrap().clone();
    assert_ne!(a_key, b_key, "A's call in the window replaced B's key");

    // The team's next plan works: the state holds B's key, the edge A's,
    // which the plan shows as changed outside psk.
    let plan = run(&env, &sw, env.dir.path(), &["plan"]).success();
    assert!(plan.stdout.contains("tunnel-00"), "{plan:?}");
    // A's rescue file holds its key; recover asks the edge and takes it.
    let rescue = a
        .stderr
        .split("psk recover ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .unwrap_or_else(|| panic!("A names its rescue file: {a:?}"))
        .trim()
        .to_string();
    let recovered = run(&env, &sw, env.dir.path(), &["recover", &rescue]).success();
    assert!(
        recovered
            .stdout
            .contains("Cloudflare's edge holds the rescued key"),
        "{recovered:?}"
    );
    check_settled(&env, &sw, &team);
    let plan = run(&env, &sw, env.dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    // The next apply sets A's late objects aside and leaves nothing behind.
    run(&env, &sw, other.path(), &["apply", "--auto-approve"]).success();
    assert!(sw.list(&format!("{}.journal", key(&team))).is_empty());
    check_settled(&env, &sw, &team);
}

/// An apply of tunnels 00..=05 with one rotation at a time, through the
/// fault proxy.
fn six_through(env: &TestEnv, proxy: &FaultProxy, sw: &Seaweed) -> Command {
    let mut args = vec!["apply", "--auto-approve", "--parallelism", "1"];
    for t in [
        "tunnel-00",
        "tunnel-01",
        "tunnel-02",
        "tunnel-03",
        "tunnel-04",
        "tunnel-05",
    ] {
        args.extend(["--replace", t]);
    }
    let mut c = via(env, proxy, sw, &args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// A store that stops answering (not refusing) mid-apply: psk stops
/// within the documented bound, with what it could not write rescued, and
/// nothing is lost once the store is back.
#[test]
fn a_hung_store_stops_psk_within_15_seconds_and_loses_no_key() {
    let sw = Seaweed::start();
    let proxy = FaultProxy::start(&sw.endpoint());
    let env = slow_env(8);
    let team = url("hung");
    point_at(env.dir.path(), &team);
    run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).success();
    let rescue_dir = tempfile::tempdir().unwrap();
    let child = six_through(&env, &proxy, &sw)
        .env("PSK_RESCUE_DIR", rescue_dir.path())
        .spawn()
        .unwrap();
    let journal = format!("{}.journal", key(&team));
    wait_for(
        || sw.list(&journal).len() >= 2,
        "journal commits on the store",
    );
    proxy.arm(None, None, Action::Hang, None);
    let hung = Instant::now();
    let cut = to_run(child.wait_with_output().unwrap());
    let took = hung.elapsed();
    eprintln!("psk stopped {took:?} after the store hung");
    assert_eq!(cut.code, 1, "{cut:?}");
    assert!(
        took < Duration::from_secs(15),
        "psk took {took:?} to stop against a hung store: {cut:?}"
    );
    assert!(cut.stderr.contains("no answer"), "{cut:?}");
    env.assert_no_secrets(&cut.all());

    // The store is back (psk goes to it directly now): nothing was lost.
    check_no_key_lost(&env, &sw, &team);
    let id = lock_id(&sw, &team);
    run(&env, &sw, env.dir.path(), &["force-unlock", &id, "--force"]).success();
    if let Some(rescue) = cut.stderr.split("psk recover ").nth(1) {
        let rescue = rescue.lines().next().unwrap().trim();
        run(&env, &sw, env.dir.path(), &["recover", rescue]).success();
    }
    run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).success();
    assert!(sw.list(&journal).is_empty());
    check_settled(&env, &sw, &team);
}

/// Slow PUTs, a 412 and 5xx answers injected between psk and the store:
/// each apply either goes through or stops with every key kept, and no
/// journal commit is replayed twice (each key on the edge is the sealed
/// one, each journal object is gone after the fold).
#[test]
fn slow_puts_412s_and_5xx_from_the_store_lose_nothing_and_replay_nothing_twice() {
    let sw = Seaweed::start();
    let proxy = FaultProxy::start(&sw.endpoint());
    let mut env = TestEnv::new(6);
    env.start_sandbox();
    let team = url("faults");
    point_at(env.dir.path(), &team);
    run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).success();
    let journal = format!("{}.journal", key(&team));
    let cases: [(&str, Option<&str>, Action, usize); 4] = [
        (
            "slow journal PUTs",
            Some(".journal/"),
            Action::Slow(Duration::from_millis(1500)),
            3,
        ),
        (
            "503 on journal PUTs",
            Some(".journal/"),
            Action::Status(503),
            2,
        ),
        (
            "412 on a journal PUT",
            Some(".journal/"),
            Action::Status(412),
            1,
        ),
        (
            "500 on the final state PUT",
            Some("psk.state.json"),
            Action::Status(500),
            2,
        ),
    ];
    for (what, path, action, times) in cases {
        let method = Some("PUT");
        proxy.arm(method, path, action.clone(), Some(times));
        let before = proxy.faulted();
        let out = to_run(
            six_through(&env, &proxy, &sw)
                .spawn()
                .unwrap()
                .wait_with_output()
                .unwrap(),
        );
        proxy.disarm();
        assert!(proxy.faulted() > before, "{what}: the fault never applied");
        env.assert_no_secrets(&out.all());
        if out.code != 0 {
            // Stopped: everything it made is on the store or flagged.
            check_no_key_lost(&env, &sw, &team);
            if let Some(rescue) = out.stderr.split("psk recover ").nth(1) {
                let rescue = rescue.lines().next().unwrap().trim();
                run(&env, &sw, env.dir.path(), &["recover", rescue]).success();
            }
            if let Some(record) = sw.get(&format!("{}.lock", key(&team))) {
                let h: serde_json::Value = serde_json::from_slice(&record).unwrap();
                let id = h["id"].as_str().unwrap();
                run(&env, &sw, env.dir.path(), &["force-unlock", id, "--force"]).success();
            }
            run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).success();
        }
        assert!(
            sw.list(&journal).is_empty(),
            "{what}: {:?}",
            sw.list(&journal)
        );
        check_settled(&env, &sw, &team);
    }
}

/// The fence comes before the call, and after the commit: with every read
/// of the lock object held by the proxy, the commit announcing the
/// rotations is already on the store, yet no `psk_generate` goes out;
/// released, the apply goes on. A psk that started a call while its fence
/// was still on the wire (or that read the lock before its commit landed)
/// fails here.
#[test]
fn no_call_starts_before_its_commit_is_durable_and_fenced() {
    let sw = Seaweed::start();
    let proxy = FaultProxy::start(&sw.endpoint());
    let mut env = TestEnv::new(4);
    env.start_sandbox();
    let team = url("fence-first");
    point_at(env.dir.path(), &team);
    run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).success();
    let before = env.ledger();
    let journal = format!("{}.journal", key(&team));

    proxy.arm(Some("GET"), Some(".lock"), Action::Hold, None);
    let mut args = vec!["apply", "--auto-approve"];
    for t in ["tunnel-00", "tunnel-01", "tunnel-02", "tunnel-03"] {
        args.extend(["--replace", t]);
    }
    let a = via(&env, &proxy, &sw, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(|| proxy.held() == 1, "the fence's read of the lock, held");
    assert_eq!(
        sw.list(&journal).len(),
        1,
        "the commit of the intents is durable before the fence reads the lock"
    );
    // Long enough for four calls to the sandbox, had any started.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(proxy.held(), 1);
    assert_eq!(
        env.ledger(),
        before,
        "a psk_generate went out before its intent was fenced"
    );

    proxy.disarm();
    proxy.release();
    let a = to_run(a.wait_with_output().unwrap());
    assert_eq!(a.code, 0, "{a:?}");
    env.assert_no_secrets(&a.all());
    for (id, psks) in env.ledger() {
        assert_eq!(
            psks.len(),
            before[&id].len() + 1,
            "tunnel {id} rotated once"
        );
    }
    check_settled(&env, &sw, &team);
    assert!(sw.list(&journal).is_empty(), "{:?}", sw.list(&journal));
}

/// What an apply on a bucket costs in requests, by kind: a fixed number
/// at the start and the end, and per group commit one PUT and one fence
/// (a GET of the lock and a HEAD of the state, read at once), never one
/// per key. The fold removes every commit object with one request.
#[test]
fn an_apply_on_a_bucket_makes_a_fixed_number_of_requests_besides_its_commits() {
    let sw = Seaweed::start();
    let proxy = FaultProxy::start(&sw.endpoint());
    let mut env = TestEnv::new(6);
    env.start_sandbox();
    let team = url("requests");
    point_at(env.dir.path(), &team);
    run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).success();

    let mut args = vec!["-v", "apply", "--auto-approve", "--parallelism", "1"];
    for t in [
        "tunnel-00",
        "tunnel-01",
        "tunnel-02",
        "tunnel-03",
        "tunnel-04",
        "tunnel-05",
    ] {
        args.extend(["--replace", t]);
    }
    let out = via(&env, &proxy, &sw, &args).output().unwrap();
    let out = to_run(out);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_no_secrets(&out.all());
    let commits: usize = out
        .stderr
        .split("commits=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no commit count in the log:\n{}", out.stderr));
    // One rotation at a time: its intent, then its answer with the next
    // intent, then the last answer.
    assert_eq!(commits, 7, "{}", out.stderr);
    let by_kind = proxy.requests_by_kind();
    let n = |kind: &str| by_kind.get(kind).copied().unwrap_or(0);
    // Start: the bucket checked (LIST), the lock (PUT), the state and the
    // journal listing (GET, LIST). End: the state and its backup (PUT),
    // the journal's objects and the lock removed (POST: S3's bulk delete),
    // the lock read before its removal (GET).
    assert_eq!(n("LIST"), 2, "{by_kind:?}");
    assert_eq!(n("PUT"), commits + 3, "{by_kind:?}");
    assert_eq!(n("HEAD"), commits, "{by_kind:?}");
    assert_eq!(n("GET"), commits + 2, "{by_kind:?}");
    assert_eq!(n("POST"), 2, "{by_kind:?}");
    assert_eq!(proxy.requests(), 3 * commits + 9, "{by_kind:?}");
    check_settled(&env, &sw, &team);
}

/// The edges of the set-up: no credentials anywhere is said as such (with
/// where psk looked), and a misspelled bucket is refused by `apply` as by
/// `plan`, before the lock: a store that makes buckets on first write
/// (SeaweedFS here, `-s3.autoCreateBucket`) never starts an empty state
/// that would replace every live key.
#[test]
fn no_credentials_and_a_misspelled_bucket_are_named_and_change_nothing() {
    let sw = Seaweed::start();
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    let team = url("inputs");
    point_at(env.dir.path(), &team);
    run(&env, &sw, env.dir.path(), &["apply", "--auto-approve"]).success();
    let ledger = env.ledger();
    let state = sw.get(&key(&team)).unwrap();

    let home = tempfile::tempdir().unwrap();
    for args in [&["plan"][..], &["apply", "--auto-approve"][..]] {
        let out = env
            .command(args)
            .env("HOME", home.path())
            .env("AWS_ENDPOINT_URL", sw.endpoint())
            .env("AWS_REGION", "us-east-1")
            // The instance metadata service this machine would ask has none.
            .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
            .output()
            .unwrap();
        let out = to_run(out).with_args(args).failure();
        assert!(out.stderr.contains("no credentials found"), "{out:?}");
        assert!(out.stderr.contains("AWS_ACCESS_KEY_ID"), "{out:?}");
        let credentials = home.path().join(".aws/credentials");
        assert!(
            out.stderr.contains(&credentials.display().to_string()),
            "{out:?}"
        );
    }

    let typo = format!("s3://{BUCKET}x/inputs/psk.state.json");
    for args in [
        &["plan", "--state", &typo][..],
        &["apply", "--auto-approve", "--state", &typo][..],
    ] {
        let out = run(&env, &sw, env.dir.path(), args).failure();
        assert!(
            out.stderr.contains(&format!("the bucket `{BUCKET}x`")),
            "{out:?}"
        );
        assert!(out.stderr.contains("does not exist"), "{out:?}");
    }
    assert_eq!(env.ledger(), ledger, "no key was replaced");
    assert_eq!(sw.get(&key(&team)).unwrap(), state);
}
