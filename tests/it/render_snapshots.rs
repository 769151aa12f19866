//! Every action kind and reason, in every format, pinned as snapshots.
//! The renderers are pure functions of the plan, so a fixed plan gives
//! fixed bytes; any change in wording or layout shows up in review.

use chrono::{DateTime, Utc};
use psk::reconcile::unmanaged::UnmanagedTunnel;
use psk::reconcile::{
    Action, ActionKind, Deferral, Deferred, DryRun, PathStatus, Plan, Reason, Unchanged, Upcoming,
};
use psk::render;
use psk::state::{Intent, State};
use psk::tunnel::TunnelKey;

const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";

const NO_VERDICT: &str = "the dry run itself failed: Cloudflare failed to handle .../psk_generate?validate_only=true (HTTP 503 after 3 retries)   code 1500: Internal error";

pub(crate) fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

pub(crate) fn key(i: u32) -> TunnelKey {
    TunnelKey::new(ACCOUNT, &format!("{:032x}", 0xf00 + i))
}

fn action(i: u32, name: &str, kind: ActionKind, reasons: Vec<Reason>, dry_run: DryRun) -> Action {
    let rotated = kind != ActionKind::Generate;
    Action {
        name: name.into(),
        key: key(i),
        kind,
        reasons,
        policy: (kind != ActionKind::Forget).then(|| "default".to_string()),
        last_rotated: rotated.then(|| t("2026-08-01T10:00:00Z")),
        next_due: (rotated && kind != ActionKind::Forget).then(|| t("2026-10-30T10:00:00Z")),
        dry_run,
    }
}

pub(crate) fn full_plan() -> Plan {
    let due = Reason::Due {
        last_rotated: t("2026-08-01T10:00:00Z"),
        days_ago: 117,
        policy: "default".into(),
        every: "90d".parse().unwrap(),
        spread: None,
    };
    Plan {
        now: t("2026-11-26T12:00:00Z"),
        offline: false,
        targeted: false,
        actions: vec![
            action(1, "fra-primary", ActionKind::Rotate, vec![due], DryRun::Accepted),
            action(2, "ams-new", ActionKind::Generate, vec![Reason::NeverRotated], DryRun::Accepted),
            action(
                11,
                "vie-unknown",
                ActionKind::Generate,
                vec![Reason::UnknownLiveKey { since: t("2026-08-01T09:00:00Z") }],
                DryRun::Accepted,
            ),
            action(
                3,
                "par-drift",
                ActionKind::Rotate,
                vec![Reason::ChangedOutside { on: t("2026-11-20T08:30:00Z") }],
                DryRun::Accepted,
            ),
            action(
                4,
                "lon-crashed",
                ActionKind::Rotate,
                vec![Reason::Interrupted { started: t("2026-11-25T23:59:00Z") }],
                DryRun::Refused("Cloudflare refused .../psk_generate?validate_only=true (HTTP 400) code 1002: Invalid tunnel".into()),
            ),
            action(
                5,
                "mad-forced",
                ActionKind::Rotate,
                vec![Reason::Forced],
                DryRun::NoVerdict(NO_VERDICT.into()),
            ),
            action(
                6,
                "old-site",
                ActionKind::Forget,
                vec![Reason::NotInConfig, Reason::NotListed],
                DryRun::NotRun,
            ),
            action(
                8,
                "osl-keys",
                ActionKind::Reseal,
                vec![Reason::RecipientsChanged {
                    added: vec!["sha256:aaaabbbbccccdddd".into()],
                    removed: vec!["sha256:1111222233334444".into()],
                    names: [("sha256:aaaabbbbccccdddd".to_string(), "alice (laptop)".to_string())]
                        .into(),
                }],
                DryRun::NotRun,
            ),
        ],
        unchanged: vec![Unchanged {
            name: "waw-ok".into(),
            key: key(7),
            next_due: t("2027-01-15T00:00:00Z"),
        }],
        deferred: vec![
            Deferred {
                name: "ber-weekend".into(),
                key: key(9),
                kind: ActionKind::Rotate,
                reasons: vec![Reason::Due {
                    last_rotated: t("2026-08-20T02:00:00Z"),
                    days_ago: 98,
                    policy: "weekend".into(),
                    every: "90d".parse().unwrap(),
                    spread: Some("7d".parse().unwrap()),
                }],
                policy: "weekend".into(),
                why: Deferral::Window {
                    opens: t("2026-11-28T01:00:00Z"),
                    opens_local: "2026-11-28 02:00 CET".into(),
                    window: "sat, sun 02:00–06:00 Europe/Berlin".into(),
                },
            },
            Deferred {
                name: "fra-secondary".into(),
                key: key(10),
                kind: ActionKind::Generate,
                reasons: vec![Reason::NeverRotated],
                policy: "default".into(),
                why: Deferral::Site {
                    site: "fra".into(),
                    rotating: "fra-primary".into(),
                },
            },
            Deferred {
                name: "old-but-listed".into(),
                key: key(12),
                kind: ActionKind::Forget,
                reasons: vec![Reason::NotInConfig],
                policy: String::new(),
                why: Deferral::StillListed,
            },
            Deferred {
                name: "zrh-b".into(),
                key: key(14),
                kind: ActionKind::Rotate,
                reasons: vec![Reason::Forced],
                policy: "verified".into(),
                why: Deferral::Unhealthy {
                    site: "zrh".into(),
                    sibling: "zrh-a".into(),
                    since: t("2026-11-26T10:42:00Z"),
                    failed: Some(t("2026-11-26T10:52:00Z")),
                    health: Some("down in AMS, FRA".into()),
                },
            },
        ],
        upcoming: vec![Upcoming {
            name: "waw-ok".into(),
            key: key(7),
            policy: "default".into(),
            due: t("2027-01-15T00:00:00Z"),
            starts: t("2027-01-16T01:00:00Z"),
        }],
        horizon: "60d".parse().ok(),
        health: vec![
            PathStatus {
                name: "zrh-a".into(),
                key: key(13),
                site: "zrh".into(),
                code: "down".into(),
                health: "down in AMS, FRA".into(),
                unverified_since: Some(t("2026-11-26T10:42:00Z")),
                gave_up: Some(t("2026-11-26T10:52:00Z")),
            },
            PathStatus {
                name: "zrh-b".into(),
                key: key(14),
                site: "zrh".into(),
                code: "healthy".into(),
                health: "healthy".into(),
                unverified_since: None,
                gave_up: None,
            },
        ],
        unmanaged: vec![
            UnmanagedTunnel {
                name: "lis-forgotten".into(),
                key: key(20),
                add: format!("- {{ name: lis-forgotten, id: {} }}", key(20).tunnel_id),
            },
            UnmanagedTunnel {
                name: "ber primary".into(),
                key: key(21),
                add: format!(
                    "- {{ name: \"ber primary-00000000\", id: {} }}",
                    key(21).tunnel_id
                ),
            },
        ],
        ignored: 1,
    }
}

