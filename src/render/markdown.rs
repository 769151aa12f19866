//! The plan as a pull-request comment.
//!
//! GitHub refuses comments over 65,536 characters, and a fleet plan can be
//! far larger. The summary and any warning always stay; the action table,
//! the per-action details and the state diff are cut, in that order of
//! priority from last to first, and the comment says what was cut.

use std::fmt::Write as _;
use std::io::{self, Write};

mod calendar;
mod groups;

use super::text;
use crate::reconcile::{unmanaged, ActionKind, DryRun, Plan};

/// GitHub's limit on an issue or pull-request comment body.
pub const GITHUB_COMMENT_LIMIT: usize = 65_536;

/// Room kept for the cut notice and the closing lines.
const RESERVE: usize = 1_024;

/// Writes `plan` as markdown no longer than `GITHUB_COMMENT_LIMIT` bytes
/// (bytes are never fewer than characters, so the limit holds either way).
/// `state_diff` is the unified diff of the state file, if any.
pub fn markdown(plan: &Plan, state_diff: &str, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(render(plan, state_diff, None, GITHUB_COMMENT_LIMIT).as_bytes())
}

/// [`markdown`] with the rotation calendar drawn under the plan (see
/// `calendar`: grouped as far as needed, so the comment still fits).
pub fn markdown_with_calendar(
    plan: &Plan,
    state_diff: &str,
    calendar: &crate::calendar::Calendar,
    out: &mut dyn Write,
) -> io::Result<()> {
    out.write_all(render(plan, state_diff, Some(calendar), GITHUB_COMMENT_LIMIT).as_bytes())
}

/// psk's own sentences, where `text` marks commands and keys: those become
/// code spans, the rest is escaped. An odd number of backticks (a name
/// holding one) cannot be paired safely: then everything is escaped.
fn prose(s: &str) -> String {
    let parts: Vec<&str> = s.split('`').collect();
    if parts.len().is_multiple_of(2) {
        return esc(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 0 {
            out.push_str(&esc(part));
        } else {
            out.push_str(&code(part));
        }
    }
    out
}

/// `s` as a code span that shows it literally, in a table cell too: the
/// fence is longer than any run of backticks inside, and `|` is escaped
/// (GitHub splits cells on it even inside code).
fn code(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ").replace('|', "\\|");
    let mut fence = "`".to_string();
    while s.contains(&fence) {
        fence.push('`');
    }
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// Escapes text for a table cell or summary line: no markup, no HTML, no
/// cell breaks, whatever a tunnel name contains.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' => o.push_str("\\|"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '`' | '*' | '_' | '[' | ']' | '\\' | '#' | '~' => {
                o.push('\\');
                o.push(c);
            }
            '\n' | '\r' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A fenced block whose fence cannot be closed early by its content.
fn fenced(lang: &str, body: &str) -> String {
    let mut fence = "```".to_string();
    while body.contains(&fence) {
        fence.push('`');
    }
    format!(
        "{fence}{lang}\n{body}{}{fence}\n",
        if body.ends_with('\n') { "" } else { "\n" }
    )
}

fn symbol(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Generate => "+",
        ActionKind::Rotate => "~",
        ActionKind::Forget => "-",
        ActionKind::Reseal => "*",
        ActionKind::Redeliver => ">",
    }
}

fn dry_run_cell(d: &DryRun, kind: ActionKind) -> String {
    match d {
        DryRun::Accepted => "accepted".into(),
        DryRun::Refused(m) => format!("**refused**: {}", prose(m)),
        DryRun::NoVerdict(m) => format!("no verdict: {}", prose(m)),
        DryRun::NotRun if kind.changes_psk() => "not run (offline)".into(),
        DryRun::NotRun => "n/a".into(),
    }
}

