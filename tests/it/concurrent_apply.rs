//! Two `psk apply` started together on one state: one runs, the other is
//! refused at once naming the holder (user@host, pid), and no key is lost:
//! every sealed PSK is the newest one Cloudflare (the sandbox) holds.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use psk::sandbox::SandboxOptions;

const TUNNELS: usize = 8;

/// Tunnel id -> PSK, from the state, opened with the test's identity.
fn sealed_psks(env: &TestEnv) -> std::collections::BTreeMap<String, String> {
    let id = env.identity.to_str().unwrap();
    let r = env
        .run(&["export", "--identity", id, "--format", "json"])
        .success();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tunnel_id"].as_str().unwrap().to_string(),
                t["psk"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn two_applies_at_once_one_runs_the_other_names_the_holder() {
    let mut env = TestEnv::new(TUNNELS);
    // No sites: every tunnel may rotate in one apply.
    let text = config_text(&env.recipient, TUNNELS, "90d");
    let text: String = text
        .lines()
        .filter(|l| !l.contains("site:"))
        .map(|l| format!("{l}\n"))
        .collect();
    env.write_config(&text);
    // Slow answers keep the first apply inside its lock while the second
    // starts; the outcome does not depend on the timing beyond that.
    env.start_sandbox_with(SandboxOptions {
        latency: Duration::from_millis(150),
        ..SandboxOptions::default()
    });
    let replace_all: Vec<String> = (0..TUNNELS)
        .flat_map(|i| ["--replace".to_string(), format!("tunnel-{i:02}")])
        .collect();
    for round in 0..3 {
        let mut args = vec!["apply", "--auto-approve"];
        if round > 0 {
            args.extend(replace_all.iter().map(String::as_str));
        }
        let spawn = || {
            env.command(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let pids = [a.id(), b.id()];
        let runs = [
            to_run(a.wait_with_output().unwrap()),
            to_run(b.wait_with_output().unwrap()),
        ];
        let winners: Vec<usize> = (0..2).filter(|i| runs[*i].code == 0).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one runs: {runs:?}"
        );
        let (w, l) = (winners[0], 1 - winners[0]);
        let loser = &runs[l];
        assert_eq!(loser.code, 1, "{loser:?}");
        assert!(loser.stderr.contains("is locked by"), "{loser:?}");
        assert!(
            loser.stderr.contains(&format!("(pid {})", pids[w])),
            "the refusal names the winner's pid {}: {loser:?}",
            pids[w]
        );
        let user_host = loser
            .stderr
            .split("is locked by ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_default();
        assert!(user_host.contains('@'), "user@host in: {loser:?}");
        assert!(
            loser.stdout.is_empty(),
            "the refused apply did nothing: {loser:?}"
        );
        assert!(runs[w].stdout.contains("Apply complete"), "{:?}", runs[w]);
        env.assert_no_secrets(&runs[0].all());
        env.assert_no_secrets(&runs[1].all());

        // No key lost: each sealed PSK is the newest the edge holds.
        let ledger = env.ledger();
        let sealed = sealed_psks(&env);
        assert_eq!(sealed.len(), TUNNELS);
        for (tunnel, psk) in &sealed {
            let history = &ledger[tunnel];
            assert_eq!(history.len(), round + 1, "round {round}: one rotation each");
            assert_eq!(
                psk,
                history.last().unwrap(),
                "tunnel {tunnel}: stale PSK sealed"
            );
        }
    }
}
