//! Key custody against the reference tools: what psk seals opens with the
//! Go `age` CLI, for X25519 and ssh-ed25519 recipients; identities made by
//! `age-keygen` and `ssh-keygen` open what psk sealed; every identity source
//! is tried together; a wrong identity changes nothing.

use std::path::Path;
use std::process::Command;

use crate::common::*;

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Applies one tunnel sealed to `recipient`; returns the PSK the sandbox
/// issued and writes the sealed armor to `sealed.age`.
fn apply_to(env: &mut TestEnv, recipient: &str) -> String {
    env.write_config(&config_text(recipient, 1, "90d"));
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    let state = env.state_json();
    let sealed = state["tunnels"][format!("{ACCOUNT}/{}", tunnel_id(0))]["psk"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(env.path("sealed.age"), sealed).unwrap();
    env.ledger()[&tunnel_id(0)].last().unwrap().clone()
}

fn age_decrypt(identity: &Path, sealed: &Path) -> String {
    ok(Command::new(tool("age"))
        .arg("--decrypt")
        .arg("-i")
        .arg(identity)
        .arg(sealed))
}

#[test]
fn x25519_from_age_keygen_both_ways() {
    let mut env = TestEnv::new(1);
    let id = env.path("keygen.txt");
    ok(Command::new(tool("age-keygen")).arg("-o").arg(&id));
    let recipient = ok(Command::new(tool("age-keygen")).arg("-y").arg(&id));
    let issued = apply_to(&mut env, recipient.trim());

    assert_eq!(age_decrypt(&id, &env.path("sealed.age")), issued);
    let show = env
        .run(&["show", "tunnel-00", "--identity", id.to_str().unwrap()])
        .success();
    assert_eq!(show.stdout, format!("{issued}\n"));
    assert_eq!(show.stderr, "");

    // PSK_AGE_KEY_FILE and PSK_AGE_KEY work alone...
    let run = to_run(
        env.command(&["show", "tunnel-00"])
            .env("PSK_AGE_KEY_FILE", &id)
            .output()
            .unwrap(),
    );
    assert_eq!(run.stdout, format!("{issued}\n"), "{run:?}");
    let key_text = std::fs::read_to_string(&id).unwrap();
    let run = to_run(
        env.command(&["show", "tunnel-00"])
            .env("PSK_AGE_KEY", &key_text)
            .output()
            .unwrap(),
    );
    assert_eq!(run.stdout, format!("{issued}\n"), "{run:?}");
    // ...and together with identities that do not match: all are tried.
    let run = to_run(
        env.command(&["show", "tunnel-00", "-i", env.identity.to_str().unwrap()])
            .env("PSK_AGE_KEY", &key_text)
            .env("PSK_AGE_KEY_FILE", &env.identity)
            .output()
            .unwrap(),
    );
    assert_eq!(run.stdout, format!("{issued}\n"), "{run:?}");
}

#[test]
fn ssh_ed25519_recipient_opens_with_age_and_with_psk() {
    let mut env = TestEnv::new(1);
    let key = env.path("id_ed25519");
    ok(Command::new(tool("ssh-keygen"))
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "netops@example.com",
            "-f",
        ])
        .arg(&key));
    let public = std::fs::read_to_string(env.path("id_ed25519.pub")).unwrap();
    let issued = apply_to(&mut env, public.trim());

    assert_eq!(age_decrypt(&key, &env.path("sealed.age")), issued);
    let show = env
        .run(&["show", "tunnel-00", "-i", key.to_str().unwrap()])
        .success();
    assert_eq!(show.stdout, format!("{issued}\n"));
}

#[test]
fn ssh_rsa_identity_opens_what_psk_sealed() {
    let mut env = TestEnv::new(1);
    let key = env.path("id_rsa");
    ok(Command::new(tool("ssh-keygen"))
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&key));
    let public = std::fs::read_to_string(env.path("id_rsa.pub")).unwrap();
    let issued = apply_to(&mut env, public.trim());
    let show = env
        .run(&["show", "tunnel-00", "-i", key.to_str().unwrap()])
        .success();
    assert_eq!(show.stdout, format!("{issued}\n"));
    assert_eq!(age_decrypt(&key, &env.path("sealed.age")), issued);
}

#[test]
fn a_wrong_identity_exits_1_says_what_to_do_and_changes_nothing() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    let before = read(&env.state_path());
    let other = env.path("other.txt");
    {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        write_private(&other, &format!("{}\n", id.to_string().expose_secret()));
    }
    let o = other.to_str().unwrap();
    let mut messages = String::new();
    for args in [
        vec!["show", "tunnel-00", "-i", o],
        vec!["export", "-i", o],
        vec!["export", "tunnel-01", "--format", "env", "-i", o],
    ] {
        messages.push_str(&format!("{}\n", env.snapshot(&env.run(&args))));
    }
    // reseal after a recipient change, with only the wrong identity.
    env.write_config(&config_text(
        &age::x25519::Identity::generate().to_public().to_string(),
        2,
        "90d",
    ));
    let run = env.run(&["reseal", "-i", o]);
    messages.push_str(&format!("{}\n", env.snapshot(&run)));
    assert_eq!(read(&env.state_path()), before);

    // No identity at all: the message names every source.
    let run = env.run(&["show", "tunnel-00"]);
    messages.push_str(&format!("{}\n", env.snapshot(&run)));
    // A file that is not an identity is named as such.
    let run = env.run(&["show", "tunnel-00", "-i", "psk.yaml"]);
    messages.push_str(&env.snapshot(&run));
    insta::assert_snapshot!("wrong_identity_messages", messages);
    assert_eq!(read(&env.state_path()), before);
}
