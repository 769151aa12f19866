//! A small GitHub Actions runner for the example workflows: it reads a
//! workflow's YAML and runs its jobs and steps as GitHub would, so the
//! tests exercise the shipped text, not a copy. Each `run:` step goes to
//! `bash --noprofile --norc -eo pipefail` with the step's environment,
//! `GITHUB_OUTPUT`, `GITHUB_STEP_SUMMARY` and friends; `if:` conditions and
//! `${{ }}` expressions are evaluated (the subset the workflows use:
//! contexts, literals, `== != && || !`, `always()`, `success()`,
//! `failure()`, `cancelled()`, `hashFiles()`); each job runs in a fresh
//! workspace. What GitHub itself provides is played here: `checkout` clones
//! the test's real bare git remote, the artifact actions copy files to and
//! from a folder, and `gh` is a fake (`FAKE_GH`) that answers the REST
//! calls the workflows make from a JSON file, running the real `jq` for
//! `--jq`. The local `install-psk` action puts the psk under test on PATH.
//! Anything else (an unknown action, context or function) fails the test,
//! so a workflow cannot use what is not checked here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

/// The fake `gh`: the REST endpoints and commands the example workflows
/// use, answered from `$GH_FAKE/db.json`; artifacts of other runs from
/// `$GH_FAKE/artifacts/RUN_ID/NAME/`.
pub const FAKE_GH: &str = r#"#!/usr/bin/env python3
import json, os, shutil, subprocess, sys, urllib.parse

root = os.environ["GH_FAKE"]
db_path = os.path.join(root, "db.json")
db = json.load(open(db_path))
args = sys.argv[1:]
with open(os.path.join(root, "calls.log"), "a") as log:
    log.write(json.dumps(args) + "\n")

def take(flag, default=None):
    if flag in args:
        i = args.index(flag)
        value = args[i + 1]
        del args[i:i + 2]
        return value
    return default