/// The comment: the head and foot always, and of the body (table, details,
/// state diff) as much as fits in `limit`, saying what was cut.
fn render(
    plan: &Plan,
    state_diff: &str,
    calendar: Option<&crate::calendar::Calendar>,
    limit: usize,
) -> String {
    let head = head(plan);
    let foot = foot(plan, calendar);
    let mut body = Body {
        text: String::new(),
        budget: limit.saturating_sub(head.len() + foot.len() + RESERVE),
    };
    let total = plan.actions.len();
    let rows_shown = body.table(plan);
    let details_shown = if rows_shown == total {
        body.details(plan)
    } else {
        0
    };
    // The state diff, whole or not at all: half a diff misleads.
    let diff_shown = state_diff.is_empty() || (details_shown == total && body.diff(state_diff));

    let mut cut = Vec::new();
    if rows_shown < total {
        cut.push(format!("{} of {} table rows", total - rows_shown, total));
    }
    if details_shown < total {
        cut.push(format!(
            "{} of {} details blocks",
            total - details_shown,
            total
        ));
    }
    if !diff_shown {
        cut.push("the state file diff".to_string());
    }
    let mut out = head;
    if !cut.is_empty() {
        let _ = writeln!(
            out,
            "_Shortened to fit GitHub's {GITHUB_COMMENT_LIMIT}-character comment limit: omitted {}. The saved plan (`psk show-plan FILE`) or `psk plan --format json` has everything._\n",
            cut.join(", ")
        );
    }
    out.push_str(&body.text);
    out.push_str(&foot);
    out
}

/// The title, the summary line and any warning: never cut.
fn head(plan: &Plan) -> String {
    let mut head = String::from("### psk plan\n\n");
    let _ = writeln!(head, "**{}**\n", esc(&text::summary_line(plan)));
    let mut notes = Vec::new();
    if plan.targeted {
        notes.push("Limited with `--target`: other tunnels due for rotation are not shown. Targeting is for exceptional use.".to_string());
    }
    if plan.offline {
        notes.push("Offline: Cloudflare was not contacted, so changes made outside psk and dry runs were not checked.".to_string());
    }
    if plan.has_refusals() {
        notes.push(
            "Cloudflare refused at least one dry run; this plan cannot be applied as is."
                .to_string(),
        );
    }
    if plan.no_verdicts() > 0 {
        notes.push(text::no_verdict_note(plan));
    }
    if !notes.is_empty() {
        head.push_str("> [!WARNING]\n");
        for n in &notes {
            let _ = writeln!(head, "> {n}");
        }
        head.push('\n');
    }
    head
}

/// Deferred and upcoming tunnels, each in a collapsed block of groups
/// (deferred by why: the window and its opening, the site, the health of
/// a sibling; upcoming by day and policy) with counts, so a 2,000-tunnel
/// plan reads as well as a 2-tunnel one; the rotation calendar when there
/// is one; then the next tunnel due.
fn foot(plan: &Plan, cal: Option<&crate::calendar::Calendar>) -> String {
    let mut foot = String::new();
    groups::deferred(&mut foot, plan);
    path_health(&mut foot, plan);
    groups::upcoming(&mut foot, plan);
    if let Some(cal) = cal {
        foot.push_str(&calendar::block(cal));
    }
    unmanaged(&mut foot, plan);
    if let Some(line) = text::up_to_date_line(plan, esc) {
        let _ = writeln!(foot, "{line}");
    }
    foot
}

/// With `verify`: the health of the paths of the sites this plan touches,
/// at most `LISTED` of them (the JSON plan lists them all).
fn path_health(out: &mut String, plan: &Plan) {
    const LISTED: usize = 50;
    if plan.health.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "**Path health** (`verify`: the paths of the sites this plan touches):\n"
    );
    for h in plan.health.iter().take(LISTED) {
        let _ = writeln!(out, "- {}", prose(&h.describe()));
    }
    if plan.health.len() > LISTED {
        let _ = writeln!(out, "- and {} more", plan.health.len() - LISTED);
    }
    out.push('\n');
}

/// The tunnels psk.yaml leaves out, collapsed: their lines for psk.yaml,
/// at most `LISTED` (the JSON plan lists them all).
fn unmanaged(out: &mut String, plan: &Plan) {
    const LISTED: usize = 50;
    if plan.unmanaged.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<details><summary>Not in psk.yaml: {}</summary>\n",
        plan.unmanaged.len()
    );
    let heading = unmanaged::heading(plan.unmanaged.len(), plan.ignored, code);
    let _ = writeln!(out, "{heading}\n");
    let mut lines = String::new();
    for u in plan.unmanaged.iter().take(LISTED) {
        lines.push_str(&u.line());
        lines.push('\n');
    }
    if plan.unmanaged.len() > LISTED {
        let more = plan.unmanaged.len() - LISTED;
        let _ = writeln!(
            lines,
            "# and {more} more: `psk plan --format json` lists them all"
        );
    }
    out.push_str(&fenced("yaml", &lines));
    out.push_str("\n</details>\n\n");
}

/// The part of the comment that is cut to fit: each piece is added only if
/// it fits in what is left of `budget`.
struct Body {
    text: String,
    budget: usize,
}

