//! Policies end to end, through the real binary and the sandbox on
//! 127.0.0.1: tunnels named by name, change windows, the forecast, one
//! tunnel per site per apply, spread that is the same on every run, and
//! warnings from `psk validate`.

use std::sync::atomic::Ordering;

use crate::common::{tunnel_id, TestEnv, ACCOUNT};
use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc, Weekday};
use serde_json::Value;

fn config(recipient: &str, policy: &str, tunnels: &str) -> String {
    format!(
        "version: 1\naccount_id: {ACCOUNT}\nrecipients:\n  - {recipient}\npolicies:\n  default:\n{policy}tunnels:\n{tunnels}"
    )
}

fn json(run: &crate::common::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

fn last_rotated(env: &TestEnv, id: &str) -> DateTime<Utc> {
    time(&env.state_json()["tunnels"][format!("{ACCOUNT}/{id}")]["last_rotated"])
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[test]
fn tunnels_named_by_name_are_found_online_and_recorded_for_offline() {
    let mut env = TestEnv::new(0);
    let tunnels = format!(
        "  - name: tunnel-00\n    id: {}\n  - name: edge-by-name\n",
        tunnel_id(0)
    );
    env.write_config(&config(&env.recipient, "    rotate_every: 90d\n", &tunnels));
    env.start_sandbox();
    let id = psk::sandbox::id_for_name(ACCOUNT, "edge-by-name");

    // Offline, nothing recorded yet: refused at its line, with what to do.
    let offline = env.run(&["plan", "--offline"]).failure();
    assert!(offline.stderr.contains("psk.yaml:11:"), "{offline:?}");
    assert!(
        offline.stderr.contains("tunnel `edge-by-name` has no `id`"),
        "{offline:?}"
    );
    assert!(offline.stderr.contains("without --offline"), "{offline:?}");

    // Online, the list call finds it by name.
    let plan = env.run(&["plan", "--format", "json"]).success();
    let v = json(&plan);
    let action = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "edge-by-name")
        .expect("planned");
    assert_eq!(action["tunnel_id"], id.as_str());
    assert_eq!(action["action"], "generate");

    env.run(&["apply", "--auto-approve"]).success();
    assert_eq!(
        env.state_json()["tunnels"][format!("{ACCOUNT}/{id}")]["name"],
        "edge-by-name"
    );

    // Recorded: --offline now plans it by the id in the state.
    let offline = env
        .run(&["plan", "--offline", "--format", "json"])
        .success();
    let v = json(&offline);
    let names: Vec<(&str, &str)> = v["unchanged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap(),
                u["tunnel_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(names.contains(&("edge-by-name", id.as_str())), "{names:?}");
}

/// Resolved once, before planning: the dry run and apply see the tunnel's
/// policy too, so a name-only tunnel under `generator: local` gets a key
/// psk made, sent in bulk.
#[test]
fn a_tunnel_named_by_name_follows_its_policy_at_apply() {
    let mut env = TestEnv::new(0);
    let policy = "    rotate_every: 90d\n    generator: local\n";
    env.write_config(&config(&env.recipient, policy, "  - name: edge-by-name\n"));
    env.start_sandbox();
    env.run(&["plan"]).success();
    let c = &env.sandbox().counters;
    assert_eq!(c.bulk_validate.load(Ordering::Relaxed), 1);
    assert_eq!(c.generate_validate.load(Ordering::Relaxed), 0);

    env.run(&["apply", "--auto-approve"]).success();
    assert_eq!(
        c.generate.load(Ordering::Relaxed),
        0,
        "Cloudflare made no key"
    );
    assert!(c.bulk_set.load(Ordering::Relaxed) >= 1);
    let id = psk::sandbox::id_for_name(ACCOUNT, "edge-by-name");
    assert_eq!(
        env.state_json()["tunnels"][format!("{ACCOUNT}/{id}")]["name"],
        "edge-by-name"
    );
}

/// A saved plan names the tunnel's id; at `apply FILE` the state does not
/// know it yet, so psk asks Cloudflare's list again before checking the
/// plan (once refused as "psk.yaml changed since the plan was made").
#[test]
fn a_saved_plan_applies_to_a_tunnel_named_by_name() {
    let mut env = TestEnv::new(0);
    env.write_config(&config(
        &env.recipient,
        "    rotate_every: 90d\n",
        "  - name: edge-by-name\n",
    ));
    env.start_sandbox();
    env.run(&["plan", "--out", "plan.json"]).success();
    let run = env.run(&["apply", "plan.json"]).success();
    assert!(run.stdout.contains("edge-by-name"), "{run:?}");
    let id = psk::sandbox::id_for_name(ACCOUNT, "edge-by-name");
    let rec = &env.state_json()["tunnels"][format!("{ACCOUNT}/{id}")];
    assert_eq!(rec["name"], "edge-by-name");
    assert!(rec["psk"].is_string(), "a sealed PSK is recorded: {rec}");
}

#[test]
fn a_tunnel_named_by_a_name_cloudflare_does_not_have_is_an_error() {
    let mut env = TestEnv::new(1);
    env.start_sandbox();
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    env.write_config(&format!("{text}  - name: nowhere\n"));
    let run = env.run(&["plan"]).failure();
    assert!(
        run.stderr
            .contains("nowhere (named by name, no id; line 13)"),
        "{run:?}"
    );
    assert!(!run.all().contains("panicked"));
}

#[test]
fn a_tunnel_listed_by_id_and_by_name_is_refused() {
    let mut env = TestEnv::new(0);
    let tunnels = "  - name: edge\n".to_string();
    env.write_config(&config(&env.recipient, "    rotate_every: 90d\n", &tunnels));
    env.start_sandbox();
    let id = psk::sandbox::id_for_name(ACCOUNT, "edge");
    env.write_config(&config(
        &env.recipient,
        "    rotate_every: 90d\n",
        &format!("  - name: edge\n  - name: edge-again\n    id: {id}\n"),
    ));
    let run = env.run(&["plan"]).failure();
    assert!(
        run.stderr
            .contains("psk.yaml:9: tunnel `edge` is Cloudflare's tunnel"),
        "{run:?}"
    );
    assert!(run.stderr.contains("also lists as `edge-again`"), "{run:?}");
}

/// The first instant at or after `t` that is a Saturday 02:00 UTC.
fn next_saturday_0200(t: DateTime<Utc>) -> DateTime<Utc> {
    let mut d = t.date_naive();
    loop {
        let open = d.and_hms_opt(2, 0, 0).unwrap().and_utc();
        if d.weekday() == Weekday::Sat && open >= t {
            return open;
        }
        d = d.succ_opt().unwrap();
    }
}

#[test]
fn a_due_tunnel_waits_for_its_window_and_the_forecast_says_when() {
    let mut env = TestEnv::new(0);
    let tunnels = format!("  - name: tunnel-00\n    id: {}\n", tunnel_id(0));
    env.write_config(&config(&env.recipient, "    rotate_every: 30d\n", &tunnels));
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    let last = last_rotated(&env, &tunnel_id(0));
    let due = last + TimeDelta::days(30);

    env.write_config(&config(
        &env.recipient,
        "    rotate_every: 30d\n    window: {days: [sat], start: \"02:00\", end: \"06:00\"}\n",
        &tunnels,
    ));
    // Due, on a moment outside the window: deferred with when it opens.
    let mut outside = due + TimeDelta::hours(1);
    if outside.weekday() == Weekday::Sat && outside.hour() < 7 {
        outside += TimeDelta::days(1);
    }
    let run = env
        .run(&["plan", "--offline", "--at", &rfc3339(outside)])
        .success();
    assert!(
        run.stdout
            .contains("tunnel-00: due, waiting for window (opens "),
        "{run:?}"
    );
    assert!(run.stdout.contains("No changes. 1 deferred."), "{run:?}");
    let v = json(&env.run(&[
        "plan",
        "--offline",
        "--format",
        "json",
        "--at",
        &rfc3339(outside),
    ]));
    assert_eq!(v["actions"], serde_json::json!([]));
    let d = &v["deferred"][0];
    assert_eq!(d["name"], "tunnel-00");
    assert_eq!(d["deferred"]["code"], "window");
    let opens = next_saturday_0200(outside);
    assert_eq!(time(&d["deferred"]["opens"]), opens);
    // With --detailed-exitcode a deferred-only plan has no changes.
    env.run(&[
        "plan",
        "--offline",
        "--detailed-exitcode",
        "--at",
        &rfc3339(outside),
    ])
    .success();

    // Inside the window it rotates.
    let inside = opens + TimeDelta::hours(1);
    let v = json(&env.run(&[
        "plan",
        "--offline",
        "--format",
        "json",
        "--at",
        &rfc3339(inside),
    ]));
    assert_eq!(v["actions"][0]["action"], "rotate", "{v}");
    assert_eq!(v["deferred"], serde_json::json!([]));

    // Ten days before: upcoming, not an action, with when it may start.
    let before = due - TimeDelta::days(10);
    let v = json(&env.run(&[
        "plan",
        "--offline",
        "--format",
        "json",
        "--at",
        &rfc3339(before),
    ]));
    assert_eq!(v["actions"], serde_json::json!([]));
    assert_eq!(v["forecast_horizon"], "2w");
    let u = &v["upcoming"][0];
    assert_eq!(u["name"], "tunnel-00");
    assert_eq!(time(&u["due"]), due);
    assert_eq!(time(&u["starts"]), next_saturday_0200(due));
    let human = env.run(&["plan", "--offline", "--at", &rfc3339(before)]);
    assert!(
        human
            .stdout
            .contains("Falling due within 2w (information, not actions):"),
        "{human:?}"
    );
    // A shorter horizon, or none.
    let v = json(&env.run(&[
        "plan",
        "--offline",
        "--format",
        "json",
        "--forecast",
        "5d",
        "--at",
        &rfc3339(before),
    ]));
    assert_eq!(v["upcoming"], serde_json::json!([]));
    let v = json(&env.run(&[
        "plan",
        "--offline",
        "--format",
        "json",
        "--forecast",
        "0",
        "--at",
        &rfc3339(before),
    ]));
    assert_eq!(v["forecast_horizon"], Value::Null);
    assert_eq!(v["upcoming"], serde_json::json!([]));
}

#[test]
fn redundant_tunnels_of_a_site_change_one_per_apply() {
    let mut env = TestEnv::new(0);
    let tunnels = format!(
        "  - name: fra-a\n    id: {}\n    site: fra\n  - name: fra-b\n    id: {}\n    site: fra\n  - name: ams-a\n    id: {}\n    site: ams\n",
        tunnel_id(0),
        tunnel_id(1),
        tunnel_id(2)
    );
    env.write_config(&config(&env.recipient, "    rotate_every: 30d\n", &tunnels));
    env.start_sandbox();

    let v = json(&env.run(&["plan", "--format", "json"]));
    let acting: Vec<&str> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(acting, ["fra-a", "ams-a"]);
    let d = &v["deferred"][0];
    assert_eq!(d["name"], "fra-b");
    assert_eq!(d["action"], "generate");
    assert_eq!(d["deferred"]["code"], "site");
    assert_eq!(d["deferred"]["site"], "fra");
    assert_eq!(d["deferred"]["rotating"], "fra-a");

    let first = env.run(&["apply", "--auto-approve"]).success();
    assert!(
        first
            .stdout
            .contains("fra-b: first PSK due, waiting for a later apply: fra-a of site \"fra\""),
        "{first:?}"
    );
    let ledger = env.ledger();
    assert!(ledger.contains_key(&tunnel_id(0)) && ledger.contains_key(&tunnel_id(2)));
    assert!(
        !ledger.contains_key(&tunnel_id(1)),
        "fra-b must wait: {ledger:?}"
    );

    env.run(&["apply", "--auto-approve"]).success();
    assert!(env.ledger().contains_key(&tunnel_id(1)));
    env.run(&["plan", "--detailed-exitcode"]).success();

    // Both due together: still one per apply, unless the policy allows more.
    let later = rfc3339(Utc::now() + TimeDelta::days(40));
    let v = json(&env.run(&["plan", "--offline", "--format", "json", "--at", &later]));
    assert_eq!(v["summary"]["rotate"], 2);
    assert_eq!(v["summary"]["deferred"], 1);
    env.write_config(&config(
        &env.recipient,
        "    rotate_every: 30d\n    site_parallel: true\n",
        &tunnels,
    ));
    let v = json(&env.run(&["plan", "--offline", "--format", "json", "--at", &later]));
    assert_eq!(v["summary"]["rotate"], 3);
    assert_eq!(v["summary"]["deferred"], 0);
}

#[test]
fn spread_gives_each_tunnel_the_same_slot_on_every_run() {
    let mut env = TestEnv::new(0);
    let tunnels = format!(
        "  - name: t0\n    id: {}\n  - name: t1\n    id: {}\n",
        tunnel_id(0),
        tunnel_id(1)
    );
    env.write_config(&config(
        &env.recipient,
        "    rotate_every: 30d\n    spread: 7d\n",
        &tunnels,
    ));
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();

    // Offsets within the week, from SHA-256 of "<account>/<id>", computed
    // independently (Python's hashlib) for these two ids.
    let week = 7 * 86_400;
    for (i, offset) in [(0, 55_539_i64), (1, 156_751_i64)] {
        let deadline = last_rotated(&env, &tunnel_id(i)) + TimeDelta::days(30);
        let early = (deadline.timestamp() - offset).rem_euclid(week);
        let want = deadline - TimeDelta::seconds(early);
        let at = rfc3339(deadline - TimeDelta::days(20));
        let first = env.run(&["plan", "--offline", "--format", "json", "--at", &at]);
        let again = env.run(&["plan", "--offline", "--format", "json", "--at", &at]);
        assert_eq!(first.stdout, again.stdout, "same inputs, same bytes");
        let v = json(&first);
        let u = v["unchanged"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["tunnel_id"] == tunnel_id(i).as_str())
            .unwrap();
        assert_eq!(time(&u["next_due"]), want, "tunnel {i}");
        // Due at its slot, not before.
        let before = rfc3339(want - TimeDelta::seconds(1));
        let v = json(&env.run(&["plan", "--offline", "--format", "json", "--at", &before]));
        assert!(v["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["tunnel_id"] != tunnel_id(i).as_str()));
    }
}

#[test]
fn validate_warns_about_an_unused_policy_and_still_passes() {
    let env = TestEnv::new(1);
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    env.write_config(&text.replace("tunnels:\n", "  spare:\n    rotate_every: 30d\ntunnels:\n"));
    let run = env.run(&["validate"]).success();
    assert!(
        run.stderr.contains(
            "warning: psk.yaml:9:3: policies.spare: policy `spare` is not used by any tunnel"
        ),
        "{run:?}"
    );
    let v = json(&env.run(&["validate", "--format", "json"]));
    assert_eq!(v["valid"], true);
    assert_eq!(v["warnings"][0]["line"], 9);
    assert_eq!(v["warnings"][0]["key"], "policies.spare");
}