def out(value, jq):
    text = json.dumps(value)
    if jq is None:
        print(text)
        return
    r = subprocess.run(["jq", "-r", jq], input=text, capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    sys.exit(r.returncode)

def fail(message):
    sys.stderr.write("fake gh: " + message + "\n")
    sys.exit(1)

if args[:1] == ["api"]:
    del args[0]
    method = take("--method") or take("-X") or "GET"
    jq = take("--jq")
    if "--paginate" in args:
        args.remove("--paginate")
    fields = {}
    while "-F" in args:
        k, v = take("-F").split("=", 1)
        fields[k] = open(v[1:]).read() if v.startswith("@") else v
    endpoint = args[0]
    url = urllib.parse.urlparse(endpoint)
    query = dict(urllib.parse.parse_qsl(url.query))
    parts = url.path.split("/")
    if parts[:1] != ["repos"] or "/".join(parts[1:3]) != os.environ["GITHUB_REPOSITORY"]:
        fail("unknown repository in " + endpoint)
    rest = parts[3:]
    if method == "GET" and rest[:1] == ["commits"] and rest[2:] == ["pulls"]:
        out(db["commit_pulls"].get(rest[1], []), jq)
    elif method == "GET" and rest[:1] == ["pulls"] and len(rest) == 2:
        out(db["pulls"][rest[1]], jq)
    elif method == "GET" and rest[:2] == ["actions", "runs"]:
        out({"workflow_runs": db["runs"]}, jq)
    elif method == "GET" and rest[:2] == ["actions", "workflows"] and rest[3:] == ["runs"]:
        runs = [r for r in db["runs"] if r["path"].endswith("/" + rest[2])]
        for key in ("head_sha", "event"):
            if key in query:
                runs = [r for r in runs if r[key] == query[key]]
        if "status" in query:
            runs = [r for r in runs if query["status"] in (r["status"], r.get("conclusion"))]
        out({"workflow_runs": runs}, jq)
    elif rest[:1] == ["issues"] and rest[2:] == ["comments"]:
        comments = db["comments"].setdefault(rest[1], [])
        if method == "GET":
            out(comments, jq)
        elif method == "POST":
            db["next_comment"] = db.get("next_comment", 100) + 1
            comments.append({"id": db["next_comment"], "body": fields["body"],
                             "user": {"login": "github-actions[bot]"}})
            json.dump(db, open(db_path, "w"))
            out(comments[-1], jq)
        else:
            fail("method " + method)
    elif method == "PATCH" and rest[:2] == ["issues", "comments"]:
        for comments in db["comments"].values():
            for c in comments:
                if str(c["id"]) == rest[2]:
                    c["body"] = fields["body"]
                    json.dump(db, open(db_path, "w"))
                    out(c, jq)
                    sys.exit(0)
        fail("no comment " + rest[2])
    else:
        fail("unknown endpoint " + method + " " + endpoint)
elif args[:2] == ["pr", "view"]:
    jq = take("--json") and take("--jq")
    out(db["pulls"][args[2]], "{\"headRefName\": .head.ref} | " + jq if jq else None)
elif args[:2] == ["run", "list"]:
    workflow = take("--workflow")
    branch = take("--branch")
    event = take("--event")
    status = take("--status")
    limit = int(take("--limit", "20"))
    take("--json")
    jq = take("--jq")
    runs = [r for r in db["runs"] if r["path"].endswith("/" + workflow)
            and (branch is None or r.get("head_branch") == branch)
            and (event is None or r["event"] == event)
            and (status is None or status in (r["status"], r.get("conclusion")))]
    runs.sort(key=lambda r: -r["id"])
    out([{"databaseId": r["id"]} for r in runs[:limit]], jq)
elif args[:2] == ["run", "download"]:
    del args[:2]
    name = take("--name")
    dest = take("--dir", ".")
    take("--repo")
    src = os.path.join(root, "artifacts", args[0], name)
    if not os.path.isdir(src):
        fail("no artifact " + name + " in run " + args[0])
    os.makedirs(dest, exist_ok=True)
    for f in os.listdir(src):
        shutil.copy(os.path.join(src, f), os.path.join(dest, f))
else:
    fail("unknown command " + " ".join(sys.argv[1:]))
"#;

/// What a job ended with, as `needs.JOB` shows it.
#[derive(Debug, Clone, Default)]
pub struct JobRun {
    pub result: String,
    pub outputs: BTreeMap<String, String>,
    /// Every step's name, outcome and output, for the test's messages.
    pub log: String,
    pub summary: String,
}

#[derive(Debug, Clone, Default)]
struct StepRun {
    outcome: String,
    outputs: BTreeMap<String, String>,
}

/// One workflow run.
pub struct Runner {
    /// The repository's bare remote, which `checkout` clones.
    pub remote: PathBuf,
    /// Where the runner keeps workspaces, artifacts and the fake gh.
    pub home: PathBuf,
    /// `github.*`, `vars.*`, `secrets.*`, `runner.*` values by their full
    /// name (`github.sha`); a `vars` or `secrets` not given is empty, any
    /// other context the test does not give fails the test.
    pub values: BTreeMap<String, String>,
    /// Environment every step gets besides GitHub's own variables (PATH
    /// with psk and the fake gh, the sandbox's URL).
    pub env: Vec<(String, String)>,
    /// Called with a step's name before it runs: a test lands a commit on
    /// the remote there, as another merge would during a run.
    #[allow(clippy::type_complexity)]
    pub before_step: Option<Box<dyn FnMut(&str)>>,
    jobs: BTreeMap<String, JobRun>,
}

impl Runner {
    pub fn new(remote: &Path, home: &Path) -> Runner {
        std::fs::create_dir_all(home.join("artifacts")).unwrap();
        Runner {
            remote: remote.to_path_buf(),
            home: home.to_path_buf(),
            values: BTreeMap::new(),
            env: Vec::new(),
            before_step: None,
            jobs: BTreeMap::new(),
        }
    }

    fn run_id(&self) -> String {
        self.values
            .get("github.run_id")
            .cloned()
            .expect("the test gives github.run_id")
    }

    /// The artifact `name` this run uploaded, if any.
    pub fn artifact(&self, name: &str) -> PathBuf {
        self.home.join("artifacts").join(self.run_id()).join(name)
    }

    /// Runs every job of the workflow file in order of `needs` (the
    /// workflows list a job after those it needs) and returns them by id.
    pub fn run(&mut self, workflow: &Path) -> BTreeMap<String, JobRun> {
        let text = std::fs::read_to_string(workflow).unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        self.jobs.clear();
        let wf_env = env_map(doc.get("env"));
        let jobs = doc["jobs"].as_mapping().expect("jobs").clone();
        for (id, job) in &jobs {
            let id = id.as_str().unwrap().to_string();
            let run = self.job(&id, job, &wf_env);
            self.jobs.insert(id, run);
        }
        self.jobs.clone()
    }

    fn job(&mut self, id: &str, job: &Value, wf_env: &[(String, Value)]) -> JobRun {
        let needs: Vec<String> = match job.get("needs") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Sequence(s)) => s.iter().map(|v| v.as_str().unwrap().into()).collect(),
            _ => Vec::new(),
        };
        let needs_ok = needs
            .iter()
            .all(|n| self.jobs.get(n).is_some_and(|j| j.result == "success"));
        let workspace = self.home.join(format!("work-{id}"));
        let mut scope = Scope {
            runner: self,
            steps: BTreeMap::new(),
            env: BTreeMap::new(),
            needs: needs.clone(),
            workspace,
            failed: !needs_ok,
        };
        // The workflow's env may use expressions too.
        for (k, v) in wf_env {
            let v = scope.text(v);
            scope.env.insert(k.clone(), v);
        }
        let condition = job.get("if").and_then(Value::as_str).unwrap_or("success()");
        if !scope.condition(condition) {
            return JobRun {
                result: "skipped".into(),
                ..JobRun::default()
            };
        }
        scope.failed = false;
        for (k, v) in env_map(job.get("env")) {
            let v = scope.text(&v);
            scope.env.insert(k, v);
        }
        let _ = std::fs::remove_dir_all(&scope.workspace);
        std::fs::create_dir_all(&scope.workspace).unwrap();
        let mut log = String::new();
        let mut summary = String::new();
        for step in job["steps"].as_sequence().expect("steps") {
            let name = step_name(step);
            let condition = step
                .get("if")
                .and_then(Value::as_str)
                .unwrap_or("success()");
            let sid = step.get("id").and_then(Value::as_str).map(String::from);
            if !scope.condition(condition) {
                log.push_str(&format!("--- {name}: skipped\n"));
                if let Some(sid) = sid {
                    scope.steps.insert(
                        sid,
                        StepRun {
                            outcome: "skipped".into(),
                            ..StepRun::default()
                        },
                    );
                }
                continue;
            }
            if let Some(hook) = scope.runner.before_step.as_mut() {
                hook(&name);
            }
            let (ok, outputs, text, step_summary) = scope.step(step);
            log.push_str(&format!(
                "--- {name}: {}\n{text}",
                if ok { "success" } else { "failure" }
            ));
            summary.push_str(&step_summary);
            if !ok {
                scope.failed = true;
            }
            if let Some(sid) = sid {
                scope.steps.insert(
                    sid,
                    StepRun {
                        outcome: if ok { "success" } else { "failure" }.into(),
                        outputs,
                    },
                );
            }
        }
        let mut outputs = BTreeMap::new();
        if let Some(Value::Mapping(m)) = job.get("outputs") {
            for (k, v) in m {
                outputs.insert(k.as_str().unwrap().to_string(), scope.text(v));
            }
        }
        JobRun {
            result: if scope.failed { "failure" } else { "success" }.into(),
            outputs,
            log,
            summary,
        }
    }
}

