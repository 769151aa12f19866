//! Progress while a plan asks Cloudflare: without a terminal, a few plain
//! lines on stderr (each account listed, the dry runs' start, each
//! quarter of a long run, their end), so a CI log shows the work; stdout
//! stays the plan alone. `--quiet`, `--format json` and `apply --json`
//! show none.

use crate::common::TestEnv;

#[test]
fn plan_reports_its_refresh_and_dry_runs_on_stderr_only() {
    let mut env = TestEnv::new(120);
    env.start_sandbox();
    let run = env.run(&["plan"]).success();
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "Refreshing: account 023e105f4ecef8ad9ca31a8372d0c353 lists 120 IPsec tunnels.",
            "Dry-running 120 PSK changes with Cloudflare (validate_only)...",
            "Dry runs: 30 of 120 answered.",
            "Dry runs: 60 of 120 answered.",
            "Dry runs: 90 of 120 answered.",
            "Dry runs: 120 of 120 answered.",
        ],
        "{run:?}"
    );
    assert!(!run.stdout.contains("Dry runs"), "{run:?}");
    assert!(run.stdout.contains("Plan: 0 to rotate, 120 to generate"));

    let quiet = env.run(&["plan", "--quiet"]).success();
    assert_eq!(quiet.stderr, "", "{quiet:?}");
    assert_eq!(quiet.stdout, run.stdout);
    let json = env.run(&["plan", "--format", "json"]).success();
    assert_eq!(json.stderr, "", "{json:?}");
}

#[test]
fn apply_reports_its_plan_phase_unless_json() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    let json = env.run(&["apply", "--auto-approve", "--json"]).success();
    assert!(!json.stderr.contains("Dry run"), "{json:?}");
    let run = env.run(&["apply", "--auto-approve", "--replace", "tunnel-00"]);
    let run = run.success();
    assert!(
        run.stderr
            .contains("Dry-running 1 PSK change with Cloudflare")
            && run.stderr.contains("Dry runs: 1 of 1 answered."),
        "{run:?}"
    );
    assert!(!run.stdout.contains("Dry run"), "{run:?}");
}
