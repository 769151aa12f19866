//! Messages that name what people know: a recipient by the comment on its
//! line in psk.yaml (not a fingerprint), and a plan that counts as "up to
//! date" only the tunnels that need nothing.

use crate::common::TestEnv;

#[test]
fn a_new_recipient_is_named_by_its_comment_in_every_format() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    env.run(&["apply", "--auto-approve"]).success();
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let bob = "age1hulcwrj8drla6mh0v9udwl0q98pgp45sn8l8c6483wg2ktqld38qershhj";
    let line = format!("  - {}\n", env.recipient);
    assert!(text.contains(&line), "{text}");
    env.write_config(&text.replace(&line, &format!("{line}  - {bob}   # bob (on call)\n")));

    let plan = env.run(&["plan", "--offline"]).success();
    assert!(
        plan.stdout
            .contains("the recipients in psk.yaml changed: added bob (on call)."),
        "{plan:?}"
    );
    assert!(!plan.stdout.contains("sha256:"), "{plan:?}");
    // Both tunnels are resealed: none is "up to date".
    assert!(plan.stdout.contains("2 to reseal"), "{plan:?}");
    assert!(!plan.stdout.contains("up to date"), "{plan:?}");
    let md = env
        .run(&["plan", "--offline", "--format", "markdown"])
        .success();
    assert!(md.stdout.contains("added bob (on call)."), "{md:?}");
    let json = env
        .run(&["plan", "--offline", "--format", "json"])
        .success();
    assert!(json.stdout.contains("added bob (on call)."), "{json:?}");
}