fn step_name(step: &Value) -> String {
    step.get("name")
        .or_else(|| step.get("uses"))
        .or_else(|| step.get("run"))
        .and_then(Value::as_str)
        .unwrap_or("?")
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn env_map(v: Option<&Value>) -> Vec<(String, Value)> {
    match v {
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

/// One job as it runs: its steps so far, its environment, its workspace.
struct Scope<'a> {
    runner: &'a mut Runner,
    steps: BTreeMap<String, StepRun>,
    env: BTreeMap<String, String>,
    needs: Vec<String>,
    workspace: PathBuf,
    failed: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum V {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

impl V {
    fn truthy(&self) -> bool {
        match self {
            V::Null => false,
            V::Bool(b) => *b,
            V::Num(n) => *n != 0.0 && !n.is_nan(),
            V::Str(s) => !s.is_empty(),
        }
    }

    fn text(&self) -> String {
        match self {
            V::Null => String::new(),
            V::Bool(b) => b.to_string(),
            V::Num(n) => n.to_string(),
            V::Str(s) => s.clone(),
        }
    }

    fn num(&self) -> f64 {
        match self {
            V::Null => 0.0,
            V::Bool(b) => f64::from(u8::from(*b)),
            V::Num(n) => *n,
            V::Str(s) if s.trim().is_empty() => 0.0,
            V::Str(s) => s.trim().parse().unwrap_or(f64::NAN),
        }
    }

    /// GitHub's `==`: strings compare ignoring case; other kinds as numbers.
    fn equals(&self, other: &V) -> bool {
        match (self, other) {
            (V::Str(a), V::Str(b)) => a.eq_ignore_ascii_case(b),
            (V::Null, V::Null) => true,
            (a, b) => a.num() == b.num(),
        }
    }
}

impl Scope<'_> {
    /// A value with every `${{ }}` replaced, as GitHub does before a step
    /// sees it.
    fn text(&mut self, v: &Value) -> String {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Null => String::new(),
            other => panic!("unexpected value {other:?}"),
        };
        let mut out = String::new();
        let mut rest = s.as_str();
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").expect("closed expression") + start;
            out.push_str(&self.eval(&rest[start + 3..end]).text());
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn condition(&mut self, expr: &str) -> bool {
        let expr = expr.trim();
        let expr = expr
            .strip_prefix("${{")
            .and_then(|e| e.strip_suffix("}}"))
            .unwrap_or(expr);
        // Without a status function GitHub adds `success() &&`.
        let has_status = ["always()", "success()", "failure()", "cancelled()"]
            .iter()
            .any(|f| expr.contains(f));
        let v = self.eval(expr).truthy();
        if has_status {
            v
        } else {
            !self.failed && v
        }
    }

    fn eval(&mut self, expr: &str) -> V {
        let tokens = tokenize(expr);
        let mut p = Parser {
            tokens,
            at: 0,
            scope: self,
        };
        let v = p.or();
        assert!(p.at == p.tokens.len(), "cannot evaluate `{expr}`");
        v
    }

    fn context(&mut self, name: &str) -> V {
        let parts: Vec<&str> = name.split('.').collect();
        match parts.as_slice() {
            ["steps", id, "outputs", key] => self
                .steps
                .get(*id)
                .and_then(|s| s.outputs.get(*key))
                .map_or(V::Null, |v| V::Str(v.clone())),
            ["steps", id, "outcome" | "conclusion"] => self
                .steps
                .get(*id)
                .map_or(V::Null, |s| V::Str(s.outcome.clone())),
            ["needs", job, rest @ ..] => {
                assert!(
                    self.needs.iter().any(|n| n == job),
                    "`{name}`: not in needs"
                );
                let j = self.runner.jobs.get(*job).cloned().unwrap_or_default();
                match rest {
                    ["result"] => V::Str(j.result),
                    ["outputs", key] => j.outputs.get(*key).map_or(V::Null, |v| V::Str(v.clone())),
                    _ => panic!("unknown context `{name}`"),
                }
            }
            ["env", key] => self.env.get(*key).map_or(V::Null, |v| V::Str(v.clone())),
            ["vars" | "secrets", ..] => self
                .runner
                .values
                .get(name)
                .map_or(V::Str(String::new()), |v| V::Str(v.clone())),
            _ => V::Str(
                self.runner
                    .values
                    .get(name)
                    .unwrap_or_else(|| panic!("the test gives no value for `{name}`"))
                    .clone(),
            ),
        }
    }

    fn call(&mut self, f: &str, args: Vec<V>) -> V {
        match f {
            "always" => V::Bool(true),
            "success" => V::Bool(!self.failed),
            "failure" => V::Bool(self.failed),
            "cancelled" => V::Bool(false),
            "hashFiles" => {
                let any = args.iter().any(|a| self.workspace.join(a.text()).is_file());
                V::Str(if any { "hash".into() } else { String::new() })
            }
            _ => panic!("the runner does not know the function {f}()"),
        }
    }

    /// Runs one step: (succeeded, outputs, log, summary).
    fn step(&mut self, step: &Value) -> (bool, BTreeMap<String, String>, String, String) {
        let with: BTreeMap<String, String> = match step.get("with") {
            Some(Value::Mapping(m)) => m
                .iter()
                .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|(k, v)| (k, self.text(&v)))
                .collect(),
            _ => BTreeMap::new(),
        };
        if let Some(uses) = step.get("uses").and_then(Value::as_str) {
            let (ok, log) = self.action(uses, &with);
            return (ok, BTreeMap::new(), log, String::new());
        }
        let script = self.text(&step["run"]);
        let mut env = self.env.clone();
        for (k, v) in env_map(step.get("env")) {
            let v = self.text(&v);
            env.insert(k, v);
        }
        let dir = self.runner.home.join("step");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let output = dir.join("output");
        let summary = dir.join("summary");
        std::fs::write(&output, "").unwrap();
        std::fs::write(&summary, "").unwrap();
        std::fs::write(dir.join("script.sh"), &script).unwrap();
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail"])
            .arg(dir.join("script.sh"))
            .current_dir(&self.workspace)
            .env_clear()
            .env("HOME", self.runner.home.join("home"))
            .env("CI", "true")
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env("GITHUB_WORKSPACE", &self.workspace)
            .env("RUNNER_TEMP", &dir)
            .env("GH_FAKE", &self.runner.home)
            .env("GIT_CONFIG_NOSYSTEM", "1");
        for (k, key) in [
            ("GITHUB_REPOSITORY", "github.repository"),
            ("GITHUB_RUN_ID", "github.run_id"),
            ("GITHUB_SHA", "github.sha"),
            ("GITHUB_SERVER_URL", "github.server_url"),
        ] {
            if let Some(v) = self.runner.values.get(key) {
                cmd.env(k, v);
            }
        }
        for (k, v) in &self.runner.env {
            cmd.env(k, v);
        }
        cmd.envs(&env);
        let out = cmd.output().unwrap();
        let outputs = parse_output(&std::fs::read_to_string(&output).unwrap());
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (
            out.status.success(),
            outputs,
            log,
            std::fs::read_to_string(&summary).unwrap(),
        )
    }

    /// The actions the workflows use, played locally.
    fn action(&mut self, uses: &str, with: &BTreeMap<String, String>) -> (bool, String) {
        let name = uses.split('@').next().unwrap();
        match name {
            "actions/checkout" => {
                // Without `ref`: the branch of a push event, else the commit.
                let refname = with
                    .get("ref")
                    .cloned()
                    .or_else(|| {
                        self.runner
                            .values
                            .get("github.ref")
                            .and_then(|r| r.strip_prefix("refs/heads/"))
                            .map(String::from)
                    })
                    .or_else(|| self.runner.values.get("github.sha").cloned())
                    .expect("github.sha");
                let _ = std::fs::remove_dir_all(&self.workspace);
                let clone = Command::new("git")
                    .args(["clone", "-q"])
                    .arg(&self.runner.remote)
                    .arg(&self.workspace)
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .output()
                    .unwrap();
                assert!(clone.status.success(), "{clone:?}");
                // A branch is checked out as that branch (with its
                // upstream), a commit detached, as actions/checkout does.
                let remote_branch = format!("origin/{refname}");
                let is_branch = Command::new("git")
                    .args(["rev-parse", "-q", "--verify", &remote_branch])
                    .current_dir(&self.workspace)
                    .output()
                    .unwrap()
                    .status
                    .success();
                let co = if is_branch {
                    Command::new("git")
                        .args(["checkout", "-q", "-B", &refname, &remote_branch])
                        .current_dir(&self.workspace)
                        .output()
                        .unwrap()
                } else {
                    Command::new("git")
                        .args(["checkout", "-q", "--detach", &refname])
                        .current_dir(&self.workspace)
                        .output()
                        .unwrap()
                };
                (
                    co.status.success(),
                    String::from_utf8_lossy(&co.stderr).into(),
                )
            }
            "./.github/actions/install-psk" => {
                assert!(with.contains_key("git-url") && with.contains_key("version"));
                (true, "psk under test on PATH\n".into())
            }
            "actions/upload-artifact" => {
                let dest = self.runner.artifact(&with["name"]);
                let mut found = 0;
                for p in with["path"]
                    .lines()
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                {
                    let src = self.workspace.join(p);
                    if src.is_file() {
                        std::fs::create_dir_all(&dest).unwrap();
                        std::fs::copy(&src, dest.join(src.file_name().unwrap())).unwrap();
                        found += 1;
                    }
                }
                let required =
                    with.get("if-no-files-found").map_or("warn", String::as_str) == "error";
                (
                    !(required && found == 0),
                    format!("{found} files uploaded\n"),
                )
            }
            "actions/download-artifact" => {
                let src = self.runner.artifact(&with["name"]);
                let Ok(entries) = std::fs::read_dir(&src) else {
                    return (false, format!("no artifact {}\n", with["name"]));
                };
                let dest = self
                    .workspace
                    .join(with.get("path").map_or(".", String::as_str));
                for e in entries {
                    let p = e.unwrap().path();
                    std::fs::copy(&p, dest.join(p.file_name().unwrap())).unwrap();
                }
                (true, String::new())
            }
            other => panic!("the runner does not play the action {other}"),
        }
    }
}

/// `GITHUB_OUTPUT`: `name=value` lines and `name<<DELIM` blocks.
fn parse_output(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((k, delim)) = line.split_once("<<") {
            let mut value = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.insert(k.to_string(), value.join("\n"));
        } else if let Some((k, v)) = line.split_once('=') {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(&'static str),
}

fn tokenize(expr: &str) -> Vec<Tok> {
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                assert!(i < chars.len(), "unclosed string in `{expr}`");
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        s.push('\'');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                s.push(chars[i]);
                i += 1;
            }
            out.push(Tok::Str(s));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(
                chars[start..i].iter().collect::<String>().parse().unwrap(),
            ));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_-.".contains(chars[i])) {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = ["==", "!=", "&&", "||", "<=", ">="]
                .into_iter()
                .find(|o| *o == two);
            if let Some(op) = op {
                out.push(Tok::Op(op));
                i += 2;
            } else {
                let op = ["(", ")", "!", ",", "<", ">"]
                    .into_iter()
                    .find(|o| o.starts_with(c))
                    .unwrap_or_else(|| panic!("unexpected `{c}` in `{expr}`"));
                out.push(Tok::Op(op));
                i += 1;
            }
        }
    }
    out
}

