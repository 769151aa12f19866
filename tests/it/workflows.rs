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
