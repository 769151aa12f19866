//! `psk status` on a fixed fleet (tests/corpus/status: one tunnel in every
//! condition) at a fixed instant, in every format: the bytes pinned as
//! snapshots, the metrics parsed back by an independent OpenMetrics and
//! Prometheus-text parser, the textfile, the exit code, and `--refresh`
//! against the sandbox.

use chrono::{DateTime, Utc};
use openmetrics_parser::{MetricNumber, OpenMetricsValue, PrometheusValue};

use crate::common::*;

const AT: &str = "2026-12-01T00:00:00Z";
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/status");

/// A test environment holding the status fleet's psk.yaml and state.
fn fleet() -> TestEnv {
    let env = TestEnv::new(0);
    for f in ["psk.yaml", "psk.state.json"] {
        std::fs::copy(format!("{CORPUS}/{f}"), env.path(f)).unwrap();
    }
    env
}

fn status(env: &TestEnv, args: &[&str]) -> Run {
    let mut all = vec!["status", "--at", AT];
    all.extend_from_slice(args);
    let run = env.run(&all);
    env.assert_no_secrets(&run.all());
    assert!(!run.all().contains("AGE ENCRYPTED"), "{run:?}");
    run
}

fn unix(s: &str) -> f64 {
    s.parse::<DateTime<Utc>>().unwrap().timestamp() as f64
}

#[test]
fn status_in_every_format_is_pinned() {
    let env = fleet();
    let human = status(&env, &[]).success();
    insta::assert_snapshot!("human", human.stdout);
    let json = status(&env, &["--format", "json"]).success();
    insta::assert_snapshot!("json", json.stdout);
    let om = status(&env, &["--format", "openmetrics"]).success();
    insta::assert_snapshot!("openmetrics", om.stdout);
    let prom = status(&env, &["--format", "prometheus"]).success();
    insta::assert_snapshot!("prometheus", prom.stdout);
    // Same inputs, same bytes.
    assert_eq!(status(&env, &["--format", "json"]).stdout, json.stdout);
}

#[test]
fn json_status_says_what_each_tunnel_needs() {
    let env = fleet();
    let run = status(&env, &["--format", "json"]).success();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["format_version"], "1.3");
    assert_eq!(v["state"]["serial"], 42);
    let by_name = |n: &str| {
        v["tunnels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == n)
            .unwrap()
            .clone()
    };
    let ok = by_name("fra-primary");
    assert_eq!(ok["next_due"], "2027-01-30T08:00:00Z");
    assert_eq!(ok["needs_attention"], false);
    let overdue = by_name("fra-secondary");
    assert_eq!(overdue["overdue"], true);
    // Due 2026-10-30T10:00, 31 days and 14 hours before AT.
    assert_eq!(overdue["overdue_seconds"], 31 * 86_400 + 14 * 3_600);
    assert_eq!(by_name("ams-new")["never_rotated"], true);
    assert_eq!(
        by_name("lon-crashed")["interrupted_since"],
        "2026-11-30T23:00:00Z"
    );
    assert_eq!(
        by_name("par-local")["pending_since"],
        "2026-11-30T22:00:00Z"
    );
    assert_eq!(
        by_name("osl-router")["delivery_failed"]["error"],
        "exit status 1"
    );
    // Due by its spread slot on a Tuesday; the weekend window opens on
    // Saturday 02:00 in Berlin.
    let waits = by_name("mad-weekend");
    assert_eq!(waits["overdue"], true);
    assert_eq!(waits["rotation_may_start"], "2026-12-05T01:00:00Z");
    assert_eq!(waits["deadline"], "2026-12-01T12:00:00Z");
    // Rotated, and not shown back up (`verify`): its site is held.
    let down = by_name("zrh-a");
    assert_eq!(down["unverified_since"], "2026-11-30T10:00:00Z");
    assert_eq!(down["needs_attention"], true);
    assert_eq!(v["summary"]["unverified"], 1);
    assert_eq!(v["summary"]["needs_attention"], 7);
}

/// A sample's value in a parsed family, by the tunnel's `name` label.
fn om_value(
    doc: &openmetrics_parser::MetricsExposition<
        openmetrics_parser::OpenMetricsType,
        OpenMetricsValue,
    >,
    family: &str,
    name: &str,
) -> Option<f64> {
    let f = doc
        .families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    f.iter_samples()
        .find(|s| s.get_labelset().unwrap().get_label_value("name") == Some(name))
        .map(|s| match &s.value {
            OpenMetricsValue::Gauge(n) => n.as_f64(),
            other => panic!("{family} is not a gauge: {other:?}"),
        })
}