struct Parser<'s, 'a> {
    tokens: Vec<Tok>,
    at: usize,
    scope: &'s mut Scope<'a>,
}

impl Parser<'_, '_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at)
    }

    fn eat(&mut self, op: &'static str) -> bool {
        if self.peek() == Some(&Tok::Op(op)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    // JavaScript-like: `a || b` is a if truthy, else b.
    fn or(&mut self) -> V {
        let mut v = self.and();
        while self.eat("||") {
            let r = self.and();
            v = if v.truthy() { v } else { r };
        }
        v
    }

    fn and(&mut self) -> V {
        let mut v = self.cmp();
        while self.eat("&&") {
            let r = self.cmp();
            v = if v.truthy() { r } else { v };
        }
        v
    }

    fn cmp(&mut self) -> V {
        let v = self.unary();
        if self.eat("==") {
            let r = self.unary();
            return V::Bool(v.equals(&r));
        }
        if self.eat("!=") {
            let r = self.unary();
            return V::Bool(!v.equals(&r));
        }
        v
    }

    fn unary(&mut self) -> V {
        if self.eat("!") {
            return V::Bool(!self.unary().truthy());
        }
        self.primary()
    }

    fn primary(&mut self) -> V {
        let tok = self.tokens.get(self.at).cloned().expect("an operand");
        self.at += 1;
        match tok {
            Tok::Op("(") => {
                let v = self.or();
                assert!(self.eat(")"), "unclosed (");
                v
            }
            Tok::Str(s) => V::Str(s),
            Tok::Num(n) => V::Num(n),
            Tok::Ident(id) => match id.as_str() {
                "true" => V::Bool(true),
                "false" => V::Bool(false),
                "null" => V::Null,
                _ if self.eat("(") => {
                    let mut args = Vec::new();
                    if !self.eat(")") {
                        loop {
                            args.push(self.or());
                            if self.eat(")") {
                                break;
                            }
                            assert!(self.eat(","), "expected , in {id}()");
                        }
                    }
                    self.scope.call(&id, args)
                }
                _ => self.scope.context(&id),
            },
            Tok::Op(op) => panic!("unexpected `{op}`"),
        }
    }
}
