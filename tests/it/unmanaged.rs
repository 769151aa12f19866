//! Tunnels an account holds that psk.yaml leaves out: the sandbox's own
//! 40-tunnel fleet, with a psk.yaml that lists 30 of them and ignores 2.
//! Every format of `psk plan` and `psk status --refresh` names the other
//! 8, the metrics count them, and the lines psk offers, pasted into
//! psk.yaml, make them managed.

use psk::sandbox::{id_for_name, FLEET_ACCOUNT};

use crate::common::*;

/// The fleet's tunnel names, in the sandbox's order.
fn fleet_names() -> Vec<String> {
    let sites = [
        "fra", "ams", "lhr", "cdg", "mad", "mxp", "zrh", "vie", "waw", "arn", "cph", "osl", "hel",
        "dub", "lis", "bru", "prg", "bud", "ath", "ist",
    ];
    (sites.iter())
        .flat_map(|s| (1..=2).map(move |p| format!("{s}-ipsec-{p}")))
        .collect()
}

/// psk.yaml for the first `listed` tunnels of the fleet, ignoring the
/// last two (one by name, one by id).
fn config(recipient: &str, listed: usize) -> String {
    let names = fleet_names();
    let mut s = format!(
        "version: 1\naccount_id: {FLEET_ACCOUNT}\nrecipients:\n  - {recipient}\npolicies:\n  default:\n    rotate_every: 90d\n    site_parallel: true\nignore:\n  - {}\n  - {}\ntunnels:\n",
        names[39],
        id_for_name(FLEET_ACCOUNT, &names[38]).to_uppercase()
    );
    for n in &names[..listed] {
        s.push_str(&format!(
            "  - name: {n}\n    id: {}\n",
            id_for_name(FLEET_ACCOUNT, n)
        ));
    }
    s
}

fn env() -> TestEnv {
    let mut env = TestEnv::new(0);
    env.write_config(&config(&env.recipient, 30));
    env.start_sandbox();
    env
}

/// The 8 tunnels psk.yaml neither lists nor ignores.
fn expected() -> Vec<String> {
    let mut names = fleet_names()[30..38].to_vec();
    names.sort();
    names
}

#[test]
fn plan_names_unmanaged_tunnels_in_every_format() {
    let env = env();
    let human = env.run(&["plan", "--quiet"]).success();
    env.assert_no_secrets(&human.all());
    assert!(
        human.stdout.contains("Not in psk.yaml: 8 tunnels Cloudflare lists for its accounts, never rotated by psk; 2 more are ignored by `ignore:`."),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains(" 8 not in psk.yaml."),
        "{}",
        human.stdout
    );
    for name in expected() {
        let line = format!(
            "  - {{ name: {name}, id: {} }}\n",
            id_for_name(FLEET_ACCOUNT, &name)
        );
        assert!(human.stdout.contains(&line), "{line} in\n{}", human.stdout);
    }
    for ignored in &fleet_names()[38..] {
        assert!(!human.stdout.contains(ignored.as_str()), "{}", human.stdout);
    }

    let md = env.run(&["plan", "--format", "markdown"]).success();
    assert!(md
        .stdout
        .contains("<details><summary>Not in psk.yaml: 8</summary>"));
    assert!(md.stdout.contains(&format!(
        "- {{ name: {}, id: {} }}",
        expected()[0],
        id_for_name(FLEET_ACCOUNT, &expected()[0])
    )));

    let json = env.run(&["plan", "--format", "json"]).success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["format_version"], "1.5");
    assert_eq!(v["summary"]["unmanaged"], 8);
    assert_eq!(v["summary"]["ignored"], 2);
    let listed: Vec<&str> = (v["unmanaged"].as_array().unwrap().iter())
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, expected());
    assert_eq!(v["unmanaged"][0]["account_id"], FLEET_ACCOUNT);

    // A saved plan keeps them, and shows them again.
    env.run(&["plan", "--quiet", "--out", "plan.json"])
        .success();
    let shown = env.run(&["show-plan", "plan.json"]).success();
    assert!(
        shown.stdout.contains("Not in psk.yaml: 8 tunnels"),
        "{}",
        shown.stdout
    );
}