#[test]
fn openmetrics_parses_back_to_the_status() {
    let env = fleet();
    let run = status(&env, &["--format", "openmetrics"]).success();
    let doc = openmetrics_parser::openmetrics::parse_openmetrics(&run.stdout)
        .unwrap_or_else(|e| panic!("not OpenMetrics: {e:?}\n{}", run.stdout));
    let next_due = "psk_tunnel_next_due_timestamp_seconds";
    assert_eq!(
        om_value(&doc, next_due, "fra-primary"),
        Some(unix("2027-01-30T08:00:00Z"))
    );
    assert_eq!(doc.families[next_due].unit, "seconds");
    // A tunnel psk never rotated has no dates: no series, not a zero.
    assert_eq!(om_value(&doc, next_due, "ams-new"), None);
    assert_eq!(
        om_value(&doc, "psk_tunnel_never_rotated", "ams-new"),
        Some(1.0)
    );
    assert_eq!(
        om_value(&doc, "psk_tunnel_overdue", "fra-secondary"),
        Some(1.0)
    );
    assert_eq!(
        om_value(&doc, "psk_tunnel_overdue", "fra-primary"),
        Some(0.0)
    );
    assert_eq!(
        om_value(&doc, "psk_tunnel_interrupted", "lon-crashed"),
        Some(1.0)
    );
    assert_eq!(om_value(&doc, "psk_tunnel_pending", "par-local"), Some(1.0));
    assert_eq!(
        om_value(&doc, "psk_tunnel_delivery_failed", "osl-router"),
        Some(1.0)
    );
    assert_eq!(
        om_value(
            &doc,
            "psk_tunnel_rotation_start_timestamp_seconds",
            "mad-weekend"
        ),
        Some(unix("2026-12-05T01:00:00Z"))
    );
    // A name with quotes is escaped and comes back whole.
    assert!(om_value(&doc, "psk_tunnel_overdue", "ber \"quoted\" name").is_some());
    // Labels identify the tunnel.
    let sample = doc.families["psk_tunnel_overdue"]
        .iter_samples()
        .find(|s| s.get_labelset().unwrap().get_label_value("name") == Some("fra-primary"))
        .unwrap();
    let labels = sample.get_labelset().unwrap();
    assert_eq!(labels.get_label_value("account_id"), Some(ACCOUNT));
    assert_eq!(labels.get_label_value("site"), Some("fra"));
    assert_eq!(labels.get_label_value("policy"), Some("default"));
    let serial = &doc.families["psk_state_serial"];
    assert!(matches!(
        serial.iter_samples().next().unwrap().value,
        OpenMetricsValue::Gauge(MetricNumber::Int(42))
    ));
    assert!(doc.families.contains_key("psk_build"));
    // Offline, nothing is said about keys changed outside psk.
    assert!(!doc.families.contains_key("psk_tunnel_changed_outside"));
}

#[test]
fn the_textfile_is_prometheus_text_written_whole() {
    let env = fleet();
    let dir = env.path("textfile");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("psk.prom");
    let run = status(&env, &["--textfile", file.to_str().unwrap()]).success();
    assert_eq!(run.stdout, "", "--textfile alone prints nothing");
    let written = std::fs::read_to_string(&file).unwrap();
    let printed = status(&env, &["--format", "prometheus"]).success().stdout;
    assert_eq!(written, printed);
    let doc = openmetrics_parser::prometheus::parse_prometheus(&written)
        .unwrap_or_else(|e| panic!("not Prometheus text: {e:?}\n{written}"));
    let overdue = &doc.families["psk_tunnel_overdue"];
    let v = overdue
        .iter_samples()
        .find(|s| s.get_labelset().unwrap().get_label_value("name") == Some("fra-secondary"))
        .map(|s| match &s.value {
            PrometheusValue::Gauge(n) => n.as_f64(),
            other => panic!("not a gauge: {other:?}"),
        });
    assert_eq!(v, Some(1.0));
    // Only the file: no temp file left for node_exporter to read.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("psk.prom")]);

    // A folder that does not exist: exit 1 naming the file.
    let bad = env.path("nowhere/psk.prom");
    let run = status(&env, &["--textfile", bad.to_str().unwrap()]).failure();
    assert!(
        run.stderr.contains("cannot write the metrics to"),
        "{run:?}"
    );
}

#[test]
fn exit_code_says_whether_anything_needs_attention() {
    let env = fleet();
    status(&env, &["--exit-code"]).code(2);
    // Without the flag, a status that shows problems still succeeds.
    status(&env, &[]).success();
    // Only the healthy tunnel left: 0.
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let healthy = text.split("  - name: fra-secondary").next().unwrap();
    env.write_config(healthy);
    let run = status(&env, &["--exit-code"]).success();
    assert!(run.stdout.contains("1 tunnel, all ok."), "{run:?}");
}

