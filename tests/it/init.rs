//! `psk init`: a psk.yaml drafted from what Cloudflare lists, then the
//! whole flow on it. Against the sandbox's own 40-tunnel fleet (twenty
//! sites of two tunnels behind one customer endpoint each): init, validate,
//! plan, apply (one path of each site), apply again (the other), and a plan
//! with nothing left to do; never overwriting a file; and names Cloudflare
//! allows that psk.yaml does not, across two accounts.

use psk::sandbox::{id_for_name, FLEET_ACCOUNT};

use crate::common::*;

/// A test environment with no psk.yaml yet.
fn bare() -> TestEnv {
    let env = TestEnv::new(0);
    std::fs::remove_file(env.config_path()).unwrap();
    env
}

fn plan_json(env: &TestEnv) -> serde_json::Value {
    let run = env
        .run(&["plan", "--sandbox", "--format", "json"])
        .success();
    serde_json::from_str(&run.stdout).unwrap()
}

#[test]
fn init_then_validate_plan_and_apply_a_forty_tunnel_fleet() {
    let env = bare();
    let init = env
        .run(&["init", "--sandbox", "--recipient", &env.recipient])
        .success();
    assert_eq!(
        init.stdout,
        "Wrote psk.yaml: 40 tunnels in 1 account, 20 proposed sites.\nReview the proposed sites, then run `psk validate` and `psk plan`.\n"
    );
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    assert!(
        text.contains(&format!("account_id: {FLEET_ACCOUNT}\n")),
        "{text}"
    );
    assert!(text.contains(&format!("  - {}   # from --recipient\n", env.recipient)));
    assert!(text.contains(
        "  # Proposed site \"fra-ipsec\": fra-ipsec-1, fra-ipsec-2 share customer endpoint 203.0.113.10, so they are\n"
    ), "{text}");
    assert!(text.contains(&format!(
        "  - name: fra-ipsec-1\n    id: {}\n    site: fra-ipsec\n",
        id_for_name(FLEET_ACCOUNT, "fra-ipsec-1")
    )));

    env.run(&["validate"]).success();
    let plan = plan_json(&env);
    assert_eq!(plan["summary"]["generate"], 20, "{plan:#}");
    assert_eq!(plan["summary"]["deferred"], 20);
    assert_eq!(plan["summary"]["unmanaged"], 0);
    assert_eq!(plan["actions"][0]["reasons"][0]["code"], "unknown_live_key");

    env.run(&["apply", "--sandbox", "--auto-approve"]).success();
    let after_one = plan_json(&env);
    assert_eq!(after_one["summary"]["generate"], 20, "{after_one:#}");
    assert_eq!(after_one["summary"]["deferred"], 0);
    env.run(&["apply", "--sandbox", "--auto-approve"]).success();
    let done = env.run(&["plan", "--sandbox", "--detailed-exitcode"]);
    assert_eq!(done.code, 0, "{done:?}");
    assert!(
        done.stdout
            .contains("No changes. Every PSK matches psk.yaml."),
        "{}",
        done.stdout
    );
    let (sealed, uncertain) = env.sealed();
    assert_eq!(sealed.len(), 40);
    assert!(uncertain.is_empty());
}

