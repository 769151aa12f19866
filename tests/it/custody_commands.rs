//! export, reseal and import, through the real binary and the sandbox.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use age::secrecy::ExposeSecret;
use psk::state::StateLock;

fn applied(tunnels: usize) -> TestEnv {
    let mut env = TestEnv::new(tunnels);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    env
}

fn issued(env: &TestEnv, i: usize) -> String {
    env.ledger()[&tunnel_id(i)].last().unwrap().clone()
}

fn new_identity(env: &TestEnv, file: &str) -> (std::path::PathBuf, String) {
    let id = age::x25519::Identity::generate();
    let path = env.path(file);
    std::fs::write(&path, format!("{}\n", id.to_string().expose_secret())).unwrap();
    (path, id.to_public().to_string())
}

#[test]
fn export_prints_every_psk_in_three_formats() {
    let env = applied(3);
    let id = env.identity.to_str().unwrap();

    let run = env.run(&["export", "-i", id]).success();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["format_version"], "1.0");
    let tunnels = v["tunnels"].as_array().unwrap();
    assert_eq!(tunnels.len(), 3);
    for (i, t) in tunnels.iter().enumerate() {
        assert_eq!(t["name"], format!("tunnel-{i:02}"));
        assert_eq!(t["tunnel_id"], tunnel_id(i));
        assert_eq!(t["account_id"], ACCOUNT);
        assert_eq!(t["site"], format!("site-{}", i / 2));
        assert!(t["last_rotated"].is_string());
        assert_eq!(t["psk"], issued(&env, i));
    }
    assert_eq!(run.stderr, "");
    // Same state, same bytes.
    assert_eq!(env.run(&["export", "-i", id]).stdout, run.stdout);

    let run = env
        .run(&[
            "export",
            "tunnel-02",
            "tunnel-00",
            "--format",
            "env",
            "-i",
            id,
        ])
        .success();
    assert_eq!(
        run.stdout,
        format!(
            "PSK_TUNNEL_02='{}'\nPSK_TUNNEL_00='{}'\n",
            issued(&env, 2),
            issued(&env, 0)
        )
    );

    let run = env
        .run(&["export", "tunnel-01", "--format", "csv", "-i", id])
        .success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "name,account_id,tunnel_id,site,last_rotated,psk");
    assert!(lines[1].starts_with(&format!("tunnel-01,{ACCOUNT},{},site-0,", tunnel_id(1))));
    assert!(lines[1].ends_with(&format!(",{}", issued(&env, 1))));
    assert_eq!(lines.len(), 2);

    let run = env.run(&["export", "nope", "-i", id]).failure();
    assert!(run.stderr.contains("no tunnel named `nope`"), "{run:?}");
    assert_eq!(run.stdout, "");
}

#[test]
fn export_with_recipient_reseals_instead_of_printing() {
    let env = applied(2);
    let (theirs, their_recipient) = new_identity(&env, "router-team.txt");
    let run = env
        .run(&[
            "export",
            "--recipient",
            &their_recipient,
            "-i",
            env.identity.to_str().unwrap(),
        ])
        .success();
    env.assert_no_secrets(&run.all());
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    for (i, t) in v["tunnels"].as_array().unwrap().iter().enumerate() {
        assert!(t.get("psk").is_none());
        let armor = t["sealed_psk"].as_str().unwrap();
        assert!(armor.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        let mut ids = psk::seal::Identities::default();
        ids.add_file(&theirs).unwrap();
        let opened = psk::seal::open(armor, &ids).unwrap();
        assert_eq!(opened.expose(), issued(&env, i));
        let f = env.path(&format!("export-{i}.age"));
        std::fs::write(&f, armor).unwrap();
        let out = std::process::Command::new(tool("age"))
            .arg("-d")
            .arg("-i")
            .arg(&theirs)
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), issued(&env, i));
    }
    let run = env
        .run(&["export", "--recipient", "age1bogus", "-i", "identity.txt"])
        .failure();
    assert!(run.stderr.contains("--recipient"), "{run:?}");
}

