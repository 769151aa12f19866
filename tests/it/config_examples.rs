//! The committed JSON Schema is the one generated from the Rust types, and
//! every example under examples/ passes both `psk validate` (the real
//! binary) and the committed schema, as an editor would check it.

use std::path::{Path, PathBuf};

use crate::common::psk_in;

const SCHEMA_LINE: &str = "# yaml-language-server: $schema=../../schema/psk.schema.json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn psk(args: &[&str]) -> (i32, String, String) {
    psk_in(&root(), args)
}

fn committed_schema() -> String {
    std::fs::read_to_string(root().join("schema/psk.schema.json")).unwrap()
}

#[test]
fn committed_schema_is_the_generated_one() {
    let generated = psk::config::schema::schema_text();
    assert!(
        committed_schema() == generated,
        "schema/psk.schema.json differs from the schema generated from src/config/raw.rs.\n\
         Regenerate it with:\n    cargo run --quiet -- schema > schema/psk.schema.json"
    );
    let (code, stdout, stderr) = psk(&["schema"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, generated, "`psk schema` prints the same schema");
}

fn examples() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path().join("psk.yaml"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found
}

#[test]
fn the_three_examples_exist() {
    let names: Vec<String> = examples()
        .iter()
        .map(|p| {
            p.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for want in ["fleet", "github-actions", "quickstart"] {
        assert!(names.iter().any(|n| n == want), "{names:?}");
    }
}

#[test]
fn every_example_passes_validate_and_the_committed_schema() {
    let schema: serde_json::Value = serde_json::from_str(&committed_schema()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for path in examples() {
        let rel = path
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().next(), Some(SCHEMA_LINE), "{rel}: first line");
        assert!(
            Path::new(&path.parent().unwrap().join("../../schema/psk.schema.json")).exists(),
            "{rel}: the $schema path resolves"
        );

        let doc = psk::config::schema::to_json(&text);
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{rel} against the schema: {errors:#?}");

        let (code, stdout, stderr) = psk(&["validate", "-c", &rel]);
        assert_eq!(code, 0, "{rel}: {stdout}{stderr}");
        assert!(stdout.contains("is valid"), "{rel}: {stdout}");
        assert!(!stderr.contains("warning"), "{rel}: {stderr}");

        let (code, stdout, _) = psk(&["validate", "-c", &rel, "--format", "json"]);
        assert_eq!(code, 0, "{rel}: {stdout}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["valid"], true, "{rel}");
        assert_eq!(report["errors"], serde_json::json!([]), "{rel}");
        assert_eq!(report["warnings"], serde_json::json!([]), "{rel}");
    }
}

#[test]
fn the_quickstart_has_two_tunnels_and_one_policy() {
    let c = psk::config::Config::load(&root().join("examples/quickstart/psk.yaml")).unwrap();
    assert_eq!(c.tunnels.len(), 2);
    assert_eq!(c.policies.len(), 1);
}

#[test]
fn the_fleet_is_three_accounts_of_site_pairs_with_windows_and_both_generators() {
    use psk::policy::Generator;
    use std::collections::BTreeMap;
    let c = psk::config::Config::load(&root().join("examples/fleet/psk.yaml")).unwrap();
    assert_eq!(c.tunnels.len() + c.unresolved.len(), 40);
    assert_eq!(c.accounts().len(), 3);
    assert!(c.recipients.len() >= 2);
    let mut sites: BTreeMap<&str, usize> = BTreeMap::new();
    for site in c
        .tunnels
        .iter()
        .map(|t| t.site.as_deref())
        .chain(c.unresolved.iter().map(|u| u.site.as_deref()))
    {
        *sites
            .entry(site.expect("every fleet tunnel has a site"))
            .or_default() += 1;
    }
    assert_eq!(sites.len(), 20, "{sites:?}");
    assert!(sites.values().all(|n| *n == 2), "{sites:?}");
    let windows = c.policies.values().filter(|p| p.window.is_some()).count();
    assert!(windows >= 2, "several policies with windows");
    let generators: Vec<Generator> = c.policies.values().map(|p| p.generator).collect();
    assert!(generators.contains(&Generator::Cloudflare) && generators.contains(&Generator::Local));
    assert!(
        !c.unresolved.is_empty(),
        "shows tunnels named by name alone"
    );
}

/// What the GitHub example promises in its README. The flags of every psk
/// command line in it are checked by `workflows.rs`, the workflows
/// themselves by actionlint (.ci/run).
#[test]
fn the_github_workflows_do_what_their_readme_says() {
    let dir = root().join("examples/github-actions/.github/workflows");
    let read = |name: &str| {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(doc["jobs"].is_mapping(), "{name} has jobs");
        // psk comes from the cached install action, never built every run.
        assert!(!text.contains("run: cargo install"), "{name}");
        assert!(
            text.contains("uses: ./.github/actions/install-psk"),
            "{name}"
        );
        (text, doc)
    };
    let (plan, _) = read("psk-plan.yml");
    let (apply, apply_doc) = read("psk-apply.yml");
    let (rotate, rotate_doc) = read("psk-rotate.yml");
    assert!(plan.contains("psk plan --format markdown --out plan.json"));
    // One comment, edited in place (tests/it/workflows.rs runs it).
    assert!(plan.contains("<!-- psk-plan -->") && plan.contains("--method PATCH"));
    assert!(apply.contains("gh run download"));
    assert!(apply.contains("psk apply plan.json"));
    // The state is kept as an artifact and committed by the script that
    // rebases and retries (tests/it/workflows.rs runs both).
    for text in [&apply, &rotate] {
        assert!(text.contains("name: psk-state-${{ github.run_id }}"));
        assert!(text.contains("retention-days: 90"));
        assert!(text.contains("run: bash .github/scripts/commit-state.sh"));
        assert!(text.contains("run: bash .github/scripts/wait-turn.sh"));
    }

    // The scheduled rotation: a cron, its own group that never cancels a
    // running rotation, a documented switch; no group for apply, whose
    // pending runs GitHub would cancel.
    assert!(rotate_doc["on"]["schedule"][0]["cron"].is_string());
    assert!(apply_doc.get("concurrency").is_none());
    assert_eq!(rotate_doc["concurrency"]["group"], "psk-rotate");
    assert_eq!(rotate_doc["concurrency"]["cancel-in-progress"], false);
    assert!(rotate.contains("vars.PSK_ROTATION_MODE || 'apply'"));
    assert!(rotate.contains("gh pr create"));
    assert!(apply.contains("psk-rotation.plan.json"));

    let action = root().join("examples/github-actions/.github/actions/install-psk/action.yml");
    let action = std::fs::read_to_string(action).unwrap();
    assert!(action.contains("key: psk-${{ runner.os }}-${{ runner.arch }}-${{ inputs.version }}"));
}