#[test]
fn the_offered_lines_make_them_managed() {
    let env = env();
    let json = env.run(&["plan", "--format", "json"]).success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let mut text = std::fs::read_to_string(env.config_path()).unwrap();
    for u in v["unmanaged"].as_array().unwrap() {
        text.push_str(&format!("  {}\n", u["add"].as_str().unwrap()));
    }
    env.write_config(&text);
    env.run(&["validate"]).success();
    let again = env.run(&["plan", "--format", "json"]).success();
    let v: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(v["summary"]["unmanaged"], 0);
    assert_eq!(v["summary"]["ignored"], 2);
    assert_eq!(v["summary"]["generate"], 38);
}

#[test]
fn status_refresh_and_metrics_count_them() {
    let env = env();
    let human = env.run(&["status", "--refresh"]).success();
    assert!(
        human.stdout.contains("Not in psk.yaml: 8 tunnels"),
        "{}",
        human.stdout
    );
    // Without --refresh psk cannot know, and says nothing of them.
    let offline = env.run(&["status"]).success();
    assert!(
        !offline.stdout.contains("Not in psk.yaml"),
        "{}",
        offline.stdout
    );

    let json = env
        .run(&["status", "--refresh", "--format", "json"])
        .success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["summary"]["unmanaged"], 8);
    assert_eq!(v["summary"]["ignored"], 2);
    assert_eq!(v["unmanaged"].as_array().unwrap().len(), 8);
    let json = env.run(&["status", "--format", "json"]).success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(v["unmanaged"].is_null() && v["summary"]["unmanaged"].is_null());

    let prom = env
        .run(&["status", "--refresh", "--format", "prometheus"])
        .success();
    assert!(
        prom.stdout.contains(&format!(
            "psk_unmanaged_tunnels{{account_id=\"{FLEET_ACCOUNT}\"}} 8\n"
        )),
        "{}",
        prom.stdout
    );
    let first = &expected()[0];
    assert!(prom.stdout.contains(&format!(
        "psk_unmanaged_tunnel{{name=\"{first}\",account_id=\"{FLEET_ACCOUNT}\",tunnel_id=\"{}\"}} 1\n",
        id_for_name(FLEET_ACCOUNT, first)
    )));
    let om = env
        .run(&["status", "--refresh", "--format", "openmetrics"])
        .success();
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&om.stdout).unwrap();
    assert_eq!(
        parsed.families["psk_unmanaged_tunnel"]
            .iter_samples()
            .count(),
        8
    );
    // Offline, no gauge claims 0.
    let prom = env.run(&["status", "--format", "prometheus"]).success();
    assert!(!prom.stdout.contains("psk_unmanaged"), "{}", prom.stdout);
}

#[test]
fn the_in_process_sandbox_holds_the_fleet_too() {
    let env = TestEnv::new(0);
    env.write_config(&config(&env.recipient, 30));
    let run = env
        .run(&["plan", "--sandbox", "--format", "json"])
        .success();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["summary"]["unmanaged"], 8);
}

#[test]
fn an_ignored_tunnel_psk_yaml_also_manages_is_refused() {
    let env = TestEnv::new(0);
    let names = fleet_names();
    let text = config(&env.recipient, 30).replace(
        &format!("  - {}\n", names[39]),
        &format!("  - {}\n", id_for_name(FLEET_ACCOUNT, &names[0])),
    );
    env.write_config(&text);
    let run = env.run(&["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("psk.yaml:10:5: ignore[0]: tunnel `fra-ipsec-1` of psk.yaml has this id"),
        "{}",
        run.stderr
    );
}
