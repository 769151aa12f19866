//! `psk import --terraform`: PSKs the cloudflare provider set, adopted from
//! `terraform show -json` (tests/corpus/terraform/show.json, in the
//! provider's documented resource shapes: `cloudflare_magic_wan_ipsec_tunnel`
//! of provider v5 and `cloudflare_ipsec_tunnel` of v4, in a child module,
//! beside a resource without `psk`, a data source and a static route).
//! The keys are sealed and dated by Cloudflare, never printed.

use crate::common::*;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/corpus/terraform/show.json"
);
const PSKS: [&str; 2] = [
    "tf-fra-1-Wq8vZr2LmN4pT6yX0cB3",
    "tf-ams-1-Hk3sD9fJ2qP7wE5rT1yU",
];

fn env() -> TestEnv {
    let mut env = TestEnv::new(3);
    env.start_sandbox();
    std::fs::copy(FIXTURE, env.path("tf.json")).unwrap();
    env
}

#[track_caller]
fn no_terraform_psk(text: &str) {
    for p in PSKS {
        assert!(!text.contains(p), "a Terraform PSK leaked:\n{text}");
    }
}

#[test]
fn terraform_psks_are_sealed_dated_and_never_shown() {
    let env = env();
    let run = env.run(&["import", "--terraform", "tf.json"]).success();
    no_terraform_psk(&run.all());
    env.assert_no_secrets(&run.all());
    assert!(run.stdout.starts_with("Imported 2 PSKs from tf.json:\n  tunnel-00 from cloudflare_magic_wan_ipsec_tunnel.fra_1 (Cloudflare dates it "), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("  tunnel-01 from module.legacy.cloudflare_ipsec_tunnel.ams[\"1\"]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Not in psk.yaml, left alone: cloudflare_magic_wan_ipsec_tunnel.lab."),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("lifecycle { ignore_changes = [psk] }"),
        "{}",
        run.stdout
    );
    let state_text = std::fs::read_to_string(env.state_path()).unwrap();
    no_terraform_psk(&state_text);
    let (sealed, uncertain) = env.sealed();
    assert_eq!(sealed.get(&tunnel_id(0)).map(String::as_str), Some(PSKS[0]));
    assert_eq!(sealed.get(&tunnel_id(1)).map(String::as_str), Some(PSKS[1]));
    assert!(!sealed.contains_key(&tunnel_id(2)));
    assert!(uncertain.is_empty());

    // Dated as Cloudflare dates the key: the next plan sees no drift and
    // leaves both alone; only tunnel-02, which Terraform left, is planned.
    let plan = env.run(&["plan", "--format", "json"]).success();
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let names: Vec<&str> = (v["actions"].as_array().unwrap().iter())
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tunnel-02"]);

    // Again: refused without --force, nothing changed.
    let before = std::fs::read(env.state_path()).unwrap();
    let again = env.run(&["import", "--terraform", "tf.json"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("already holds sealed PSKs for these tunnels, so psk imports none:\n  tunnel-00\n  tunnel-01\n"), "{}", again.stderr);
    assert_eq!(std::fs::read(env.state_path()).unwrap(), before);
    env.run(&["import", "--terraform", "tf.json", "--force"])
        .success();
}

#[test]
fn a_broken_or_foreign_file_is_refused_without_quoting_it() {
    let env = env();
    let text = std::fs::read_to_string(env.path("tf.json")).unwrap();
    std::fs::write(env.path("cut.json"), &text[..text.len() / 2]).unwrap();
    let run = env.run(&["import", "--terraform", "cut.json"]);
    assert_eq!(run.code, 1);
    no_terraform_psk(&run.all());
    assert!(run.stderr.contains("cut.json:"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("expected the output of `terraform show -json`"),
        "{}",
        run.stderr
    );

    // A weak key is refused (all or nothing) unless --force.
    std::fs::write(env.path("weak.json"), text.replace(PSKS[1], "shortkey1")).unwrap();
    let run = env.run(&["import", "--terraform", "weak.json"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("tunnel-01 (module.legacy.cloudflare_ipsec_tunnel.ams[\"1\"]): weaker than psk adopts without --force"), "{}", run.stderr);
    assert!(!run.all().contains("shortkey1"));
    assert!(!env.state_path().exists());

    // A name and --terraform do not go together.
    let run = env.run(&["import", "tunnel-00", "--terraform", "tf.json"]);
    assert_eq!(run.code, 1);
}
