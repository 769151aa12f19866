//! Bad input harms nothing: every case under `tests/corpus/` (psk.yaml,
//! the state file, saved plans) is run through the real binary beside
//! valid copies of the other files. Each run must exit 1 with a message
//! naming the file (and the line, where `expect.txt` gives one), never
//! panic, change no file on disk (bytes and mtime), and stay within a
//! memory bound (address space capped with `ulimit -v`, peak RSS measured
//! with `wait4`). A generous deadline only catches hangs.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::common::Run;

/// Address-space cap for every run: a parser that tried to expand an alias
/// bomb or buffer a runaway structure hits it and is killed.
const ADDRESS_SPACE_KIB: u64 = 4 * 1024 * 1024;
/// Peak resident memory any run may reach, inputs of 16 MiB included.
const MAX_RSS_KIB: i64 = 512 * 1024;
/// Only a hang takes this long; a normal run takes a fraction of a second.
const HANG: Duration = Duration::from_secs(60);

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

#[derive(Debug)]
struct Case {
    /// Relative to tests/corpus, e.g. `state/empty.json`.
    rel: String,
    line: Option<usize>,
    /// A well-formed plan that `apply` must refuse (binding mismatch);
    /// `show-plan` rightly renders it.
    apply_only: bool,
}

fn cases(kind: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(corpus().join("expect.txt")).unwrap();
    let mut out = Vec::new();
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut f = l.split_whitespace();
        let rel = f.next().unwrap().to_string();
        let line = f.next().unwrap();
        let apply_only = f.next() == Some("apply-only");
        if rel.starts_with(&format!("{kind}/")) {
            out.push(Case {
                line: (line != "-").then(|| line.parse().unwrap()),
                rel,
                apply_only,
            });
        }
    }
    // Every file in the folder has an expectation, and the reverse.
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus().join(kind))
        .unwrap()
        .map(|e| format!("{kind}/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = out.iter().map(|c| c.rel.clone()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "tests/corpus/expect.txt and {kind}/ disagree"
    );
    out
}

/// A folder holding the valid base files, the demo identity, and `case`
/// written as `name`.
fn setup(name: &str, case: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["psk.yaml", "psk.state.json", "plan.json"] {
        std::fs::copy(corpus().join("base").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/demo-identity.txt"),
        dir.path().join("identity.txt"),
    )
    .unwrap();
    std::fs::write(dir.path().join(name), case).unwrap();
    dir
}

type Files = BTreeMap<String, (Vec<u8>, SystemTime)>;

fn files(dir: &Path) -> Files {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (std::fs::read(e.path()).unwrap(), meta.modified().unwrap()),
            )
        })
        .collect()
}

struct Bounded {
    run: Run,
    max_rss_kib: i64,
}

/// Runs psk in `dir` under the address-space cap, reaping it with `wait4`
/// to read its own peak RSS.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, not Child::wait
fn run_bounded(dir: &Path, args: &[&str]) -> Bounded {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_psk"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits only for our own child, whose pid we hold.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "wait4 failed");
        if start.elapsed() > HANG {
            let _ = child.kill();
            panic!("psk {args:?} still running after {HANG:?} in {dir:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Bounded {
        run: Run {
            args: args.iter().map(|a| a.to_string()).collect(),
            code,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        },
        max_rss_kib: usage.ru_maxrss,
    }
}

/// What one case did: the largest peak RSS of its runs, and the whole
/// run of its first command, the one whose message its snapshot shows.
struct Checked {
    peak_rss_kib: i64,
    first: Run,
}

/// Runs every command on the case and checks the promises.
fn check(
    label: &str,
    dir: &Path,
    file_name: &str,
    line: Option<usize>,
    cmds: &[Vec<&str>],
) -> Checked {
    let before = files(dir);
    let mut peak = 0;
    let mut first = None;
    for args in cmds {
        let Bounded {
            run: r,
            max_rss_kib,
        } = run_bounded(dir, args);
        let what = format!("{label}: {r:?}");
        assert!(!r.stderr.contains("panicked"), "panic on {what}");
        assert_eq!(r.code, 1, "{what}");
        assert!(r.stderr.starts_with("error:"), "{what}");
        assert!(
            r.stderr.contains(file_name),
            "the message must name {file_name}: {what}"
        );
        if let Some(n) = line {
            assert!(
                r.stderr.contains(&format!("line {n},")) || r.stderr.contains(&format!(":{n}:")),
                "the message must name line {n}: {what}"
            );
        }
        assert!(
            max_rss_kib < MAX_RSS_KIB,
            "{max_rss_kib} KiB peak RSS: {what}"
        );
        peak = peak.max(max_rss_kib);
        let mut after = files(dir);
        // The lock file (holder record) is the one file a writer may leave.
        after.remove("psk.state.json.lock");
        assert!(
            before.keys().eq(after.keys()),
            "files appeared or vanished: {:?} -> {:?} after {what}",
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>()
        );
        for (name, (bytes, mtime)) in &before {
            let (b, m) = &after[name];
            assert!(b == bytes, "{name} changed after {what}");
            assert_eq!(m, mtime, "{name} was rewritten after {what}");
        }
        first.get_or_insert(r);
    }
    Checked {
        peak_rss_kib: peak,
        first: first.expect("at least one command"),
    }
}

/// Runs every case of `kind` (at least `at_least` of them), written as
/// `file_name` beside the base files, through `cmds(case)`; returns the
/// text of the kind's snapshot: each case's first run, whose message is
/// the one people meet.
fn run_kind(
    kind: &str,
    at_least: usize,
    file_name: &str,
    cmds: impl Fn(&Case) -> Vec<Vec<&'static str>>,
) -> String {
    let cases = cases(kind);
    assert!(cases.len() >= at_least, "{kind}: {} cases", cases.len());
    let (mut peak, mut messages) = (0, String::new());
    for c in &cases {
        let bytes = std::fs::read(corpus().join(&c.rel)).unwrap();
        let dir = setup(file_name, &bytes);
        let checked = check(&c.rel, dir.path(), file_name, c.line, &cmds(c));
        peak = peak.max(checked.peak_rss_kib);
        messages.push_str(&format!("=== {}\n{}\n", c.rel, checked.first.normalized()));
    }
    eprintln!("{} {kind} cases: peak RSS {peak} KiB", cases.len());
    messages
}

fn state_cmds() -> Vec<Vec<&'static str>> {
    vec![
        vec!["validate"],
        vec!["plan", "--offline"],
        vec!["plan", "--sandbox"],
        vec!["apply", "--sandbox", "--auto-approve"],
        vec!["show", "fra-primary", "--identity", "identity.txt"],
        vec!["export", "--identity", "identity.txt"],
        vec!["reseal", "--identity", "identity.txt"],
    ]
}