pub(crate) fn state() -> State {
    let mut s = State::new(vec!["sha256:1111222233334444".into()]);
    s.lineage = "3b1f6a52-0000-4000-8000-000000000000".into();
    s.serial = 12;
    for (i, name) in [
        (1, "fra-primary"),
        (3, "par-drift"),
        (4, "lon-crashed"),
        (5, "mad-forced"),
        (6, "old-site"),
        (7, "waw-ok"),
    ] {
        let r = s.entry(&key(i), name);
        r.psk = Some(
            "-----BEGIN AGE ENCRYPTED FILE-----\nc2VhbGVk\n-----END AGE ENCRYPTED FILE-----\n"
                .into(),
        );
        r.last_rotated = Some(t("2026-08-01T10:00:00Z"));
        if i == 4 {
            r.intent = Some(Intent {
                operation: "psk_generate".into(),
                started: t("2026-11-25T23:59:00Z"),
            });
        }
    }
    s
}

fn human(plan: &Plan, color: bool) -> String {
    let mut b = Vec::new();
    render::human_styled(plan, &mut b, color).unwrap();
    String::from_utf8(b).unwrap()
}

pub(crate) fn markdown(plan: &Plan, state: Option<&State>) -> String {
    let diff = render::diff::state_diff(state, plan, "psk.state.json");
    let mut b = Vec::new();
    render::markdown::markdown(plan, &diff, &mut b).unwrap();
    String::from_utf8(b).unwrap()
}

fn json(plan: &Plan) -> String {
    let mut b = Vec::new();
    render::json(plan, &mut b).unwrap();
    String::from_utf8(b).unwrap()
}

#[test]
fn human_every_action() {
    insta::assert_snapshot!(human(&full_plan(), false));
}

#[test]
fn human_colour_is_only_ansi_around_the_same_text() {
    let colored = human(&full_plan(), true);
    assert!(colored.contains("\u{1b}["));
    let stripped = String::from_utf8(strip_ansi(colored.as_bytes())).unwrap();
    assert_eq!(stripped, human(&full_plan(), false));
}

