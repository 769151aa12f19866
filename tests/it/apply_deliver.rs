//! Delivery: after a new PSK is recorded, the policy's `deliver` command
//! gets it on stdin; failures show as `redeliver` and `psk deliver` retries;
//! a site's next tunnel waits for the previous delivery.

use crate::common::*;

/// A delivery script that appends "<name> <site> <psk-from-stdin>" to
/// `log`, or fails when `fail_flag` exists. Its argv never holds the PSK.
fn script(env: &TestEnv) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let log = env.path("delivered.log");
    let fail = env.path("fail-delivery");
    let path = env.path("deliver.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nset -e\nif [ -e '{fail}' ]; then exit 3; fi\nread -r key\nif [ -n \"$CLOUDFLARE_API_TOKEN\" ]; then exit 9; fi\necho \"$PSK_TUNNEL_NAME $PSK_SITE $PSK_TUNNEL_ID $PSK_ACCOUNT_ID $key $(date +%s%N)\" >> '{log}'\n",
            fail = fail.display(),
            log = log.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (path.display().to_string(), log, fail)
}

fn config_with_delivery_by(env: &TestEnv, tunnels: usize, script: &str, generator: &str) {
    let text = config_text(&env.recipient, tunnels, "90d").replace(
        "    site_parallel: true\n",
        &format!("    deliver: [\"{script}\", \"--quiet\"]\n    deliver_timeout: 10s\n    generator: {generator}\n"),
    );
    env.write_config(&text);
}

fn delivered(log: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').map(String::from).collect())
        .collect()
}

#[test]
fn delivery_hands_each_new_psk_to_its_router_and_site_pairs_go_one_by_one() {
    delivery_and_site_pairs("cloudflare");
}

/// Keys made here go out in bulk, but still one tunnel per site at a time:
/// a bulk set holds at most one tunnel of each site.
#[test]
fn local_keys_are_delivered_and_site_pairs_go_one_by_one() {
    delivery_and_site_pairs("local");
}

fn delivery_and_site_pairs(generator: &str) {
    let mut env = TestEnv::new(0);
    let (script, log, _) = script(&env);
    config_with_delivery_by(&env, 4, &script, generator);
    env.start_sandbox();
    let plan = env.run(&["plan"]);
    assert!(
        plan.stdout.contains("Plan: 0 to rotate, 4 to generate"),
        "both tunnels of a site in one apply with delivery: {plan:?}"
    );

    let apply = env.run(&["apply", "--auto-approve"]).success();
    assert_eq!(
        apply
            .stdout
            .matches("new PSK delivered to its router")
            .count(),
        4,
        "{apply:?}"
    );
    let lines = delivered(&log);
    assert_eq!(lines.len(), 4);
    let ledger = env.ledger();
    for l in &lines {
        let (name, site, id, account, key) = (&l[0], &l[1], &l[2], &l[3], &l[4]);
        assert!(name.starts_with("tunnel-"));
        assert!(site.starts_with("site-"));
        assert_eq!(account, ACCOUNT);
        assert_eq!(
            ledger[id].last().unwrap(),
            key,
            "the router got the key on the edge"
        );
    }
    // A site's second tunnel changed on the edge only after the first one's
    // key reached its router: both paths were never down together.
    let edge_at: std::collections::BTreeMap<String, i64> =
        std::fs::read_to_string(env.ledger_path())
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let at = chrono::DateTime::parse_from_rfc3339(v["at"].as_str().unwrap()).unwrap();
                (
                    v["tunnel_id"].as_str().unwrap().to_string(),
                    at.timestamp_nanos_opt().unwrap(),
                )
            })
            .collect();
    for site in ["site-0", "site-1"] {
        let mut pair: Vec<&Vec<String>> = lines.iter().filter(|l| l[1] == site).collect();
        assert_eq!(pair.len(), 2);
        pair.sort_by_key(|l| edge_at[&l[2]]);
        let first_delivered: i64 = pair[0][5].parse().unwrap();
        assert!(
            edge_at[&pair[1][2]] > first_delivered,
            "{site}: the second tunnel changed before the first was delivered"
        );
    }
    let state = env.state_json();
    for rec in state["tunnels"].as_object().unwrap().values() {
        assert_eq!(rec["delivery"]["ok"], true);
    }
    // Output never shows the key, even though the script read it.
    env.assert_no_secrets(&apply.all());
}

#[test]
fn failed_delivery_blocks_the_site_shows_redeliver_and_psk_deliver_retries() {
    failed_delivery_blocks_the_site("cloudflare");
}

#[test]
fn failed_delivery_of_a_local_key_blocks_the_site() {
    failed_delivery_blocks_the_site("local");
}

