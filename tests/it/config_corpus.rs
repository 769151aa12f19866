//! Every broken psk.yaml in tests/corpus/config/ is refused by the real
//! binary with exit 1, located at the right file:line, in human and JSON
//! form, by `validate` and by `plan --offline`, and never with a panic.
//! tests/corpus/config/expectations.tsv says where and what.

use std::path::{Path, PathBuf};

use crate::common::psk_in as psk;

struct Expectation {
    file: String,
    line: usize,
    text: String,
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/config")
}

fn expectations() -> Vec<Expectation> {
    let text = std::fs::read_to_string(corpus().join("expectations.tsv")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.splitn(3, '\t');
            Expectation {
                file: parts.next().unwrap().to_string(),
                line: parts.next().unwrap().parse().unwrap(),
                text: parts.next().unwrap_or("").to_string(),
            }
        })
        .collect()
}

#[test]
fn the_corpus_is_large_and_every_file_has_an_expectation() {
    let listed: Vec<String> = expectations().into_iter().map(|e| e.file).collect();
    let mut files: Vec<String> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "only {} broken configs", files.len());
    assert_eq!(
        files, listed,
        "expectations.tsv must list every corpus file, in order"
    );
}

#[test]
fn every_broken_config_exits_1_at_the_right_line() {
    let tmp = tempfile::tempdir().unwrap();
    for e in expectations() {
        let path = tmp.path().join(&e.file);
        std::fs::copy(corpus().join(&e.file), &path).unwrap();
        let before = std::fs::read_dir(tmp.path()).unwrap().count();

        for args in [&["validate"][..], &["plan", "--offline"]] {
            let mut full = args.to_vec();
            full.extend_from_slice(&["-c", e.file.as_str()]);
            let (code, stdout, stderr) = psk(tmp.path(), &full);
            let all = format!("{stdout}{stderr}");
            assert_eq!(code, 1, "{} {args:?}: {all}", e.file);
            assert!(!all.contains("panicked"), "{}: {all}", e.file);
            assert!(
                stderr.contains(&format!("{}:{}:", e.file, e.line)),
                "{} {args:?}: expected {}:{}: in\n{stderr}",
                e.file,
                e.file,
                e.line
            );
            assert!(
                stderr.contains(&e.text),
                "{}: expected {:?} in\n{stderr}",
                e.file,
                e.text
            );
        }

        let (code, stdout, stderr) = psk(
            tmp.path(),
            &["validate", "-c", e.file.as_str(), "--format", "json"],
        );
        assert_eq!(code, 1, "{}: {stdout}{stderr}", e.file);
        let report: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|err| panic!("{}: not JSON ({err}): {stdout}", e.file));
        assert_eq!(report["valid"], false);
        let errors = report["errors"].as_array().unwrap();
        assert!(
            errors.iter().any(|d| d["line"] == e.line
                && d["file"].as_str().unwrap().ends_with(&e.file)
                && d["column"].as_u64().is_some_and(|c| c >= 1)
                && d["message"].as_str().unwrap().contains(&e.text)),
            "{}: no error at line {} containing {:?} in {stdout}",
            e.file,
            e.line,
            e.text
        );
        if e.file.contains("every-error-at-once") {
            let lines: Vec<u64> = errors.iter().map(|d| d["line"].as_u64().unwrap()).collect();
            assert_eq!(lines, [6, 7, 11], "{stdout}");
        }
        // Nothing was written beside the config.
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            before,
            "{}",
            e.file
        );
    }
}

/// Mangled versions of every example (each line dropped, the file cut
/// after each line, each line's first `:` removed, tabs for indentation)
/// are accepted or refused, never a panic, and each refusal is located.
#[test]
fn mangled_examples_never_panic() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for dir in std::fs::read_dir(examples).unwrap() {
        let path = dir.unwrap().path().join("psk.yaml");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let mut variants = Vec::new();
        for i in 0..lines.len() {
            let mut dropped = lines.clone();
            dropped.remove(i);
            variants.push(dropped.join("\n"));
            variants.push(lines[..i].join("\n"));
            let mut colon = lines.clone();
            let no_colon = colon[i].replacen(':', " ", 1);
            colon[i] = &no_colon;
            variants.push(colon.join("\n"));
            let mut tab = lines.clone();
            let tabbed = format!("\t{}", tab[i].trim_start());
            tab[i] = &tabbed;
            variants.push(tab.join("\n"));
        }
        for v in variants {
            if let Err(e) = psk::config::Config::parse(Path::new("psk.yaml"), &v) {
                assert!(!e.diagnostics.is_empty());
                let n = v.lines().count().max(1);
                for d in &e.diagnostics {
                    assert!(
                        d.position.line >= 1 && d.position.line <= n + 1,
                        "{e}\n---\n{v}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 500, "{checked}");
}
