//! `verify`: the preflight that holds a path while another path of its
//! site is down, read from the sandbox's health model over GraphQL.

use std::sync::atomic::Ordering::Relaxed;

use crate::common::*;
use psk::sandbox::{HealthOptions, SandboxOptions};
use serde_json::Value;

/// `tunnels` tunnels in site pairs, verified by health checks.
fn verified_env(tunnels: usize, health: HealthOptions) -> TestEnv {
    let mut env = TestEnv::new(0);
    let text = config_text(&env.recipient, tunnels, "90d").replace(
        "    site_parallel: true\n",
        "    verify: {settle: 1s, timeout: 20s}\n",
    );
    env.write_config(&text);
    env.start_sandbox_with(SandboxOptions {
        health,
        ..SandboxOptions::default()
    });
    env
}

fn deferred(plan: &Value) -> Vec<(String, Value)> {
    plan["deferred"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["deferred"].clone(),
            )
        })
        .collect()
}

#[test]
fn preflight_defers_a_path_whose_sibling_is_down_in_every_format() {
    let env = verified_env(
        4,
        HealthOptions {
            down: [tunnel_id(1)].into(),
            far_end_follows: Some(std::time::Duration::ZERO),
            ..HealthOptions::default()
        },
    );
    let run = env.run(&["plan", "--format", "json"]).success();
    let plan: Value = serde_json::from_str(&run.stdout).unwrap();
    let held = deferred(&plan);
    let sibling_down: Vec<_> = held
        .iter()
        .filter(|(_, d)| d["code"] == "sibling_down")
        .collect();
    assert_eq!(sibling_down.len(), 1, "{held:?}");
    let (name, why) = sibling_down[0];
    assert_eq!(name, "tunnel-00");
    assert_eq!(why["sibling"], "tunnel-01");
    assert_eq!(why["site"], "site-0");
    assert_eq!(why["health"], "down in AMS, FRA");
    // The down path itself may change: its sibling is healthy.
    let actions: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"tunnel-01"), "{actions:?}");
    // One GraphQL query per account per plan.
    assert_eq!(env.sandbox().counters.graphql.load(Relaxed), 1);

    let message = "held by verify's preflight: tunnel-01 is down in AMS, FRA; rotating this path now would cut site \"site-0\" off";
    let human = env.run(&["plan"]).success();
    assert!(human.stdout.contains(message), "{human:?}");
    let markdown = env.run(&["plan", "--format", "markdown"]).success();
    let short = "held by verify's preflight: tunnel-01 is down in AMS, FRA; rotating this path now";
    assert!(markdown.stdout.contains(short), "{markdown:?}");
    let saved = env.path("plan.json");
    env.run(&["plan", "--out", saved.to_str().unwrap()])
        .success();
    let shown = env.run(&["show-plan", saved.to_str().unwrap()]).success();
    assert!(shown.stdout.contains(message), "{shown:?}");

    // apply holds it too: tunnel-00 keeps its key.
    env.run(&["apply", "--auto-approve"]).success();
    let ledger = env.ledger();
    assert!(!ledger.contains_key(&tunnel_id(0)), "{ledger:?}");
    assert!(ledger.contains_key(&tunnel_id(1)), "{ledger:?}");
}

#[test]
fn unknown_health_holds_every_verified_path() {
    let env = verified_env(
        2,
        HealthOptions {
            graphql_error_rate: 1.0,
            ..HealthOptions::default()
        },
    );
    let run = env.run(&["plan", "--format", "json"]).success();
    let plan: Value = serde_json::from_str(&run.stdout).unwrap();
    let held = deferred(&plan);
    assert_eq!(held.len(), 2, "{held:?}");
    for (_, why) in &held {
        assert_eq!(why["code"], "sibling_down", "{why}");
        let health = why["health"].as_str().unwrap();
        assert!(
            health.starts_with("of unknown health (Cloudflare's GraphQL API refused"),
            "{health}"
        );
    }
    assert_eq!(plan["actions"].as_array().unwrap().len(), 0);
    env.run(&["apply", "--auto-approve"]).success();
    assert!(env.ledger().is_empty());
}