fn failed_delivery_blocks_the_site(generator: &str) {
    let mut env = TestEnv::new(0);
    let (script, log, fail) = script(&env);
    config_with_delivery_by(&env, 2, &script, generator);
    env.start_sandbox();
    std::fs::write(&fail, "").unwrap();
    let apply = env
        .run(&["apply", "--auto-approve", "--parallelism", "4"])
        .failure();
    assert!(apply.stdout.contains("DELIVERY FAILED: `"), "{apply:?}");
    assert!(apply.stdout.contains("exited with status 3"), "{apply:?}");
    // The site's other tunnel was not started: its path stays up.
    assert!(
        apply
            .stdout
            .contains("was not delivered; fix that and run `psk deliver"),
        "{apply:?}"
    );
    assert_eq!(env.ledger().len(), 1, "only one tunnel of the site changed");

    let plan = env.run(&["plan", "--detailed-exitcode"]).code(2);
    assert!(
        plan.stdout
            .contains("will get its PSK delivered again by `psk deliver"),
        "{plan:?}"
    );
    assert!(plan.stdout.contains("1 to redeliver"), "{plan:?}");

    std::fs::remove_file(&fail).unwrap();
    let no_id = env.run(&["deliver"]).failure();
    assert!(no_id.stderr.contains("identity"), "{no_id:?}");
    let redeliver = env
        .run(&["deliver", "--identity", env.identity.to_str().unwrap()])
        .success();
    assert!(
        redeliver.stdout.contains(": delivered to its router"),
        "{redeliver:?}"
    );
    let lines = delivered(&log);
    assert_eq!(lines.len(), 1);
    let ledger = env.ledger();
    assert_eq!(ledger[&lines[0][2]].last().unwrap(), &lines[0][4]);

    // Now the other tunnel of the site goes, and the plan settles.
    env.run(&["apply", "--auto-approve"]).success();
    let plan = env.run(&["plan", "--detailed-exitcode"]).success();
    for run in [&plan, &redeliver] {
        env.assert_no_secrets(&run.all());
    }
}

#[test]
fn deliver_needs_a_command_and_a_sane_timeout() {
    let env = TestEnv::new(0);
    let text = config_text(&env.recipient, 1, "90d").replace(
        "    site_parallel: true\n",
        "    deliver: []\n    deliver_timeout: soon\n",
    );
    env.write_config(&text);
    let run = env.run(&["validate"]).failure();
    assert!(run.stderr.contains("deliver"), "{run:?}");
    assert!(run.stderr.contains("deliver_timeout"), "{run:?}");
}

/// The daily schedule of issue 25: a site of two paths, a `deliver` that
/// keeps failing (router unreachable), no `verify`, `psk apply` three times.
/// The first apply rotates one path and cannot deliver it; every later
/// apply holds the other path (reason `undelivered`, saying what lifts it)
/// instead of rotating it too, so the edge never holds new keys for both
/// routers at once. `psk deliver` succeeding lifts the hold.
#[test]
fn a_failed_delivery_holds_its_site_across_consecutive_applies() {
    let mut env = TestEnv::new(0);
    let (script, log, fail) = script(&env);
    config_with_delivery_by(&env, 2, &script, "cloudflare");
    env.start_sandbox();
    std::fs::write(&fail, "").unwrap();

    let first = env.run(&["apply", "--auto-approve"]).failure();
    assert!(
        first.stdout.contains("tunnel-00: rotated")
            || first.stdout.contains("tunnel-00: generated"),
        "{first:?}"
    );
    assert!(first.stdout.contains("DELIVERY FAILED"), "{first:?}");
    for n in 2..=3 {
        let apply = env.run(&["apply", "--auto-approve"]);
        assert_eq!(
            env.ledger().len(),
            1,
            "apply {n} changed a second path of the site: {apply:?}"
        );
        let out = apply.all();
        assert!(
            out.contains("the new PSK of tunnel-00 did not reach its router"),
            "apply {n}: {apply:?}"
        );
        assert!(out.contains("`psk deliver tunnel-00` succeeding lifts the hold"));
        // What is left is `psk deliver`'s work, not `psk reseal`'s.
        assert!(out.contains("1 left for `psk deliver`"), "{apply:?}");
        assert!(!out.contains("psk reseal"), "{apply:?}");
        env.assert_no_secrets(&out);
    }
    let json = env.run(&["plan", "--format", "json"]).success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let held = &v["deferred"][0];
    assert_eq!(held["name"], "tunnel-01", "{v}");
    assert_eq!(held["deferred"]["code"], "undelivered");
    assert_eq!(held["deferred"]["sibling"], "tunnel-00");
    assert!(held["deferred"]["delivery_failed_at"].is_string());

    std::fs::remove_file(&fail).unwrap();
    env.run(&["deliver", "--identity", env.identity.to_str().unwrap()])
        .success();
    assert_eq!(delivered(&log).len(), 1);
    env.run(&["apply", "--auto-approve"]).success();
    assert_eq!(env.ledger().len(), 2, "the hold lifted");
    env.run(&["plan", "--detailed-exitcode"]).success();
}

