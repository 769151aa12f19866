//! The PR comment as GitHub shows it: rendered with comrak (GitHub-
//! flavoured markdown: tables, raw `<details>` blocks) and checked on the
//! HTML, for a small plan and a 2,000-tunnel one. A snapshot pins the
//! bytes; this pins what a reviewer sees: no literal backticks, every
//! table row with its cells where they belong, every collapsed block
//! closed, and the comment under GitHub's limit.

use comrak::{markdown_to_html, Options};
use psk::reconcile::{
    Action, ActionKind, Deferral, Deferred, DryRun, Plan, Reason, Unchanged, Upcoming,
};
use psk::render::markdown::GITHUB_COMMENT_LIMIT;
use regex::Regex;

use crate::render_snapshots::{full_plan, key, markdown, state, t};

fn github_html(md: &str) -> String {
    let mut options = Options::default();
    options.extension.table = true;
    options.extension.strikethrough = true;
    options.extension.autolink = true;
    options.extension.alerts = true;
    // GitHub keeps <details> and <summary>.
    options.render.r#unsafe = true;
    markdown_to_html(md, &options)
}

/// The HTML with code blocks and code spans taken out: what is left is
/// prose, where a backtick would show as a literal backtick.
fn prose_of(html: &str) -> String {
    let pre = Regex::new(r"(?s)<pre>.*?</pre>").unwrap();
    let code = Regex::new(r"(?s)<code>.*?</code>").unwrap();
    code.replace_all(&pre.replace_all(html, ""), "")
        .into_owned()
}