fn strip_ansi(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == 0x1b {
            while i < b.len() && b[i] != b'm' {
                i += 1;
            }
            i += 1;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn markdown_every_action() {
    insta::assert_snapshot!(markdown(&full_plan(), Some(&state())));
}

#[test]
fn json_every_action() {
    insta::assert_snapshot!(json(&full_plan()));
}

#[test]
fn no_changes_in_every_format() {
    let mut plan = full_plan();
    plan.actions.clear();
    plan.deferred.clear();
    plan.upcoming.clear();
    plan.health.clear();
    insta::assert_snapshot!("no_changes_human", human(&plan, false));
    insta::assert_snapshot!("no_changes_markdown", markdown(&plan, Some(&state())));
    insta::assert_snapshot!("no_changes_json", json(&plan));
}

#[test]
fn offline_and_targeted_warnings() {
    let mut plan = full_plan();
    plan.offline = true;
    plan.targeted = true;
    // Offline, Cloudflare was not asked what else it lists.
    plan.unmanaged.clear();
    plan.ignored = 0;
    for a in &mut plan.actions {
        a.dry_run = DryRun::NotRun;
    }
    plan.actions.truncate(2);
    insta::assert_snapshot!("offline_targeted_human", human(&plan, false));
    insta::assert_snapshot!("offline_targeted_markdown", markdown(&plan, None));
}

#[test]
fn same_plan_same_bytes() {
    let a = (
        human(&full_plan(), false),
        markdown(&full_plan(), Some(&state())),
        json(&full_plan()),
    );
    let b = (
        human(&full_plan(), false),
        markdown(&full_plan(), Some(&state())),
        json(&full_plan()),
    );
    assert_eq!(a, b);
}

/// A dry run that failed in passing is a warning in every format: shown on
/// its action, counted in the summary, and the plan stays applyable.
#[test]
fn no_verdict_is_a_warning_in_every_format() {
    let mut plan = full_plan();
    plan.actions.truncate(2);
    plan.actions[1].dry_run = DryRun::NoVerdict(NO_VERDICT.into());
    plan.deferred.clear();
    plan.upcoming.clear();
    plan.health.clear();
    plan.unmanaged.clear();
    plan.ignored = 0;
    let text = human(&plan, false);
    assert!(
        text.contains("NO VERDICT: the dry run itself failed"),
        "{text}"
    );
    assert!(!text.contains("REFUSED"), "{text}");
    insta::assert_snapshot!("no_verdict_human", text);
    let colored = human(&plan, true);
    assert_eq!(
        String::from_utf8(strip_ansi(colored.as_bytes())).unwrap(),
        human(&plan, false)
    );
    assert!(
        colored.contains("\u{1b}[33m"),
        "NO VERDICT in yellow: {colored:?}"
    );
    insta::assert_snapshot!("no_verdict_markdown", markdown(&plan, None));
    let j = json(&plan);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["format_version"], "1.5");
    assert_eq!(v["applyable"], true);
    assert_eq!(v["summary"]["no_verdict"], 1);
    assert_eq!(v["actions"][1]["dry_run"]["status"], "no_verdict");
    insta::assert_snapshot!("no_verdict_json", j);
}

/// A tunnel resealed or redelivered keeps its PSK but is not "up to
/// date": the count beside the actions is of tunnels that need nothing.
#[test]
fn up_to_date_counts_only_tunnels_that_need_nothing() {
    let mut plan = full_plan();
    plan.deferred.clear();
    plan.upcoming.clear();
    let reseal = plan.actions.last().unwrap().clone();
    plan.actions = (0..5)
        .map(|i| Action {
            name: format!("edge-{i}"),
            key: key(100 + i),
            ..reseal.clone()
        })
        .collect();
    plan.unchanged = (0..5)
        .map(|i| Unchanged {
            name: format!("edge-{i}"),
            key: key(100 + i),
            next_due: t("2027-01-15T00:00:00Z"),
        })
        .collect();
    for text in [human(&plan, false), markdown(&plan, None)] {
        assert!(!text.contains("up to date"), "{text}");
        assert!(text.contains("Next due: edge-0 on 2027-01-15."), "{text}");
    }
    plan.unchanged.push(Unchanged {
        name: "quiet".into(),
        key: key(200),
        next_due: t("2027-02-01T00:00:00Z"),
    });
    for text in [human(&plan, false), markdown(&plan, None)] {
        assert!(
            text.contains("1 tunnel is up to date; next due: edge-0 on 2027-01-15."),
            "{text}"
        );
    }
}