/// A rotation whose answer was never recorded (an intent left in the
/// state) may have put a key on the edge that no router holds: the site's
/// other path is held even when `--target` leaves the interrupted one out,
/// with or without `deliver` and `verify`, and rotating the interrupted
/// path again settles it and lifts the hold.
#[test]
fn an_interrupted_rotation_holds_its_site_even_under_target() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    let mut state = env.state_json();
    let rec = state["tunnels"]
        .as_object_mut()
        .unwrap()
        .values_mut()
        .find(|r| r["name"] == "tunnel-00")
        .unwrap();
    rec["intent"] = serde_json::json!({
        "operation": "psk_generate",
        "started": "2026-11-01T00:00:00Z",
    });
    let mut bytes = serde_json::to_vec_pretty(&state).unwrap();
    bytes.push(b'\n');
    std::fs::write(env.state_path(), bytes).unwrap();
    let before = env.ledger();

    let apply = env
        .run(&[
            "apply",
            "--auto-approve",
            "--target",
            "tunnel-01",
            "--replace",
            "tunnel-01",
        ])
        .success();
    assert_eq!(env.ledger(), before, "tunnel-01 changed: {apply:?}");
    assert!(
        apply.all().contains(
            "a rotation of tunnel-00 started 2026-11-01T00:00:00Z never recorded its answer"
        ),
        "{apply:?}"
    );
    let json = env
        .run(&[
            "plan",
            "--format",
            "json",
            "--target",
            "tunnel-01",
            "--replace",
            "tunnel-01",
        ])
        .success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["deferred"][0]["deferred"]["code"], "uncertain", "{v}");
    assert_eq!(
        v["deferred"][0]["deferred"]["uncertain_since"],
        "2026-11-01T00:00:00Z"
    );

    // The interrupted path rotates again first; the other waits its turn.
    env.run(&["apply", "--auto-approve"]).success();
    assert!(env.state_json().to_string().find("\"intent\"").is_none());
    env.run(&["apply", "--auto-approve", "--replace", "tunnel-01"])
        .success();
    assert_ne!(env.ledger()[&tunnel_id(1)], before[&tunnel_id(1)]);
}

/// `psk deliver` is an entry point of the executor, under the site rule:
/// a path whose router is fine is not handed its key again while another
/// path of its site may be down (exit 1, with the hold's words); the path
/// that may be down is; `--accept` records a delivery done another way
/// without running the command or needing an identity, which lifts the
/// hold; every outcome is in the state.
#[test]
fn psk_deliver_follows_the_site_rule_and_accept_lifts_a_hold() {
    let mut env = TestEnv::new(0);
    let (script, log, fail) = script(&env);
    config_with_delivery_by(&env, 2, &script, "cloudflare");
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    assert_eq!(delivered(&log).len(), 2);

    std::fs::write(&fail, "").unwrap();
    env.run(&["apply", "--auto-approve", "--replace", "tunnel-00"])
        .failure();
    std::fs::remove_file(&fail).unwrap();
    let id = env.identity.to_str().unwrap().to_string();
    let held = env
        .run(&["deliver", "tunnel-01", "--identity", &id])
        .failure();
    assert!(
        held.stdout.contains(
            "tunnel-01: not delivered, held: the new PSK of tunnel-00 did not reach its router"
        ),
        "{held:?}"
    );
    assert_eq!(
        delivered(&log).len(),
        2,
        "tunnel-01's router was not touched"
    );

    // --accept: no identity, no command; the hold lifts.
    let accepted = env.run(&["deliver", "--accept"]).success();
    assert!(
        accepted
            .stdout
            .contains("tunnel-00: recorded as delivered (--accept; the command was not run)"),
        "{accepted:?}"
    );
    assert_eq!(delivered(&log).len(), 2);
    let state = env.state_json();
    for rec in state["tunnels"].as_object().unwrap().values() {
        assert_eq!(rec["delivery"]["ok"], true, "{rec}");
    }
    env.run(&["deliver", "tunnel-01", "--identity", &id])
        .success();
    assert_eq!(delivered(&log).len(), 3);
    env.run(&["plan", "--detailed-exitcode"]).success();
    env.assert_no_secrets(&held.all());
}
