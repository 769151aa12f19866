//! The rotation calendar in the markdown plan, checked by Mermaid's own
//! parser (the npm package GitHub's renderer is built on), not by a
//! hand-written check: for a small fleet (one bar per tunnel) and a
//! 2,000-tunnel one (grouped, and the whole comment inside GitHub's
//! 65,536 characters).
//!
//! The parser is installed from the npm registry into the target folder
//! on first use, at the versions pinned in tests/mermaid/package-lock.json
//! (`npm ci`), and run with Node. Without node and npm the test fails and
//! says how to get them; it never passes unchecked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use chrono::{DateTime, TimeDelta, Utc};

use crate::common::*;

const NOW: &str = "2026-12-02T12:00:00Z";

/// A checker folder with Mermaid and jsdom installed; once per test run.
fn checker() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mermaid");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mermaid-check");
        let lock = std::fs::read(source.join("package-lock.json")).unwrap();
        // Installed and at these versions: nothing to do.
        if std::fs::read(dir.join("package-lock.json")).ok().as_ref() == Some(&lock)
            && dir.join("node_modules/mermaid/package.json").is_file()
        {
            return dir;
        }
        for tool in ["node", "npm"] {
            let found = Command::new(tool).arg("--version").output();
            assert!(
                found.is_ok_and(|o| o.status.success()),
                "this test needs `{tool}` (Node.js 20 or newer, with npm) to run Mermaid's parser: install it (`apt-get install nodejs npm`, or from nodejs.org)"
            );
        }
        // Installed beside, then moved into place: another test process
        // never sees half an install.
        let staging = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("mermaid-check.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).unwrap();
        for f in ["package.json", "package-lock.json", "check.mjs"] {
            std::fs::copy(source.join(f), staging.join(f)).unwrap();
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&staging)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`npm ci` in {} could not install Mermaid's parser from the npm registry (pinned in tests/mermaid/package-lock.json):\n{}",
            staging.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::rename(&staging, &dir).is_err() {
            // Another process put one there first: use it.
            let _ = std::fs::remove_dir_all(&staging);
        }
        dir
    })
}

/// Mermaid's verdict on `diagram`: `Ok` with the diagram type, or its
/// parse error.
fn mermaid_parse(diagram: &str) -> Result<String, String> {
    let dir = checker();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), diagram).unwrap();
    let out = Command::new("node")
        .arg(dir.join("check.mjs"))
        .arg(file.path())
        .current_dir(dir)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The ```mermaid blocks of a comment.
fn diagrams(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = md;
    while let Some(at) = rest.find("```mermaid\n") {
        let body = &rest[at + 11..];
        let end = body.find("\n```\n").expect("a closed mermaid block");
        out.push(body[..=end].to_string());
        rest = &body[end..];
    }
    out
}

/// A fleet of `n` tunnels in site pairs (every third on a weekend window
/// in Berlin), with a state whose keys were made over the last 120 days:
/// some due now, the rest falling due over the next weeks.
fn fleet(n: usize) -> TestEnv {
    let env = TestEnv::new(0);
    let mut text = format!(
        "version: 1\naccount_id: {ACCOUNT}\nrecipients:\n  - {}\npolicies:\n  default:\n    rotate_every: 90d\n  weekend:\n    rotate_every: 90d\n    window: {{days: [sat, sun], start: \"02:00\", end: \"06:00\", timezone: Europe/Berlin}}\ntunnels:\n",
        env.recipient
    );
    for i in 0..n {
        text.push_str(&format!(
            "  - name: edge-{i:04}\n    id: {}\n    site: site-{}\n{}",
            tunnel_id(i),
            i / 2,
            if i % 3 == 0 {
                "    policy: weekend\n"
            } else {
                ""
            }
        ));
    }
    env.write_config(&text);
    let config = psk::config::Config::load(&env.config_path()).unwrap();
    let now: DateTime<Utc> = NOW.parse().unwrap();
    let mut state = psk::state::State::new(config.recipient_fingerprints());
    let sealed = psk::seal::seal(
        &psk::seal::Psk::new("a-throwaway-key-for-the-calendar-test".into()),
        &config.recipients,
    )
    .unwrap();
    for (i, t) in config.tunnels.iter().enumerate() {
        let r = state.entry(&t.key(), &t.name);
        r.psk = Some(sealed.clone());
        r.last_rotated = Some(now - TimeDelta::days(30 + (i as i64 * 37) % 90));
    }
    let location = psk::state::Location::File(env.state_path());
    let lock = psk::state::Lock::acquire(&location, "test", std::time::Duration::ZERO).unwrap();
    psk::state::save(&lock, &mut state).unwrap();
    env
}

fn markdown(env: &TestEnv) -> String {
    let run = env
        .run(&["plan", "--offline", "--format", "markdown", "--at", NOW])
        .success();
    env.assert_no_secrets(&run.all());
    run.stdout
}

#[test]
fn a_small_fleet_calendar_passes_mermaids_parser() {
    let md = markdown(&fleet(8));
    let found = diagrams(&md);
    assert_eq!(found.len(), 1, "{md}");
    let gantt = &found[0];
    assert!(gantt.starts_with("gantt\n"), "{gantt}");
    assert!(md.contains("one bar per tunnel, by site"), "{md}");
    // Windows shown; held and waiting tunnels marked.
    assert!(
        gantt.contains(
            "    section Windows\n    weekend window :2026-12-05 01:00, 2026-12-05 05:00\n"
        ),
        "{gantt}"
    );
    assert!(
        md.contains(" Windows: weekend sat, sun 02:00–06:00 Europe/Berlin."),
        "{md}"
    );
    assert!(gantt.contains("(now) :active, "), "{gantt}");
    assert!(gantt.contains("    section site-0\n"), "{gantt}");
    let verdict = mermaid_parse(gantt);
    assert!(
        verdict
            .as_ref()
            .is_ok_and(|v| v.contains("\"diagramType\":\"gantt\"")),
        "{verdict:?}\n{gantt}"
    );
    // And the parser does refuse a broken one: the check checks.
    let broken = format!("{gantt}    a task with no dates\n");
    assert!(
        mermaid_parse(&broken).is_err(),
        "Mermaid accepted a broken diagram"
    );
    // --calendar 0 leaves it out.
    let env = fleet(4);
    let run = env
        .run(&[
            "plan",
            "--offline",
            "--format",
            "markdown",
            "--at",
            NOW,
            "--calendar",
            "0",
        ])
        .success();
    assert!(diagrams(&run.stdout).is_empty());
}

#[test]
fn a_2000_tunnel_calendar_is_grouped_fits_the_comment_and_parses() {
    let md = markdown(&fleet(2_000));
    assert!(md.len() <= 65_536, "{} characters", md.len());
    assert!(
        md.contains("grouped to fit the comment: one bar per site and day")
            || md.contains("grouped to fit the comment: one bar per day for the whole fleet"),
        "{md}"
    );
    let found = diagrams(&md);
    assert_eq!(found.len(), 1);
    assert!(found[0].len() <= 20_000, "{}", found[0].len());
    let verdict = mermaid_parse(&found[0]);
    assert!(verdict.is_ok(), "{verdict:?}\n{}", found[0]);
}