/// Each table's body rows, as the text of their cells.
fn tables(html: &str) -> Vec<Vec<Vec<String>>> {
    let table = Regex::new(r"(?s)<tbody>(.*?)</tbody>").unwrap();
    let row = Regex::new(r"(?s)<tr>(.*?)</tr>").unwrap();
    let cell = Regex::new(r"(?s)<td>(.*?)</td>").unwrap();
    table
        .captures_iter(html)
        .map(|t| {
            row.captures_iter(&t[1])
                .map(|r| {
                    cell.captures_iter(&r[1])
                        .map(|c| c[1].to_string())
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// What every comment must be, whatever the plan.
fn check_comment(md: &str, expected_tables: usize) -> String {
    assert!(md.len() <= GITHUB_COMMENT_LIMIT, "{} bytes", md.len());
    assert!(!md.contains("\\`"), "a backslash-escaped backtick:\n{md}");
    let html = github_html(md);
    let prose = prose_of(&html);
    assert!(
        !prose.contains('`'),
        "a literal backtick outside code:\n{prose}"
    );
    // Collapsed blocks: each opened is closed, with its summary.
    let opened = html.matches("<details>").count();
    assert_eq!(opened, html.matches("</details>").count(), "{html}");
    assert_eq!(opened, html.matches("<summary>").count(), "{html}");
    assert_eq!(opened, html.matches("</summary>").count(), "{html}");
    // Tables: every row of psk's tables survives as a row whose count
    // column is a count (a stray `|` would shift the cells).
    let found = tables(&html);
    assert_eq!(found.len(), expected_tables, "{html}");
    let kinds = ["generate", "rotate", "forget", "reseal", "redeliver"];
    for rows in &found {
        assert!(!rows.is_empty());
        for cells in rows {
            assert!(cells.iter().all(|c| !c.trim().is_empty()), "{cells:?}");
            let action_row = cells.len() == 5 && kinds.contains(&cells[2].as_str());
            let group_row =
                cells.len() == 3 && cells[1].chars().next().is_some_and(|c| c.is_ascii_digit());
            assert!(action_row || group_row, "a broken row: {cells:?}");
        }
    }
    // Nothing of a table leaked into a paragraph.
    assert!(!Regex::new(r"<p>\|").unwrap().is_match(&html), "{html}");
    html
}

#[test]
fn a_small_plan_renders_as_github_shows_it() {
    let mut plan = full_plan();
    // Names that try markup characters (a backtick in a name is shown as
    // one, escaped: it is the name).
    plan.actions[0].name = "fra|primary <b>*_[y]".into();
    plan.deferred[1].name = "fra|secondary".into();
    let md = markdown(&plan, Some(&state()));
    let html = check_comment(&md, 3);
    // Commands in psk's sentences are code, not `literal` text.
    assert!(html.contains("<code>psk import NAME</code>"), "{html}");
    assert!(html.contains("<code>psk reseal</code>"), "{html}");
    assert!(html.contains("fra|primary"), "{html}");
    assert!(!html.contains("<b>*_"), "markup in a name was not escaped");
    assert!(html.contains("<b>Deferred: 3 tunnels</b>"), "{html}");
}

/// 2,000 tunnels: 400 rotations, 1,200 deferred for 44 reasons (two
/// windows, one change per site, 40 unhealthy siblings, still listed), 300
/// falling due over two weeks, 100 up to date.
fn fleet_plan() -> Plan {
    let due = |policy: &str| Reason::Due {
        last_rotated: t("2026-08-01T10:00:00Z"),
        days_ago: 117,
        policy: policy.into(),
        every: "90d".parse().unwrap(),
        spread: None,
    };
    let mut plan = full_plan();
    plan.actions = (0..400)
        .map(|i| Action {
            name: format!("edge-{i:04}"),
            key: key(i),
            kind: ActionKind::Rotate,
            reasons: vec![due("default")],
            policy: Some("default".into()),
            last_rotated: Some(t("2026-08-01T10:00:00Z")),
            next_due: Some(t("2026-10-30T10:00:00Z")),
            dry_run: DryRun::Accepted,
        })
        .collect();
    plan.deferred = (400..1_600)
        .map(|i| {
            let why = match i % 5 {
                0 => Deferral::Window {
                    opens: t("2026-11-28T01:00:00Z"),
                    opens_local: "2026-11-28 02:00 CET".into(),
                    window: "sat, sun 02:00–06:00 Europe/Berlin".into(),
                },
                1 => Deferral::Window {
                    opens: t("2026-11-29T03:00:00Z"),
                    opens_local: "2026-11-28 22:00 EST".into(),
                    window: "sat 22:00–23:59 America/New_York".into(),
                },
                2 => Deferral::Site {
                    site: format!("site-{}", i / 5),
                    rotating: format!("edge-{:04}", i / 5),
                },
                3 => Deferral::SiblingDown {
                    site: format!("site-{}", (i / 5) % 40),
                    sibling: format!("edge-{:04}", (i / 5) % 40),
                    health: "down in AMS, FRA".into(),
                },
                _ => Deferral::StillListed,
            };
            Deferred {
                name: format!("edge-{i:04}"),
                key: key(i),
                kind: if i % 7 == 0 {
                    ActionKind::Generate
                } else {
                    ActionKind::Rotate
                },
                reasons: vec![due("weekend")],
                policy: "weekend".into(),
                why,
            }
        })
        .collect();
    plan.upcoming = (1_600..1_900)
        .map(|i| Upcoming {
            name: format!("edge-{i:04}"),
            key: key(i),
            policy: if i % 2 == 0 { "default" } else { "weekend" }.into(),
            due: t("2026-11-27T00:00:00Z") + chrono::TimeDelta::days(i64::from(i % 14)),
            starts: t("2026-11-27T00:00:00Z") + chrono::TimeDelta::days(i64::from(i % 14)),
        })
        .collect();
    plan.unchanged = (1_600..2_000)
        .map(|i| Unchanged {
            name: format!("edge-{i:04}"),
            key: key(i),
            next_due: t("2026-12-27T00:00:00Z"),
        })
        .collect();
    plan
}

#[test]
fn a_2000_tunnel_plan_stays_readable_and_under_the_limit() {
    let plan = fleet_plan();
    let md = markdown(&plan, None);
    let html = check_comment(&md, 3);
    // 31 rows, not 1,200 bullets: the rows are capped, the rest counted;
    // 14 day-and-policy rows, not 300.
    assert!(
        html.contains(
            "<b>Deferred: 1200 tunnels</b> (needed, but not in this apply), for 44 reasons"
        ),
        "{html}"
    );
    let rows = tables(&html);
    assert_eq!(rows[1].len(), 31, "{:?}", rows[1]);
    assert_eq!(rows[1][30][0], "and 14 more groups");
    assert_eq!(rows[1][30][1], "84");
    assert!(
        rows[1][4][0].starts_with("held by verify's preflight: edge-0000 is down in AMS, FRA"),
        "{:?}",
        rows[1][4]
    );
    assert_eq!(rows[1][0][1], "240 (34 generate, 206 rotate)");
    assert!(rows[1][0][2].ends_with("and 232 more"), "{:?}", rows[1][0]);
    assert!(
        html.contains("<b>Falling due within 60d: 300 tunnels</b>"),
        "{html}"
    );
    assert_eq!(rows[2].len(), 14, "{:?}", rows[2]);
    assert!(
        html.contains("400 tunnels are up to date; next due:"),
        "{html}"
    );
    // The action table was cut to fit, and says so.
    assert!(md.contains("Shortened to fit"), "{}", &md[..2_000]);
}

/// The 40-tunnel fleet example, planned by the real binary against its
/// sandbox: 38 deferred tunnels were 38 bullets; now a few grouped rows.
#[test]
fn the_fleet_example_comment_groups_what_waits() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("examples/fleet/psk.yaml"),
        dir.path().join("psk.yaml"),
    )
    .unwrap();
    let (code, md, err) = crate::common::psk_in(
        dir.path(),
        &[
            "plan",
            "--sandbox",
            "--at",
            "2026-11-25",
            "--format",
            "markdown",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let html = check_comment(&md, 2);
    let rows = tables(&html);
    let deferred: usize = rows[1]
        .iter()
        .map(|r| r[1].split(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert!(
        html.contains(&format!("<b>Deferred: {deferred} tunnels</b>")),
        "{html}"
    );
    assert!(rows[1].len() < 10, "{:?}", rows[1]);
    assert!(deferred > 30, "{deferred}");
}
