//! The example alert rules (examples/prometheus) against psk's real
//! metrics: their promtool unit tests pass, every metric they read is one
//! `psk status` writes, and psk's Prometheus text passes promtool's lint.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/prometheus");
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/status");

/// `psk status` on the status fleet, in `format`.
fn metrics(format: &str) -> String {
    let env = TestEnv::new(0);
    for f in ["psk.yaml", "psk.state.json"] {
        std::fs::copy(format!("{CORPUS}/{f}"), env.path(f)).unwrap();
    }
    let args = ["status", "--at", "2026-12-01T00:00:00Z", "--format", format];
    env.run(&args).success().stdout
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let out = Command::new(tool("promtool"))
        .args(["test", "rules", "psk-alerts.test.yml"])
        .current_dir(DIR)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

/// Every `psk_…` name in `text`.
fn psk_names(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\bpsk_[a-z_]+\b").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

#[test]
fn alert_rules_read_only_metrics_psk_writes() {
    let written = metrics("prometheus");
    let families: Vec<String> = written
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{DIR}/psk-alerts.yml")).unwrap())
            .unwrap();
    let mut read = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            read.extend(psk_names(rule["expr"].as_str().unwrap()));
        }
    }
    let tests = std::fs::read_to_string(format!("{DIR}/psk-alerts.test.yml")).unwrap();
    read.extend(psk_names(&tests));
    assert!(read.len() >= 10, "{read:?}");
    for name in &read {
        assert!(
            families.contains(name),
            "the alert rules read {name}, which psk status does not write: {families:?}"
        );
    }
}

#[test]
fn prometheus_text_passes_promtool_lint() {
    let text = metrics("prometheus");
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.is_empty(), "{said}\n{text}");
}