#[test]
fn init_never_overwrites_and_prints_on_request() {
    let env = TestEnv::new(2);
    let before = std::fs::read(env.config_path()).unwrap();
    let run = env.run(&["init", "--sandbox", "--recipient", &env.recipient]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("error: psk.yaml exists, and psk init never overwrites a file.\nhint: `psk init --sandbox --stdout` prints the draft"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(env.config_path()).unwrap(), before);

    let printed = env
        .run(&[
            "init",
            "--sandbox",
            "--stdout",
            "--identity",
            env.identity.to_str().unwrap(),
        ])
        .success();
    assert_eq!(std::fs::read(env.config_path()).unwrap(), before);
    assert!(printed
        .stdout
        .starts_with("# psk.yaml drafted by `psk init` on "));
    assert!(printed
        .stdout
        .contains(&format!("  - {}   # public half of ", env.recipient)));
    assert!(!printed.all().contains("AGE-SECRET-KEY"), "{printed:?}");
    assert_eq!(
        printed.stderr,
        "Drafted psk.yaml: 40 tunnels in 1 account, 20 proposed sites.\n"
    );
    // Same fleet, same draft.
    let again = env
        .run(&[
            "init",
            "--sandbox",
            "--stdout",
            "--identity",
            env.identity.to_str().unwrap(),
        ])
        .success();
    assert_eq!(again.stdout, printed.stdout);

    // Written elsewhere with -c, then refused there too.
    env.run(&[
        "init",
        "--sandbox",
        "-c",
        "fleet.yaml",
        "--recipient",
        &env.recipient,
    ])
    .success();
    env.run(&["validate", "-c", "fleet.yaml"]).success();
    let twice = env.run(&[
        "init",
        "--sandbox",
        "-c",
        "fleet.yaml",
        "--recipient",
        &env.recipient,
    ]);
    assert_eq!(twice.code, 1);
}

#[test]
fn init_needs_a_recipient_and_an_account() {
    let env = bare();
    let run = env.run(&["init", "--sandbox"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("psk init needs someone to seal the PSKs to"),
        "{}",
        run.stderr
    );
    let run = env.run(&["init", "--recipient", &env.recipient]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("which account?"), "{}", run.stderr);
    let run = env.run(&["init", "--sandbox", "--recipient", "age1nope"]);
    assert_eq!(run.code, 1);
    let run = env.run(&[
        "init",
        "--sandbox",
        "--recipient",
        &env.recipient,
        "--account",
        "xyz",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("`xyz` is not a Cloudflare account id"),
        "{}",
        run.stderr
    );
    assert!(!env.config_path().exists());
}

/// Two accounts whose tunnels share names, one with a name psk.yaml cannot
/// take as it is: the draft gives each a valid, unique name, says so, and
/// validates; the real binary talks to a sandbox the test serves. (The
/// sandbox is seeded from a psk.yaml that names the fleet's account, so it
/// holds the fleet, and the other account's tunnels by their names.)
#[test]
fn names_psk_yaml_cannot_take_are_made_valid_across_accounts() {
    let other = "0000000000000000000000000000beef";
    let mut env = TestEnv::new(0);
    env.write_config(&format!(
        "version: 1\nrecipients: [{}]\npolicies: {{default: {{rotate_every: 90d}}}}\naccounts:\n  fleet:\n    id: {FLEET_ACCOUNT}\n    tunnels:\n      - name: listed-by-its-id\n        id: {}\n  other:\n    id: {other}\n    tunnels:\n      - name: fra-ipsec-1\n      - {{name: \"yes\"}}\n      - {{name: \"a: b # c\"}}\n",
        env.recipient,
        id_for_name(FLEET_ACCOUNT, "fra-ipsec-1"),
    ));
    env.start_sandbox();
    std::fs::remove_file(env.config_path()).unwrap();
    let run = env
        .run(&[
            "init",
            "--account",
            FLEET_ACCOUNT,
            "--account",
            other,
            "--recipient",
            &env.recipient,
        ])
        .success();
    env.assert_no_secrets(&run.all());
    assert!(
        run.stdout
            .starts_with("Wrote psk.yaml: 43 tunnels in 2 accounts, 20 proposed sites."),
        "{}",
        run.stdout
    );
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    env.run(&["validate"]).success();
    assert!(text.contains("accounts:\n  account-f1ee7000:\n"), "{text}");
    assert!(text.contains(&format!(
        "      - name: fra-ipsec-1-{}   # \"fra-ipsec-1\" at Cloudflare: another tunnel has the same name\n",
        &id_for_name(other, "fra-ipsec-1")[..8]
    )), "{text}");
    assert!(text.contains("      - name: \"yes\"\n"), "{text}");
    assert!(text.contains("      - name: \"a: b # c\"\n"), "{text}");
}
