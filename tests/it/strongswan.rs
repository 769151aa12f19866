//! psk against a real IPsec stack: every tunnel's two ends are strongSwan
//! charons in network namespaces (the sandbox's `--far-end strongswan`),
//! keys reach the routers by the shipped recipe (examples/strongswan), and
//! verification reads the real IKE SAs. Needs root and strongSwan; fails
//! saying so without them.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::strongswan::*;
use crate::common::*;
use serde_json::Value;

/// A site of two paths, each a real pair of charons; the policy delivers
/// by the recipe (`deliver`, replaced by `deliver_override` for the paths
/// it names) and verifies with Cloudflare's health checks and the probe.
fn site_env(policy_extra: &str) -> TestEnv {
    require_strongswan();
    let mut env = TestEnv::new(0);
    let far = env.path("far-ends");
    let text = config_text(&env.recipient, 2, "90d").replace(
        "    site_parallel: true\n",
        &format!(
            "    deliver: [sh, -c, {deliver:?}]\n    deliver_timeout: 30s\n    verify:\n      command: [sh, -c, {verify:?}]\n{policy_extra}",
            deliver = for_router(&far, "deliver"),
            verify = for_router(&far, "verify"),
        ),
    );
    env.write_config(&text);
    let options = strongswan_options(&env);
    env.start_sandbox_with(options);
    env
}

fn far(env: &TestEnv) -> std::path::PathBuf {
    env.path("far-ends")
}

/// Waits up to 10 s for `cond`.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The key a router holds, as the recipe wrote it (hex in swanctl's
/// `secrets` section), decoded.
fn router_key(far: &Path, tunnel_id: &str, name: &str) -> String {
    let path = far
        .join(tunnel_id)
        .join(format!("router/swanctl/conf.d/psk-{name}.conf"));
    let text = std::fs::read_to_string(path).unwrap();
    let hex = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("secret = 0x"))
        .unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn a_charon_takes_only_the_key_the_edge_holds_and_the_recipe_delivers_it() {
    let env = site_env("      settle: 1s\n      timeout: 20s\n");
    let far = far(&env);
    let id = tunnel_id(0);
    // Up from the start: both ends hold the sandbox's first key.
    eventually("the first IKE SA", || edge_up(&far, &id));
    let namespaces = env.sandbox().fleet().unwrap().namespaces();
    assert_eq!(namespaces.len(), 4, "{namespaces:?}");

    // A new key on the edge (a colleague in the dashboard): the edge ends
    // the SA at once, and the router's old key is refused.
    env.rotate_outside_psk(&id);
    assert!(!edge_up(&far, &id), "the SA of the old key outlived it");
    let (ok, out) = swanctl(&far, &id, "router", &["--initiate", "--ike", "tunnel-00"]);
    assert!(!ok, "the old key was accepted:\n{out}");
    assert!(out.contains("AUTHENTICATION_FAILED"), "{out}");

    // The recipe delivers the edge's key: the IKE SA is up with it when
    // the recipe returns, and the probe says so; the key file is 0600.
    let key = env.ledger()[&id].last().unwrap().clone();
    let mut deliver = std::process::Command::new("sh")
        .args(["-c", &for_router(&far, "deliver")])
        .env("PSK_TUNNEL_ID", &id)
        .env("PSK_TUNNEL_NAME", "tunnel-00")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    writeln!(deliver.stdin.take().unwrap(), "{key}").unwrap();
    let out = deliver.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains(&key), "the recipe printed the key");
    assert!(edge_up(&far, &id));
    assert_eq!(router_key(&far, &id, "tunnel-00"), key);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(
        far.join(&id)
            .join("router/swanctl/conf.d/psk-tunnel-00.conf"),
    )
    .unwrap()
    .permissions()
    .mode();
    assert_eq!(mode & 0o777, 0o600);
    let probe = std::process::Command::new("sh")
        .args(["-c", &for_router(&far, "verify")])
        .env("PSK_TUNNEL_ID", &id)
        .env("PSK_TUNNEL_NAME", "tunnel-00")
        .status()
        .unwrap();
    assert!(probe.success());

    // Everything is gone with the sandbox.
    drop(env);
    for ns in namespaces {
        assert!(
            namespaces_named(&ns).is_empty(),
            "{ns} outlived the sandbox"
        );
    }
}

