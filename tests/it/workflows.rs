//! The example GitHub workflows (examples/github-actions) call psk with
//! flags this build has: every psk command line in their `run:` scripts
//! parses with the current CLI, so renaming a flag cannot silently break
//! them. (CI lints the workflows themselves with actionlint: .ci/run.)

use std::path::{Path, PathBuf};

use clap::Parser;
use psk::cli::Cli;

const ROOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/github-actions/.github"
);

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(p);
        }
    }
}

/// Every `run:` script in a workflow or action, wherever it is nested.
fn run_scripts(v: &serde_yaml::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                match (k.as_str(), v.as_str()) {
                    (Some("run"), Some(script)) => out.push(script.to_string()),
                    _ => run_scripts(v, out),
                }
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| run_scripts(v, out)),
        _ => {}
    }
}

/// A shell line as words and operators: quotes removed, `;`, `&&`, `||`,
/// `|`, `!` and redirections as words of their own. GitHub expressions
/// (`${{ … }}`) become one word.
fn words(line: &str) -> Vec<(String, bool)> {
    let line = regex::Regex::new(r"\$\{\{[^}]*\}\}")
        .unwrap()
        .replace_all(line, "EXPR");
    let mut out: Vec<(String, bool)> = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    let flush = |word: &mut String, out: &mut Vec<(String, bool)>| {
        if !word.is_empty() {
            out.push((std::mem::take(word), false));
        }
    };
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => quote = Some(c),
            (None, c) if c.is_whitespace() => flush(&mut word, &mut out),
            (None, ';' | '|' | '&' | '>' | '<' | '!') => {
                flush(&mut word, &mut out);
                let mut op = c.to_string();
                while let Some(&n) = chars.peek().filter(|n| "|&>".contains(**n)) {
                    op.push(n);
                    chars.next();
                }
                out.push((op, true));
            }
            (None, c) => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The arguments of every psk command in a script.
pub(crate) fn psk_commands(script: &str) -> Vec<Vec<String>> {
    let joined = script.replace("\\\n", " ");
    let mut found = Vec::new();
    for line in joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
    {
        let ws = words(line);
        for (i, (w, op)) in ws.iter().enumerate() {
            let at_start =
                i == 0 || ws[i - 1].1 || ["then", "do", "else"].contains(&ws[i - 1].0.as_str());
            if !op && w == "psk" && at_start {
                let args = ws[i + 1..]
                    .iter()
                    .take_while(|(_, op)| !op)
                    .map(|(w, _)| w.clone())
                    .collect();
                found.push(args);
            }
        }
    }
    found
}

#[test]
fn the_splitter_finds_psk_commands() {
    let script = "code=0\npsk plan --out plan.json --expires-in 7d > plan.md || code=$?\n\
                  if true; then psk apply \"plan.json\"; fi\necho psk is not a command here\n\
                  psk status \\\n  --textfile ${{ runner.temp }}/psk.prom";
    assert_eq!(
        psk_commands(script),
        vec![
            vec!["plan", "--out", "plan.json", "--expires-in", "7d"],
            vec!["apply", "plan.json"],
            vec!["status", "--textfile", "EXPR/psk.prom"],
        ]
    );
}

#[test]
fn every_psk_command_in_the_workflows_parses() {
    let mut files = Vec::new();
    yaml_files(Path::new(ROOT), &mut files);
    files.sort();
    let mut seen = Vec::new();
    for f in &files {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let mut scripts = Vec::new();
        run_scripts(&doc, &mut scripts);
        for args in scripts.iter().flat_map(|s| psk_commands(s)) {
            let argv = std::iter::once("psk".to_string()).chain(args.iter().cloned());
            if let Err(e) = Cli::try_parse_from(argv) {
                use clap::error::ErrorKind;
                assert!(
                    matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion),
                    "{}: `psk {}` does not parse:\n{e}",
                    f.display(),
                    args.join(" ")
                );
            }
            seen.push(args.first().cloned().unwrap_or_default());
        }
    }
    for command in ["validate", "plan", "apply", "status", "--version"] {
        assert!(
            seen.iter().any(|s| s == command),
            "no `psk {command}` found in {files:?}: {seen:?}"
        );
    }
}