#[test]
fn refresh_shows_a_key_changed_outside_psk() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    env.run(&["status", "--exit-code"]).success();
    env.rotate_outside_psk(&tunnel_id(1));
    // Offline, psk cannot know.
    env.run(&["status", "--exit-code"]).success();
    let run = env.run(&["status", "--refresh", "--exit-code"]).code(2);
    env.assert_no_secrets(&run.all());
    let rows: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("tunnel-"))
        .collect();
    assert!(rows[0].ends_with("  ok"), "{run:?}");
    assert!(rows[1].contains("  changed outside psk "), "{run:?}");
    assert!(
        run.stdout
            .contains("(from psk.yaml, the state and Cloudflare)"),
        "{run:?}"
    );
    let om = env
        .run(&["status", "--refresh", "--format", "openmetrics"])
        .success();
    let doc = openmetrics_parser::openmetrics::parse_openmetrics(&om.stdout).unwrap();
    let family = "psk_tunnel_changed_outside";
    assert_eq!(om_value(&doc, family, "tunnel-01"), Some(1.0));
    assert_eq!(om_value(&doc, family, "tunnel-00"), Some(0.0));
}

#[test]
fn without_a_state_every_tunnel_is_never_rotated() {
    let env = TestEnv::new(2);
    let run = env.run(&["status", "--exit-code"]).code(2);
    assert!(run.stdout.contains("No state file yet"), "{run:?}");
    assert_eq!(
        run.stdout.matches("never rotated by psk").count(),
        2,
        "{run:?}"
    );
    let om = env.run(&["status", "--format", "openmetrics"]).success();
    let doc = openmetrics_parser::openmetrics::parse_openmetrics(&om.stdout).unwrap();
    assert!(!doc.families.contains_key("psk_state_serial"));
    assert_eq!(
        om_value(&doc, "psk_tunnel_never_rotated", "tunnel-01"),
        Some(1.0)
    );
    assert!(!env.state_path().exists(), "status must not write state");
}

#[test]
fn a_tunnel_named_by_name_needs_the_state_or_refresh() {
    let mut env = TestEnv::new(1);
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    env.write_config(&format!("{text}  - name: edge-by-name\n"));
    env.start_sandbox();
    // Offline, psk does not know its id: refused, saying what to do.
    let run = env.run(&["status"]).failure();
    assert!(
        run.stderr.contains("tunnel `edge-by-name` has no `id`"),
        "{run:?}"
    );
    assert!(run.stderr.contains("psk status --refresh"), "{run:?}");
    // --refresh finds it by name at Cloudflare.
    let run = env
        .run(&["status", "--refresh", "--format", "json"])
        .success();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let id = psk::sandbox::id_for_name(ACCOUNT, "edge-by-name");
    assert_eq!(v["tunnels"][1]["tunnel_id"], id.as_str());
    assert_eq!(v["tunnels"][1]["never_rotated"], true);
}

/// Issue 25: a tunnel psk never rotated, whose live key Cloudflare dates
/// (`--refresh`) older than its policy allows, is overdue, in every
/// format, not only "never rotated"; one whose live key is young is not.
#[test]
fn a_live_key_older_than_its_policy_is_overdue() {
    let mut env = TestEnv::new(2);
    // The sandbox dates the keys it seeds a day back; the policy allows 12h.
    env.write_config(&config_text(&env.recipient, 2, "12h"));
    env.start_sandbox();
    let offline = env.run(&["status", "--format", "json"]).success();
    let v: serde_json::Value = serde_json::from_str(&offline.stdout).unwrap();
    assert_eq!(
        v["tunnels"][0]["overdue"], false,
        "offline, psk cannot know"
    );

    let run = env
        .run(&["status", "--refresh", "--format", "json"])
        .success();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    for t in v["tunnels"].as_array().unwrap() {
        assert_eq!(t["overdue"], true, "{t}");
        assert!(t["overdue_seconds"].as_i64().unwrap() >= 12 * 3600, "{t}");
    }
    let om = env
        .run(&["status", "--refresh", "--format", "openmetrics"])
        .success();
    let doc = openmetrics_parser::openmetrics::parse_openmetrics(&om.stdout).unwrap();
    assert_eq!(om_value(&doc, "psk_tunnel_overdue", "tunnel-00"), Some(1.0));
    assert_eq!(
        om_value(&doc, "psk_tunnel_never_rotated", "tunnel-00"),
        Some(1.0)
    );
    let human = env.run(&["status", "--refresh"]);
    assert!(human.stdout.contains("overdue by"), "{human:?}");

    // A young live key (rotated outside psk just now) is not overdue.
    env.rotate_outside_psk(&tunnel_id(0));
    let run = env
        .run(&["status", "--refresh", "--format", "json"])
        .success();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["tunnels"][0]["overdue"], false, "{}", v["tunnels"][0]);
    assert_eq!(v["tunnels"][1]["overdue"], true);
}