fn namespaces_named(name: &str) -> Vec<String> {
    namespaces(name).into_iter().filter(|n| n == name).collect()
}

#[test]
fn apply_rotates_both_paths_through_real_ike_one_after_the_other() {
    let env = site_env("      settle: 1s\n      timeout: 30s\n");
    let far = far(&env);
    for i in 0..2 {
        eventually("the first IKE SAs", || edge_up(&far, &tunnel_id(i)));
    }
    let run = env.run(&["apply", "--auto-approve"]).success();
    env.assert_no_secrets(&run.all());
    let ledger = env.ledger();
    let (sealed, uncertain) = env.sealed();
    assert!(uncertain.is_empty(), "{uncertain:?}");
    for i in 0..2 {
        let id = tunnel_id(i);
        let name = format!("tunnel-{i:02}");
        let key = ledger[&id].last().unwrap();
        assert_eq!(ledger[&id].len(), 1, "one rotation each");
        // The edge, the router and the state hold the same new key, and
        // the IKE SA is up with it.
        assert_eq!(&sealed[&id], key);
        assert_eq!(&router_key(&far, &id, &name), key);
        assert!(edge_up(&far, &id), "{name} is down after apply");
        assert!(
            run.stdout
                .contains(&format!("{name}: back up with its new PSK (verified)")),
            "{}",
            run.stdout
        );
    }
    // One path at a time: the second changed only once the first was up
    // again with its new key.
    let first_up = run.stdout.find("tunnel-00: back up").unwrap();
    let second = run.stdout.find("tunnel-01: new PSK delivered").unwrap();
    assert!(first_up < second, "{}", run.stdout);

    // Each rotation's outage, measured by psk: in apply's output, in the
    // state with the rotation, in status and in the metrics.
    let state = env.state_json();
    let mut measured = Vec::new();
    for i in 0..2 {
        let id = tunnel_id(i);
        let record = &state["tunnels"][format!("{ACCOUNT}/{id}")];
        let ms = record["outage_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("{record}"));
        // Delivery (load the key, re-initiate) and the checks take time;
        // a real outage is never zero, and well inside verify's timeout.
        assert!(ms > 0 && ms < 30_000, "{ms}");
        let shown = format!(
            "tunnel-{i:02}: back up with its new PSK (verified), down {:.2} s",
            ms as f64 / 1000.0
        );
        assert!(run.stdout.contains(&shown), "{shown}\n{}", run.stdout);
        measured.push(ms);
    }
    println!("strongSwan: outage per rotation (ms), measured by psk: {measured:?}");
    let status = env.run(&["status"]).success();
    assert!(status.stdout.contains("LAST OUTAGE"), "{}", status.stdout);
    assert!(
        status
            .stdout
            .contains("Rotation outages (the last verified rotation of 2 tunnels): p50 "),
        "{}",
        status.stdout
    );
    let json = env.run(&["status", "--format", "json"]).success();
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["summary"]["outages"]["tunnels"], 2);
    let p95 = json["summary"]["outages"]["p95_seconds"].as_f64().unwrap();
    assert_eq!(p95, *measured.iter().max().unwrap() as f64 / 1000.0);
    let metrics = env.run(&["status", "--format", "openmetrics"]).success();
    assert!(
        metrics
            .stdout
            .contains("psk_rotation_outage_seconds_count 2"),
        "{}",
        metrics.stdout
    );
    assert!(
        metrics
            .stdout
            .contains("psk_tunnel_last_rotation_outage_seconds{name=\"tunnel-00\""),
        "{}",
        metrics.stdout
    );
}