#[test]
fn reseal_follows_a_change_of_recipients_without_calling_the_api() {
    let env = applied(2);
    let before_keys: Vec<String> = (0..2).map(|i| issued(&env, i)).collect();
    let (new_id, new_recipient) = new_identity(&env, "new.txt");
    env.write_config(&config_text(&new_recipient, 2, "90d"));

    let plan = env
        .run(&["plan", "--offline", "--detailed-exitcode"])
        .code(2);
    assert!(plan.stdout.contains("* reseal \"tunnel-00\""), "{plan:?}");
    assert!(
        plan.stdout
            .contains("Plan: 0 to rotate, 0 to generate, 2 to reseal, 0 to forget."),
        "{plan:?}"
    );
    let json = env.run(&["plan", "--offline", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["actions"][0]["action"], "reseal");
    assert_eq!(v["actions"][0]["reasons"][0]["code"], "recipients_changed");
    assert_eq!(v["summary"]["reseal"], 2);

    // apply holds no identity: it leaves reseals to `psk reseal`.
    let apply = env.run(&["apply", "--auto-approve"]).success();
    assert!(
        apply.stdout.contains("2 left for `psk reseal`"),
        "{apply:?}"
    );

    let counters = &env.sandbox().counters;
    let calls = || {
        counters.list.load(Ordering::Relaxed)
            + counters.get.load(Ordering::Relaxed)
            + counters.generate.load(Ordering::Relaxed)
            + counters.bulk_set.load(Ordering::Relaxed)
    };
    let calls_before = calls();
    let before = read(&env.state_path());
    env.run(&["reseal"]).failure();
    assert_eq!(read(&env.state_path()), before);

    let run = env
        .run(&["reseal", "-i", env.identity.to_str().unwrap()])
        .success();
    assert!(run.stdout.contains("Re-sealed 2 PSKs"), "{run:?}");
    assert_eq!(calls(), calls_before, "reseal must not call the API");
    assert_eq!(
        read(&env.state_path().with_extension("json.backup")),
        before
    );

    for (i, key) in before_keys.iter().enumerate() {
        let name = format!("tunnel-{i:02}");
        let new = env.run(&["show", &name, "-i", new_id.to_str().unwrap()]);
        assert_eq!(new.stdout, format!("{key}\n"), "{new:?}");
        // The removed recipient can no longer open it.
        env.run(&["show", &name, "-i", env.identity.to_str().unwrap()])
            .failure();
    }
    env.run(&["plan", "--offline", "--detailed-exitcode"])
        .success();
    let again = env
        .run(&["reseal", "-i", new_id.to_str().unwrap()])
        .success();
    assert!(again.stdout.contains("Nothing to do"), "{again:?}");
    // Nothing was rotated by any of this.
    assert_eq!(env.ledger().values().map(Vec::len).sum::<usize>(), 2);
}

/// A key rotated after psk.yaml's recipients changed is sealed to the new
/// ones and says so in its record: plan no longer asks to re-seal it,
/// `psk reseal` opens only the others, and once every key is sealed to the
/// new list the state says it once, in its header (format version 1 again).
#[test]
fn keys_rotated_after_a_recipient_change_need_no_reseal() {
    let env = applied(3);
    let (new_id, new_recipient) = new_identity(&env, "new.txt");
    let text = config_text(&env.recipient, 3, "90d").replace(
        &format!("  - {}\n", env.recipient),
        &format!("  - {}\n  - {new_recipient}\n", env.recipient),
    );
    env.write_config(&text);
    let plan = env.run(&["plan", "--offline"]);
    assert!(plan.stdout.contains("3 to reseal"), "{plan:?}");

    env.run(&["apply", "--auto-approve", "--replace", "tunnel-01"])
        .success();
    let state = env.state_json();
    assert_eq!(state["version"], 2, "a record names its own recipients");
    let records: Vec<&serde_json::Value> = state["tunnels"].as_object().unwrap().values().collect();
    let with_own: Vec<&str> = records
        .iter()
        .filter(|r| r["sealed_to"].is_array())
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(with_own, vec!["tunnel-01"]);
    // The new recipient opens the rotated key already.
    let show = env.run(&["show", "tunnel-01", "-i", new_id.to_str().unwrap()]);
    assert_eq!(show.stdout, format!("{}\n", issued(&env, 1)), "{show:?}");
    let plan = env.run(&["plan", "--offline"]);
    assert!(plan.stdout.contains("2 to reseal"), "{plan:?}");
    assert!(!plan.stdout.contains("reseal \"tunnel-01\""), "{plan:?}");

    // Only the two stale keys are opened: the old identity suffices.
    let run = env
        .run(&["reseal", "-i", env.identity.to_str().unwrap()])
        .success();
    assert!(run.stdout.contains("Re-sealed 2 PSKs"), "{run:?}");
    let state = env.state_json();
    assert_eq!(state["version"], 1);
    assert!(!String::from_utf8(read(&env.state_path()))
        .unwrap()
        .contains("sealed_to"));
    for i in 0..3 {
        let name = format!("tunnel-{i:02}");
        let show = env.run(&["show", &name, "-i", new_id.to_str().unwrap()]);
        assert_eq!(show.stdout, format!("{}\n", issued(&env, i)), "{show:?}");
    }
    env.run(&["plan", "--offline", "--detailed-exitcode"])
        .success();

    // Back to one recipient, then every key rotated: apply alone brings the
    // header along, and there is nothing left to re-seal.
    env.write_config(&config_text(&new_recipient, 3, "90d"));
    env.run(&[
        "apply",
        "--auto-approve",
        "--replace",
        "tunnel-00",
        "--replace",
        "tunnel-01",
        "--replace",
        "tunnel-02",
    ])
    .success();
    let state = env.state_json();
    assert_eq!(state["version"], 1, "{state}");
    assert_eq!(state["recipients"].as_array().unwrap().len(), 1);
    env.run(&["plan", "--offline", "--detailed-exitcode"])
        .success();
    let again = env.run(&["reseal", "-i", new_id.to_str().unwrap()]);
    assert!(again.stdout.contains("Nothing to do"), "{again:?}");
}

#[test]
fn import_adopts_a_known_psk_from_stdin() {
    let env = applied(2);
    let known = issued(&env, 1);
    // Start over, as on day one: psk knows nothing of the fleet (its lock
    // file is left, so starting over must be asked for).
    std::fs::remove_file(env.state_path()).unwrap();
    std::fs::remove_file(env.path("psk.state.json.backup")).unwrap();
    let lists = env.sandbox().counters.list.load(Ordering::Relaxed);

    let run = env
        .run_stdin(
            &["import", "tunnel-01", "--new-state"],
            &format!("{known}\n"),
        )
        .success();
    env.assert_no_secrets(&run.all());
    assert_eq!(
        env.sandbox().counters.list.load(Ordering::Relaxed),
        lists + 1
    );
    let show = env.run(&["show", "tunnel-01", "-i", env.identity.to_str().unwrap()]);
    assert_eq!(show.stdout, format!("{known}\n"), "{show:?}");
    let state = env.state_json();
    let rec = &state["tunnels"][format!("{ACCOUNT}/{}", tunnel_id(1))];
    assert!(!rec["psk"].as_str().unwrap().contains(&known));

    // Dated as Cloudflare dates it: no drift, nothing to rotate for it.
    let plan = env.run(&["plan", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let actions = v["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{}", plan.stdout);
    assert_eq!(actions[0]["name"], "tunnel-00");
    assert_eq!(v["unchanged"][0]["name"], "tunnel-01");

    // A second import is refused unless forced; bad input changes nothing.
    let before = read(&env.state_path());
    let run = env
        .run_stdin(&["import", "tunnel-01"], "other-key-0123456789\n")
        .failure();
    assert!(run.stderr.contains("--force"), "{run:?}");
    for (input, says) in [
        ("", "no PSK on stdin"),
        ("two words\n", "spaces"),
        ("a\nb\n", "more than one line"),
    ] {
        let run = env.run_stdin(&["import", "tunnel-00"], input).failure();
        assert!(run.stderr.contains(says), "{input:?} {run:?}");
    }
    let run = env.run_stdin(&["import", "nope"], "x\n").failure();
    assert!(run.stderr.contains("no tunnel named `nope`"), "{run:?}");
    assert_eq!(read(&env.state_path()), before);

    env.run_stdin(
        &["import", "tunnel-01", "--force"],
        "replaced-key-0123456789\n",
    )
    .success();
    let show = env.run(&["show", "tunnel-01", "-i", env.identity.to_str().unwrap()]);
    assert_eq!(show.stdout, "replaced-key-0123456789\n");
}

#[test]
fn reseal_and_import_take_the_lock() {
    let env = applied(1);
    let (_, new_recipient) = new_identity(&env, "new.txt");
    env.write_config(&config_text(&new_recipient, 1, "90d"));
    let before = read(&env.state_path());
    let _held = StateLock::acquire(&env.state_path(), "apply", Duration::ZERO).unwrap();
    let id = env.identity.to_str().unwrap();
    for run in [
        env.run(&["reseal", "-i", id]),
        env.run_stdin(&["import", "tunnel-00", "--force"], "k0123456789abcdefgh\n"),
        env.run_stdin(
            &["import", "tunnel-00", "--force", "--lock-timeout", "1s"],
            "k0123456789abcdefgh\n",
        ),
    ] {
        let run = run.failure();
        assert!(run.stderr.contains("is locked by"), "{run:?}");
        assert!(run.stderr.contains(&format!("pid {}", std::process::id())));
    }
    assert_eq!(read(&env.state_path()), before);
}

/// An imported key is a new key: what the record said about handing the
/// old one to its router (here, a failed delivery) no longer applies.
#[test]
fn import_resets_the_delivery_of_the_old_key() {
    let env = applied(1);
    let mut state = env.state_json();
    let key = format!("{ACCOUNT}/{}", tunnel_id(0));
    state["tunnels"][&key]["delivery"] = serde_json::json!({
        "at": "2026-11-01T00:00:00Z",
        "error": "`deliver.sh` exited with status 1",
        "ok": false,
    });
    let mut bytes = serde_json::to_vec_pretty(&state).unwrap();
    bytes.push(b'\n');
    std::fs::write(env.state_path(), bytes).unwrap();

    env.run_stdin(
        &["import", "tunnel-00", "--force"],
        "imported-key-0123456789\n",
    )
    .success();
    let rec = &env.state_json()["tunnels"][&key];
    assert!(rec.get("delivery").is_none(), "{rec}");
    assert!(
        rec.get("intent").is_none() && rec.get("pending").is_none(),
        "{rec}"
    );
}

/// A misspelled tunnel name gets the likely one, wherever a command takes
/// a name; a tunnel psk.yaml lists but psk holds no key for yet is not
/// called unknown.
#[test]
fn tunnel_names_get_a_suggestion_and_a_listed_tunnel_without_a_key_says_so() {
    let env = applied(2);
    let identity = env.identity.clone();
    let id = identity.to_str().unwrap();
    let runs = [
        env.run(&["show", "tunel-01", "-i", id]),
        env.run(&["export", "tunel-01", "-i", id]),
        env.run(&["deliver", "tunel-01", "-i", id]),
        env.run_stdin(&["import", "tunel-01"], "0123456789abcdef0123\n"),
        env.run(&["plan", "--replace", "tunel-01"]),
        env.run(&["plan", "--target", "tunel-01"]),
    ];
    for run in runs {
        let run = run.failure();
        assert!(
            run.stderr.contains("no tunnel named `tunel-01`")
                && run.stderr.contains("did you mean `tunnel-01`?"),
            "{run:?}"
        );
    }
    // Nothing close: no guess.
    let run = env.run(&["show", "nope", "-i", id]).failure();
    assert!(!run.stderr.contains("did you mean"), "{run:?}");

    env.write_config(&config_text(&env.recipient, 3, "90d"));
    let run = env.run(&["show", "tunnel-02", "-i", id]).failure();
    assert!(
        run.stderr
            .contains("psk holds no PSK for `tunnel-02` yet: it is in psk.yaml"),
        "{run:?}"
    );
    assert!(run.stderr.contains("`psk import tunnel-02`"), "{run:?}");
    assert!(!run.stderr.contains("no tunnel named"), "{run:?}");
}