/// The PSK each ledger line made valid, with its time, per tunnel id.
fn ledger_times(env: &TestEnv) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    let text = std::fs::read_to_string(env.ledger_path()).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let at = chrono::DateTime::parse_from_rfc3339(v["at"].as_str().unwrap()).unwrap();
            (v["tunnel_id"].as_str().unwrap().to_string(), at.to_utc())
        })
        .collect()
}

#[test]
fn a_site_pair_is_rotated_and_verified_in_one_apply() {
    let env = verified_env(
        4,
        HealthOptions {
            far_end_follows: Some(std::time::Duration::ZERO),
            ..HealthOptions::default()
        },
    );
    let run = env.run(&["apply", "--auto-approve"]).success();
    assert!(run.stdout.contains("4 generated"), "{run:?}");
    assert_eq!(
        run.stdout
            .matches("back up with its new PSK (verified)")
            .count(),
        4,
        "{run:?}"
    );
    env.assert_no_secrets(&run.all());
    let times = ledger_times(&env);
    assert_eq!(times.len(), 4, "{times:?}");
    let at = |i: usize| times.iter().find(|(id, _)| *id == tunnel_id(i)).unwrap().1;
    // Within a site, the second path changes only once the first has been
    // healthy for `settle` (1s); the two sites go side by side.
    for (first, second) in [(0, 1), (2, 3)] {
        let (a, b) = (at(first).min(at(second)), at(first).max(at(second)));
        assert!(b - a >= chrono::TimeDelta::seconds(1), "{times:?}");
    }
    assert!(
        (at(0).min(at(1)) - at(2).min(at(3)))
            .num_milliseconds()
            .abs()
            < 1000,
        "{times:?}"
    );
    // Nothing is left: the next plan is empty.
    env.run(&["plan", "--detailed-exitcode"]).success();
}

#[test]
fn a_tunnel_that_never_comes_back_halts_its_site_only() {
    let mut env = TestEnv::new(0);
    let text = config_text(&env.recipient, 4, "90d").replace(
        "    site_parallel: true\n",
        "    verify: {settle: 1s, timeout: 3s}\n",
    );
    env.write_config(&text);
    env.start_sandbox_with(SandboxOptions {
        health: HealthOptions {
            far_end_follows: Some(std::time::Duration::ZERO),
            never_up: [tunnel_id(0)].into(),
            ..HealthOptions::default()
        },
        ..SandboxOptions::default()
    });
    let run = env.run(&["apply", "--auto-approve"]).code(1);
    env.assert_no_secrets(&run.all());
    assert!(
        run.stdout.contains("tunnel-00: new PSK recorded"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("DID NOT COME BACK: did not come back within 3s"),
        "{run:?}"
    );
    assert!(run.stdout.contains("down in AMS, FRA"), "{run:?}");
    assert!(
        run.stdout
            .contains("tunnel-01: not started: tunnel-00, on the same site, did not come back"),
        "{run:?}"
    );
    // The other site went on.
    let ledger = env.ledger();
    assert!(
        ledger.contains_key(&tunnel_id(2)) && ledger.contains_key(&tunnel_id(3)),
        "{ledger:?}"
    );
    assert!(
        !ledger.contains_key(&tunnel_id(1)),
        "the sibling keeps its key: {ledger:?}"
    );
    // The new key of the tunnel that did not come back is sealed.
    let (sealed, uncertain) = env.sealed();
    assert_eq!(
        sealed[&tunnel_id(0)],
        *ledger[&tunnel_id(0)].last().unwrap()
    );
    assert!(uncertain.is_empty());
    // The next plan holds the sibling while tunnel-00 is down.
    let plan = env.run(&["plan", "--format", "json"]).success();
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    let held = deferred(&plan);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].0, "tunnel-01");
    assert_eq!(held[0].1["sibling"], "tunnel-00");
    // Over the last minute: healthy before its rotation, down since.
    let health = held[0].1["health"].as_str().unwrap();
    assert!(
        ["degraded in AMS, FRA", "down in AMS, FRA"].contains(&health),
        "{health}"
    );
}