/// A router whose delivery says it worked but did nothing: its IKE SA
/// fails authentication, verification fails, the site stops, the sibling
/// keeps its key and its SA.
#[test]
fn a_silently_failed_delivery_stops_the_site_and_the_sibling_keeps_its_sa() {
    require_strongswan();
    let mut env = TestEnv::new(0);
    let far = env.path("far-ends");
    // tunnel-00's "delivery" only re-initiates with the key it had.
    let silent = format!(
        "if [ \"$PSK_TUNNEL_NAME\" = tunnel-00 ]; then r=\"{}/$PSK_TUNNEL_ID/router\"; STRONGSWAN_CONF=\"$r/strongswan.conf\" SWANCTL_DIR=\"$r/swanctl\" swanctl --initiate --ike tunnel-00 >/dev/null 2>&1; exit 0; fi; {}",
        far.display(),
        for_router(&far, "deliver")
    );
    let text = config_text(&env.recipient, 2, "90d").replace(
        "    site_parallel: true\n",
        &format!(
            "    deliver: [sh, -c, {silent:?}]\n    verify:\n      command: [sh, -c, {verify:?}]\n      settle: 1s\n      timeout: 4s\n",
            verify = for_router(&far, "verify"),
        ),
    );
    env.write_config(&text);
    let options = strongswan_options(&env);
    env.start_sandbox_with(options);
    for i in 0..2 {
        eventually("the first IKE SAs", || edge_up(&far, &tunnel_id(i)));
    }
    let run = env.run(&["apply", "--auto-approve"]).failure();
    env.assert_no_secrets(&run.all());
    assert!(
        run.stdout.lines().any(
            |l| l.starts_with("tunnel-00: new PSK recorded") && l.contains("DID NOT COME BACK")
        ),
        "{}",
        run.stdout
    );
    let ledger = env.ledger();
    // tunnel-00: new key on the edge and sealed, router still on the old
    // one, authentication failing.
    let (sealed, _) = env.sealed();
    assert_eq!(sealed.get(&tunnel_id(0)), ledger[&tunnel_id(0)].last());
    assert!(!edge_up(&far, &tunnel_id(0)));
    let log = std::fs::read_to_string(far.join(tunnel_id(0)).join("edge/charon.log")).unwrap();
    assert!(
        log.contains("N(AUTH_FAILED)"),
        "the edge never refused the old key:\n{log}"
    );
    // tunnel-01: never touched, its SA still up with its first key.
    assert!(!ledger.contains_key(&tunnel_id(1)), "{ledger:?}");
    assert!(edge_up(&far, &tunnel_id(1)));
    let plan = env.run(&["plan", "--format", "json"]).success();
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    let held: Vec<_> = plan["deferred"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(held, ["tunnel-01"], "{plan}");
}

/// SIGKILL while psk waits for a real IKE SA: the new key was sealed before
/// the wait, the sibling was not touched and keeps its SA.
#[test]
fn sigkill_while_waiting_for_the_ike_sa_loses_nothing() {
    require_strongswan();
    let mut env = TestEnv::new(0);
    let far = env.path("far-ends");
    // tunnel-00's router never gets the key, so psk waits.
    let text = config_text(&env.recipient, 2, "90d").replace(
        "    site_parallel: true\n",
        &format!(
            "    deliver: [sh, -c, {d:?}]\n    verify:\n      command: [sh, -c, {verify:?}]\n      settle: 1s\n      timeout: 2m\n",
            d = format!("[ \"$PSK_TUNNEL_NAME\" = tunnel-00 ] && exit 0; {}", for_router(&far, "deliver")),
            verify = for_router(&far, "verify"),
        ),
    );
    env.write_config(&text);
    let options = strongswan_options(&env);
    env.start_sandbox_with(options);
    for i in 0..2 {
        eventually("the first IKE SAs", || edge_up(&far, &tunnel_id(i)));
    }
    let mut child = env
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("tunnel-00's new key on the edge", || {
        env.ledger().contains_key(&tunnel_id(0))
    });
    eventually("the edge to end the old SA", || {
        !edge_up(&far, &tunnel_id(0))
    });
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let ledger = env.ledger();
    let (sealed, uncertain) = env.sealed();
    assert_eq!(sealed.get(&tunnel_id(0)), ledger[&tunnel_id(0)].last());
    assert!(uncertain.is_empty(), "{uncertain:?}");
    assert!(!ledger.contains_key(&tunnel_id(1)), "{ledger:?}");
    assert!(edge_up(&far, &tunnel_id(1)), "the sibling lost its SA");
}

/// Without root the strongSwan far end refuses, naming what is missing
/// and what to do; the model stays the default.
#[test]
fn without_root_the_strongswan_far_end_says_what_it_needs() {
    let env = TestEnv::new(2);
    // The test's directory, readable by the unprivileged user.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(env.config_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_psk"))
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--far-end",
            "strongswan",
        ])
        .current_dir(env.dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("this test drops root with `setpriv` (util-linux, in every Debian)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "the strongSwan far end needs root (it makes network namespaces): run it as root"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint:") || stderr.contains("apt-get") || stderr.contains("run it as root"),
        "{stderr}"
    );
}