#[test]
fn bad_state_files() {
    let messages = run_kind("state", 20, "psk.state.json", |_| state_cmds());
    insta::assert_snapshot!("state_messages", messages);
}

#[test]
fn bad_saved_plans() {
    let messages = run_kind("plan", 15, "case.json", |c| {
        let mut cmds = vec![vec!["apply", "--sandbox", "case.json"]];
        if !c.apply_only {
            for f in ["human", "markdown", "json"] {
                cmds.push(vec!["show-plan", "case.json", "--format", f]);
            }
        }
        cmds
    });
    insta::assert_snapshot!("plan_messages", messages);
}

#[test]
fn bad_config_files() {
    let messages = run_kind("config-extra", 20, "case.yaml", |_| {
        vec![
            vec!["validate", "-c", "case.yaml"],
            vec!["plan", "-c", "case.yaml", "--offline"],
            vec!["apply", "-c", "case.yaml", "--sandbox", "--auto-approve"],
        ]
    });
    insta::assert_snapshot!("config_messages", messages);
}

/// Inputs too large to keep in git, made here: 16 MiB each, so a parser
/// that copied or expanded them many times over would break the RSS bound.
#[test]
fn huge_inputs_stay_bounded() {
    const BIG: usize = 16 << 20;
    let base_state = std::fs::read_to_string(corpus().join("base/psk.state.json")).unwrap();
    // A state whose lineage is 16 MiB long and whose version is from the future.
    let state = base_state
        .replacen(
            "\"lineage\": \"",
            &format!("\"lineage\": \"{}", "x".repeat(BIG)),
            1,
        )
        .replace("\"version\": 1", "\"version\": 7");
    let dir = setup("psk.state.json", state.as_bytes());
    let peak = check(
        "huge state",
        dir.path(),
        "psk.state.json",
        None,
        &state_cmds(),
    )
    .peak_rss_kib;
    eprintln!("huge state: peak RSS {peak} KiB");

    // 16 MiB of nested arrays where the tunnels map belongs.
    let deep = format!(
        "{{\"version\": 1, \"tunnels\": {}{}}}\n",
        "[".repeat(BIG / 2),
        "]".repeat(BIG / 2)
    );
    let dir = setup("psk.state.json", deep.as_bytes());
    check(
        "deep state",
        dir.path(),
        "psk.state.json",
        Some(1),
        &state_cmds(),
    );

    // A saved plan with a 16 MiB state diff and a field nobody knows.
    let plan = std::fs::read_to_string(corpus().join("base/plan.json")).unwrap();
    let plan = plan
        .replacen(
            "\"state_diff\": \"",
            &format!("\"state_diff\": \"{}", "-".repeat(BIG)),
            1,
        )
        .replacen("{", "{\n  \"extra\": 1,", 1);
    let dir = setup("case.json", plan.as_bytes());
    let peak = check(
        "huge plan",
        dir.path(),
        "case.json",
        Some(2),
        &[
            vec!["show-plan", "case.json"],
            vec!["apply", "--sandbox", "case.json"],
        ],
    )
    .peak_rss_kib;
    eprintln!("huge plan: peak RSS {peak} KiB");

    // psk.yaml: 16 MiB of comment lines, then a bad version.
    let yaml = std::fs::read_to_string(corpus().join("base/psk.yaml")).unwrap();
    let comment_lines = BIG / 64;
    let yaml = format!(
        "{}{}",
        format!("# {}\n", "c".repeat(61)).repeat(comment_lines),
        yaml.replace("version: 1", "version: 3")
    );
    let line = yaml.lines().position(|l| l == "version: 3").unwrap() + 1;
    let dir = setup("case.yaml", yaml.as_bytes());
    let peak = check(
        "huge config",
        dir.path(),
        "case.yaml",
        Some(line),
        &[
            vec!["validate", "-c", "case.yaml"],
            vec!["plan", "-c", "case.yaml", "--offline"],
        ],
    )
    .peak_rss_kib;
    eprintln!("huge config: peak RSS {peak} KiB");

    // psk.yaml: one 16 MiB flow sequence of nested sequences.
    let yaml = format!(
        "version: 1\ntunnels: {}{}\n",
        "[".repeat(BIG / 2),
        "]".repeat(BIG / 2)
    );
    let dir = setup("case.yaml", yaml.as_bytes());
    let peak = check(
        "deep config",
        dir.path(),
        "case.yaml",
        Some(2),
        &[
            vec!["validate", "-c", "case.yaml"],
            vec!["plan", "-c", "case.yaml", "--offline"],
        ],
    )
    .peak_rss_kib;
    eprintln!("deep config: peak RSS {peak} KiB");
}