#[test]
fn a_probe_of_the_users_decides_with_the_tunnel_in_its_environment() {
    let mut env = TestEnv::new(0);
    let log = env.path("probe.log");
    let probe = env.path("probe.sh");
    std::fs::write(
        &probe,
        format!(
            "#!/bin/sh\necho \"$PSK_TUNNEL_NAME $PSK_SITE $PSK_TUNNEL_ID $PSK_ACCOUNT_ID ${{CLOUDFLARE_API_TOKEN:-no-token}}\" >> {}\n[ \"$PSK_TUNNEL_NAME\" != tunnel-00 ]\n",
            log.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let text = config_text(&env.recipient, 4, "90d").replace(
        "    site_parallel: true\n",
        &format!(
            "    verify: {{health_checks: false, command: [\"{}\"], command_timeout: 5s, settle: 1s, timeout: 2s}}\n",
            probe.display()
        ),
    );
    env.write_config(&text);
    env.start_sandbox();
    let run = env.run(&["apply", "--auto-approve"]).code(1);
    assert!(
        run.stdout
            .contains("DID NOT COME BACK: did not come back within 2s")
            && run.stdout.contains("exited with status 1"),
        "{run:?}"
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    let first = lines.lines().next().unwrap();
    assert!(first.ends_with(&format!("{ACCOUNT} no-token")), "{lines}");
    assert!(
        lines.contains(&format!("tunnel-00 site-0 {} ", tunnel_id(0))),
        "{lines}"
    );
    assert!(!lines.contains("tunnel-01"), "its site stopped: {lines}");
    // Site 1 went on, one path after the other.
    assert!(
        lines.contains("tunnel-02 site-1") && lines.contains("tunnel-03 site-1"),
        "{lines}"
    );
    let ledger = env.ledger();
    assert!(!ledger.contains_key(&tunnel_id(1)), "{ledger:?}");
}

/// SIGKILL while a tunnel is being verified: its new key was made durable
/// before the wait began, and the next plan knows where it stood.
#[test]
fn sigkill_during_verification_loses_nothing() {
    let mut env = TestEnv::new(0);
    let text = config_text(&env.recipient, 2, "90d").replace(
        "    site_parallel: true\n",
        "    verify: {settle: 1s, timeout: 2m}\n",
    );
    env.write_config(&text);
    env.start_sandbox_with(SandboxOptions {
        health: HealthOptions {
            never_up: [tunnel_id(0)].into(),
            ..HealthOptions::default()
        },
        ..SandboxOptions::default()
    });
    let mut child = env
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The plan's preflight is one query; more are the verification's polls.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while env.sandbox().counters.graphql.load(Relaxed) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "verification never polled"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let ledger = env.ledger();
    let (sealed, uncertain) = env.sealed();
    assert_eq!(sealed.get(&tunnel_id(0)), ledger[&tunnel_id(0)].last());
    assert!(uncertain.is_empty(), "{uncertain:?}");
    assert!(!ledger.contains_key(&tunnel_id(1)), "{ledger:?}");
    // The lock died with the process; the next plan holds the sibling.
    let run = env.run(&["plan", "--format", "json"]).success();
    let plan: Value = serde_json::from_str(&run.stdout).unwrap();
    let held = deferred(&plan);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        (held[0].0.as_str(), &held[0].1["code"]),
        ("tunnel-01", &Value::from("sibling_down"))
    );
}

/// Ctrl-C ends a verification at once (not after `timeout`): the key is
/// kept, the site stops, the exit code says so.
#[test]
fn ctrl_c_ends_a_verification_without_waiting_for_its_timeout() {
    let mut env = TestEnv::new(0);
    let text = config_text(&env.recipient, 2, "90d").replace(
        "    site_parallel: true\n",
        "    verify: {settle: 1s, timeout: 10m}\n",
    );
    env.write_config(&text);
    env.start_sandbox_with(SandboxOptions {
        health: HealthOptions {
            never_up: [tunnel_id(0)].into(),
            ..HealthOptions::default()
        },
        ..SandboxOptions::default()
    });
    let child = env
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while env.sandbox().counters.graphql.load(Relaxed) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "verification never polled"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let started = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let run = to_run(child.wait_with_output().unwrap()).code(1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(
        run.stdout
            .contains("the apply was stopped before tunnel-00 was shown back up"),
        "{run:?}"
    );
    let ledger = env.ledger();
    let (sealed, uncertain) = env.sealed();
    assert_eq!(sealed.get(&tunnel_id(0)), ledger[&tunnel_id(0)].last());
    assert!(
        uncertain.is_empty() && !ledger.contains_key(&tunnel_id(1)),
        "{ledger:?}"
    );
}