impl Body {
    fn fits(&self, piece: &str) -> bool {
        self.text.len() + piece.len() <= self.budget
    }

    /// The table: one row per action, as many as fit. Returns the rows shown.
    fn table(&mut self, plan: &Plan) -> usize {
        let header = "| | Tunnel | Action | Reasons | Dry run |\n|---|---|---|---|---|\n";
        if plan.actions.is_empty() || header.len() > self.budget {
            return 0;
        }
        self.text.push_str(header);
        let mut shown = 0;
        for a in &plan.actions {
            let reasons: Vec<String> = a.reasons.iter().map(|r| prose(&r.describe())).collect();
            let row = format!(
                "| `{}` | {} | {} | {} | {} |\n",
                symbol(a.kind),
                esc(&a.name),
                a.kind.as_str(),
                reasons.join("; "),
                dry_run_cell(&a.dry_run, a.kind)
            );
            if !self.fits(&row) {
                break;
            }
            self.text.push_str(&row);
            shown += 1;
        }
        self.text.push('\n');
        shown
    }

    /// Details: the human block of each action, as many as fit. Returns
    /// the blocks shown.
    fn details(&mut self, plan: &Plan) -> usize {
        let mut shown = 0;
        for a in &plan.actions {
            let mut text = Vec::new();
            super::human::action_block(a, &mut text).expect("writing to a Vec");
            let text = String::from_utf8(text).expect("UTF-8");
            let block = format!(
                "<details><summary>{}: {}</summary>\n\n{}\n</details>\n\n",
                a.kind.as_str(),
                esc(&a.name),
                fenced("text", text.trim_end_matches('\n'))
            );
            if !self.fits(&block) {
                break;
            }
            self.text.push_str(&block);
            shown += 1;
        }
        shown
    }

    /// The state diff, if it fits whole.
    fn diff(&mut self, state_diff: &str) -> bool {
        let block = format!(
            "<details><summary>State file after apply (sealed PSKs shown as markers)</summary>\n\n{}\n</details>\n\n",
            fenced("diff", state_diff)
        );
        let fits = self.fits(&block);
        if fits {
            self.text.push_str(&block);
        }
        fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Action, Reason};
    use crate::tunnel::TunnelKey;

    fn plan(n: usize) -> Plan {
        Plan {
            now: "2026-11-26T00:00:00Z".parse().unwrap(),
            offline: false,
            targeted: false,
            actions: (0..n)
                .map(|i| Action {
                    name: format!("tunnel-{i:05}"),
                    key: TunnelKey::new("023e105f4ecef8ad9ca31a8372d0c353", &format!("{i:032x}")),
                    kind: ActionKind::Rotate,
                    reasons: vec![Reason::Forced],
                    policy: Some("default".into()),
                    last_rotated: None,
                    next_due: None,
                    dry_run: DryRun::Accepted,
                })
                .collect(),
            unchanged: vec![],
            deferred: vec![],
            upcoming: vec![],
            horizon: None,
            health: vec![],
            unmanaged: vec![],
            ignored: 0,
        }
    }

    #[test]
    fn escapes_markup_in_names() {
        assert_eq!(esc("a|b<script>`x`"), "a\\|b&lt;script&gt;\\`x\\`");
        assert_eq!(fenced("", "a```b\n"), "````\na```b\n````\n");
    }

    #[test]
    fn small_plan_is_whole() {
        let md = render(&plan(3), "--- a\n+++ b\n", None, GITHUB_COMMENT_LIMIT);
        assert!(md.contains("**Plan: 3 to rotate, 0 to generate, 0 to reseal, 0 to forget.**"));
        assert_eq!(md.matches("<details>").count(), 4);
        assert!(!md.contains("Shortened"));
    }

    #[test]
    fn huge_plan_is_cut_but_keeps_its_summary() {
        let diff = "+x\n".repeat(50_000);
        let md = render(&plan(2_000), &diff, None, GITHUB_COMMENT_LIMIT);
        assert!(md.len() <= GITHUB_COMMENT_LIMIT, "{}", md.len());
        assert!(md.contains("**Plan: 2000 to rotate, 0 to generate, 0 to reseal, 0 to forget.**"));
        assert!(md.contains("Shortened to fit"));
        assert!(md.contains("the state file diff"));
        // A tighter limit still keeps the summary.
        let tiny = render(&plan(2_000), &diff, None, 2_000);
        assert!(tiny.len() <= 2_000, "{}", tiny.len());
        assert!(tiny.contains("**Plan: 2000 to rotate"));
    }
}