// ---------------------------------------------------------------------
// The workflows run: their jobs and `run:` steps as GitHub runs them
// (tests/it/common/actions.rs), against a real bare git remote and the
// sandbox.

use std::collections::BTreeMap;
use std::process::Command;

use crate::common::actions::{Runner, FAKE_GH};
use crate::common::{config_text, TestEnv, TOKEN};

const REPO: &str = "acme/netops-psk";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// A repository set up as examples/github-actions/README.md says, on a
/// bare remote, with a fleet of two tunnels the sandbox holds and a pull
/// request (#7) that changes psk.yaml, pushed twice.
struct Repo {
    env: TestEnv,
    remote: PathBuf,
    dev: PathBuf,
    home: PathBuf,
    db: serde_json::Value,
    /// The pull request's last commit, and the merge on main.
    head: String,
    merge: String,
}

impl Repo {
    fn new() -> Repo {
        let mut env = TestEnv::new(2);
        env.start_sandbox();
        let remote = env.path("origin.git");
        let dev = env.path("dev");
        let home = env.path("gh");
        std::fs::create_dir_all(home.join("bin")).unwrap();
        std::fs::create_dir_all(home.join("home")).unwrap();
        git(
            env.dir.path(),
            &["init", "-q", "--bare", "-b", "main", "origin.git"],
        );
        git(env.dir.path(), &["clone", "-q", "origin.git", "dev"]);
        let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/github-actions");
        copy_dir(&example.join(".github"), &dev.join(".github"));
        std::fs::copy(example.join(".gitignore"), dev.join(".gitignore")).unwrap();
        std::fs::write(dev.join("psk.yaml"), config_text(&env.recipient, 2, "90d")).unwrap();
        git(&dev, &["add", "-A"]);
        git(&dev, &["commit", "-q", "-m", "start"]);
        git(&dev, &["push", "-q", "origin", "HEAD:main"]);
        // The pull request, pushed twice: its plan runs for both heads.
        git(&dev, &["switch", "-q", "-c", "rotate-sooner"]);
        std::fs::write(dev.join("psk.yaml"), config_text(&env.recipient, 2, "60d")).unwrap();
        git(&dev, &["commit", "-q", "-am", "rotate every 60 days"]);
        let first = git(&dev, &["rev-parse", "HEAD"]);
        std::fs::write(dev.join("psk.yaml"), config_text(&env.recipient, 2, "45d")).unwrap();
        git(&dev, &["commit", "-q", "-am", "rotate every 45 days"]);
        let head = git(&dev, &["rev-parse", "HEAD"]);
        git(&dev, &["push", "-q", "origin", "rotate-sooner"]);
        let db = serde_json::json!({
            "commit_pulls": {},
            "pulls": {"7": {"number": 7, "head": {"sha": head, "ref": "rotate-sooner"}}},
            "comments": {},
            "runs": [
                run(1001, "psk-plan.yml", &first, "pull_request", "success"),
            ],
        });
        std::fs::write(home.join("bin/gh"), FAKE_GH).unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(home.join("bin/gh"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let repo = Repo {
            env,
            remote,
            dev,
            home,
            db,
            head,
            merge: String::new(),
        };
        repo.save_db();
        repo
    }

    fn save_db(&self) {
        std::fs::write(self.home.join("db.json"), self.db.to_string()).unwrap();
    }

    fn load_db(&mut self) {
        self.db =
            serde_json::from_str(&std::fs::read_to_string(self.home.join("db.json")).unwrap())
                .unwrap();
    }

    fn runner(&self, run_id: u64, sha: &str) -> Runner {
        let mut r = Runner::new(&self.remote, &self.home);
        let psk_dir = Path::new(env!("CARGO_BIN_EXE_psk")).parent().unwrap();
        let path = format!(
            "{}:{}:{}",
            self.home.join("bin").display(),
            psk_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        r.env = vec![
            ("PATH".into(), path),
            ("CLOUDFLARE_BASE_URL".into(), self.env.base_url()),
            ("WAIT_INTERVAL".into(), "0.2".into()),
        ];
        for (k, v) in [
            ("github.repository", REPO.to_string()),
            ("github.run_id", run_id.to_string()),
            ("github.sha", sha.to_string()),
            ("github.ref", "refs/heads/main".to_string()),
            ("github.token", "ghs_fake-token-for-the-test".to_string()),
            ("github.server_url", "https://github.example".to_string()),
            ("github.event.pull_request.number", "7".to_string()),
            ("github.event.pull_request.head.sha", self.head.clone()),
            (
                "vars.PSK_GIT_URL",
                "https://github.example/acme/psk.git".to_string(),
            ),
            ("vars.PSK_VERSION", "v0.1.0".to_string()),
            ("secrets.CLOUDFLARE_API_TOKEN", TOKEN.to_string()),
        ] {
            r.values.insert(k.to_string(), v);
        }
        r
    }

    fn workflow(name: &str) -> PathBuf {
        Path::new(ROOT).join("workflows").join(name)
    }

    /// The plan workflow for the pull request's last push (run 1002).
    fn plan(&mut self) {
        self.db["runs"].as_array_mut().unwrap().push(run(
            1002,
            "psk-plan.yml",
            &self.head,
            "pull_request",
            "in_progress",
        ));
        self.save_db();
        let mut runner = self.runner(1002, &self.head.clone());
        runner
            .values
            .insert("github.ref".into(), "refs/pull/7/merge".into());
        let jobs = runner.run(&Self::workflow("psk-plan.yml"));
        assert_eq!(jobs["plan"].result, "success", "{}", jobs["plan"].log);
        assert_eq!(jobs["comment"].result, "success", "{}", jobs["comment"].log);
        self.load_db();
        let runs = self.db["runs"].as_array_mut().unwrap();
        runs.retain(|r| r["id"] != 1002);
        runs.push(run(
            1002,
            "psk-plan.yml",
            &self.head,
            "pull_request",
            "success",
        ));
        // A later plan run of the branch for another commit (the first
        // push's, re-run): not the plan of the merged head.
        let first = runs[0]["head_sha"].as_str().unwrap().to_string();
        runs.push(run(1003, "psk-plan.yml", &first, "pull_request", "success"));
        let stale = self.home.join("artifacts/1003/psk-plan");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("plan.json"), "{\"not\": \"the reviewed plan\"}").unwrap();
        self.save_db();
    }

    /// Merges the pull request on main, as the merge button would.
    fn merge(&mut self) {
        git(&self.dev, &["switch", "-q", "main"]);
        git(&self.dev, &["pull", "-q", "origin", "main"]);
        git(
            &self.dev,
            &[
                "merge",
                "-q",
                "--no-ff",
                "-m",
                "Merge pull request #7",
                "rotate-sooner",
            ],
        );
        git(&self.dev, &["push", "-q", "origin", "main"]);
        self.merge = git(&self.dev, &["rev-parse", "HEAD"]);
        self.db["commit_pulls"][&self.merge] = serde_json::json!([{"number": 7}]);
        self.save_db();
    }

    /// A commit lands on main from another clone (another merge).
    fn land(remote: &Path, dir: &Path, file: &str, text: &str) {
        let _ = std::fs::remove_dir_all(dir);
        git(
            remote.parent().unwrap(),
            &[
                "clone",
                "-q",
                remote.to_str().unwrap(),
                dir.to_str().unwrap(),
            ],
        );
        std::fs::write(dir.join(file), text).unwrap();
        git(dir, &["add", file]);
        git(dir, &["commit", "-q", "-m", &format!("meanwhile: {file}")]);
        git(dir, &["push", "-q", "origin", "HEAD:main"]);
    }

    /// Runs psk-apply.yml for the merge (run 2001); `during` lands a
    /// commit on main while psk applies.
    fn apply(
        &mut self,
        during: Option<(&'static str, &'static str)>,
    ) -> BTreeMap<String, crate::common::actions::JobRun> {
        let runs = self.db["runs"].as_array_mut().unwrap();
        runs.push(run(
            1990,
            "psk-rotate.yml",
            &self.merge,
            "schedule",
            "success",
        ));
        runs.push(run(
            2001,
            "psk-apply.yml",
            &self.merge,
            "push",
            "in_progress",
        ));
        self.save_db();
        let mut runner = self.runner(2001, &self.merge.clone());
        let remote = self.remote.clone();
        let other = self.env.path("other");
        runner.before_step = Some(Box::new(move |step: &str| {
            if step == "Apply exactly the reviewed plan" {
                if let Some((file, text)) = during {
                    Repo::land(&remote, &other, file, text);
                }
            }
        }));
        runner.run(&Self::workflow("psk-apply.yml"))
    }

    /// main's psk.state.json, opened: tunnel id -> PSK; and whether every
    /// key psk made (the sandbox's ledger) is the one main holds.
    fn check_main_holds_every_key(&self) {
        let fresh = self.env.path("check");
        let _ = std::fs::remove_dir_all(&fresh);
        git(
            self.env.dir.path(),
            &["clone", "-q", "origin.git", fresh.to_str().unwrap()],
        );
        let state = std::fs::read(fresh.join("psk.state.json")).expect("main holds psk.state.json");
        std::fs::write(self.env.state_path(), state).unwrap();
        let (sealed, uncertain) = self.env.sealed();
        assert!(uncertain.is_empty(), "{uncertain:?}");
        let ledger = self.env.ledger();
        assert_eq!(ledger.len(), 2, "both tunnels rotated");
        for (id, keys) in &ledger {
            assert_eq!(
                sealed.get(id),
                keys.last(),
                "main's state does not hold the newest key of {id}"
            );
        }
    }
}

fn run(id: u64, workflow: &str, sha: &str, event: &str, status: &str) -> serde_json::Value {
    let (status, conclusion) = match status {
        "in_progress" => ("in_progress", serde_json::Value::Null),
        c => ("completed", serde_json::Value::from(c)),
    };
    serde_json::json!({
        "id": id,
        "run_number": id,
        "name": workflow.trim_end_matches(".yml").replace('-', " "),
        "path": format!(".github/workflows/{workflow}"),
        "head_sha": sha,
        "head_branch": if event == "pull_request" { "rotate-sooner" } else { "main" },
        "event": event,
        "status": status,
        "conclusion": conclusion,
    })
}

#[test]
fn a_commit_landing_on_main_mid_apply_loses_no_key() {
    let mut repo = Repo::new();
    repo.plan();
    repo.merge();
    let jobs = repo.apply(Some(("NOTES.md", "another merge during the apply\n")));
    assert_eq!(jobs["apply"].result, "success", "{}", jobs["apply"].log);
    assert_eq!(jobs["commit"].result, "success", "{}", jobs["commit"].log);
    // Both commits are on main: the one that landed, and the state on top.
    let check = repo.env.path("log");
    git(
        repo.env.dir.path(),
        &["clone", "-q", "origin.git", check.to_str().unwrap()],
    );
    let log = git(&check, &["log", "--format=%s", "-3"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "psk apply for #7",
            "meanwhile: NOTES.md",
            "Merge pull request #7"
        ],
        "{}",
        jobs["commit"].log
    );
    repo.check_main_holds_every_key();
}

#[test]
fn a_state_that_cannot_be_pushed_is_kept_and_the_run_says_how_to_restore_it() {
    let mut repo = Repo::new();
    repo.plan();
    repo.merge();
    // Someone commits a psk.state.json of their own meanwhile: the state
    // cannot be rebased over it.
    let jobs = repo.apply(Some(("psk.state.json", "{\"someone\": \"else\"}\n")));
    assert_eq!(jobs["apply"].result, "success", "{}", jobs["apply"].log);
    assert_eq!(jobs["commit"].result, "failure", "{}", jobs["commit"].log);
    let log = &jobs["commit"].log;
    assert!(
        log.contains("::error title=psk state not committed::"),
        "{log}"
    );
    assert!(log.contains("psk-state-2001"), "{log}");
    assert!(!log.contains("ghs_fake-token"), "the token leaked: {log}");
    assert!(
        jobs["commit"].summary.contains("```sh"),
        "{}",
        jobs["commit"].summary
    );
    // Followed literally, from a clone of main, the restore puts the new
    // state on main.
    let restore = log
        .lines()
        .find_map(|l| {
            l.split_once("from a clone of main, run: ")
                .map(|(_, c)| c.to_string())
        })
        .unwrap_or_else(|| panic!("no restore command in:\n{log}"));
    let clone = repo.env.path("restore");
    git(
        repo.env.dir.path(),
        &["clone", "-q", "origin.git", clone.to_str().unwrap()],
    );
    let path = format!(
        "{}:{}",
        repo.home.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-ec", &restore])
        .current_dir(&clone)
        .env("PATH", path)
        .env("GH_FAKE", &repo.home)
        .env("GITHUB_REPOSITORY", REPO)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ops")
        .env("GIT_AUTHOR_EMAIL", "ops@example.com")
        .env("GIT_COMMITTER_NAME", "Ops")
        .env("GIT_COMMITTER_EMAIL", "ops@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "{restore}\n{out:?}");
    repo.check_main_holds_every_key();
}

#[test]
fn the_plan_comment_is_one_comment_updated_in_place() {
    let mut repo = Repo::new();
    repo.plan();
    repo.load_db();
    let first = repo.db["comments"]["7"].clone();
    assert_eq!(first.as_array().unwrap().len(), 1, "{first}");
    // Another push, another plan run: the same comment, now naming it.
    let mut runner = repo.runner(1004, &repo.head.clone());
    runner
        .values
        .insert("github.ref".into(), "refs/pull/7/merge".into());
    let jobs = runner.run(&Repo::workflow("psk-plan.yml"));
    assert_eq!(jobs["comment"].result, "success", "{}", jobs["comment"].log);
    repo.load_db();
    let comments = repo.db["comments"]["7"].as_array().unwrap();
    assert_eq!(comments.len(), 1, "{comments:?}");
    let body = comments[0]["body"].as_str().unwrap();
    assert!(body.starts_with("<!-- psk-plan -->"), "{body}");
    assert!(body.contains("/actions/runs/1004"), "{body}");
    assert!(body.contains("tunnel-00"), "{body}");
}

#[test]
fn the_scheduled_rotation_keeps_its_state_and_fences_the_status() {
    let mut repo = Repo::new();
    let main = git(&repo.dev, &["rev-parse", "origin/main"]);
    repo.db["runs"].as_array_mut().unwrap().push(run(
        3001,
        "psk-rotate.yml",
        &main,
        "schedule",
        "in_progress",
    ));
    repo.save_db();
    let mut runner = repo.runner(3001, &main);
    let remote = repo.remote.clone();
    let other = repo.env.path("other");
    runner.before_step = Some(Box::new(move |step: &str| {
        if step == "Apply what is due" {
            Repo::land(&remote, &other, "NOTES.md", "merged during the rotation\n");
        }
    }));
    let jobs = runner.run(&Repo::workflow("psk-rotate.yml"));
    assert_eq!(jobs["rotate"].result, "success", "{}", jobs["rotate"].log);
    assert_eq!(jobs["commit"].result, "success", "{}", jobs["commit"].log);
    assert_eq!(jobs["propose"].result, "skipped");
    repo.check_main_holds_every_key();
    // `psk status` in the summary is a fenced block, so its table shows
    // as text rather than as markdown.
    let summary = &jobs["rotate"].summary;
    let status = summary
        .split("### Where every key stands")
        .nth(1)
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(status.trim_start().starts_with("```\n"), "{summary}");
    assert!(status.trim_end().ends_with("```"), "{summary}");
}

/// The cron of psk-rotate.yml runs inside the example policy's window in
/// winter and in summer, with time left for an apply: psk itself says
/// whether the window is open (`plan --offline --at`).
#[test]
fn the_schedule_falls_in_the_example_window_all_year() {
    let text = std::fs::read_to_string(Repo::workflow("psk-rotate.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let cron = doc["on"]["schedule"][0]["cron"]
        .as_str()
        .unwrap()
        .to_string();
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let (minute, hour): (u32, u32) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
    assert_eq!(fields[2..4], ["*", "*"], "{cron}");
    let days: Vec<u32> = fields[4].split(',').map(|d| d.parse().unwrap()).collect();
    let env = TestEnv::new(0);
    let example =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/github-actions/psk.yaml");
    std::fs::copy(&example, env.config_path()).unwrap();
    // A Sunday in winter and one in summer, and the week after each.
    for sunday in ["2027-01-10", "2027-07-11"] {
        let sunday = chrono::NaiveDate::parse_from_str(sunday, "%Y-%m-%d").unwrap();
        for offset in 0..7u32 {
            let day = sunday + chrono::Days::new(u64::from(offset));
            let at = day.and_hms_opt(hour, minute, 0).unwrap().and_utc();
            // Cron's day of week: 0 is Sunday.
            let scheduled = days.contains(&offset);
            let open = |t: chrono::DateTime<chrono::Utc>| {
                let run = env.run(&[
                    "plan",
                    "--offline",
                    "--detailed-exitcode",
                    "--at",
                    &t.to_rfc3339(),
                ]);
                assert!(matches!(run.code, 0 | 2), "{run:?}");
                run.code == 2
            };
            if scheduled {
                assert!(open(at), "{cron} at {at} is outside the window");
                // The apply job may take its whole timeout.
                let end = at + chrono::TimeDelta::minutes(60);
                assert!(open(end), "{cron}: the window closes before {end}");
            }
        }
    }
}

/// What an SRE reads first in a workflow: nothing by default, each job
/// its own permissions and a timeout; the Cloudflare token only in jobs
/// bound to an environment, and those jobs unable to push; no checkout
/// keeps its credentials; a reviewed apply in no concurrency group.
#[test]
fn the_workflows_hold_their_guards() {
    for name in ["psk-plan.yml", "psk-apply.yml", "psk-rotate.yml"] {
        let text = std::fs::read_to_string(Repo::workflow(name)).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            doc["permissions"],
            serde_yaml::Value::Mapping(Default::default()),
            "{name}: permissions: {{}} at the top"
        );
        for (id, job) in doc["jobs"].as_mapping().unwrap() {
            let id = id.as_str().unwrap();
            assert!(
                job.get("timeout-minutes").is_some(),
                "{name}/{id}: timeout-minutes"
            );
            let job_text = serde_yaml::to_string(job).unwrap();
            let writes = job["permissions"]
                .as_mapping()
                .unwrap_or_else(|| panic!("{name}/{id}: permissions"))
                .values()
                .any(|v| v.as_str() == Some("write"));
            let token = job_text.contains("secrets.CLOUDFLARE_API_TOKEN");
            let runs_psk = job_text.contains("install-psk");
            if token {
                assert!(
                    job.get("environment").is_some(),
                    "{name}/{id}: the token outside an environment"
                );
            }
            assert!(
                !(writes && (token || runs_psk)),
                "{name}/{id}: a job that runs psk or holds the token may not write"
            );
            for step in job["steps"].as_sequence().unwrap() {
                if step["uses"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("actions/checkout@"))
                {
                    assert_eq!(
                        step["with"]["persist-credentials"].as_bool(),
                        Some(false),
                        "{name}/{id}: checkout keeps its credentials"
                    );
                }
            }
        }
    }
    let apply: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(Repo::workflow("psk-apply.yml")).unwrap())
            .unwrap();
    assert!(
        apply.get("concurrency").is_none(),
        "a concurrency group cancels a pending reviewed apply"
    );
}
