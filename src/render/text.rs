//! The sentences several formats share (the summary line, the no-verdict
//! warning, the headlines of deferred and upcoming tunnels), so a plan
//! reads the same in the terminal, in a pull request and in CI.

use crate::reconcile::{ActionKind, Deferred, Plan, Unchanged, Upcoming};
use crate::state::format_time;

/// The warning under a plan with dry runs that gave no verdict: what it
/// means and what to do, the same words in every format.
pub(crate) fn no_verdict_note(plan: &Plan) -> String {
    let n = plan.no_verdicts();
    format!(
        "{n} dry run{} gave no verdict: the dry run itself failed (no answer, a 5xx after every retry, or the rate limit), which says nothing about the rotation. Apply still tries {}; run `psk plan` again for a verdict first.",
        if n == 1 { "" } else { "s" },
        if n == 1 { "that tunnel" } else { "those tunnels" }
    )
}

/// The one-line summary that ends every human plan.
pub fn summary_line(plan: &Plan) -> String {
    let deferred = match plan.deferred.len() {
        0 => String::new(),
        n => format!(" {n} deferred."),
    };
    let unmanaged = match plan.unmanaged.len() {
        0 => String::new(),
        n => format!(" {n} not in psk.yaml."),
    };
    if !plan.has_changes() {
        if deferred.is_empty() && unmanaged.is_empty() {
            return "No changes. Every PSK matches psk.yaml.".to_string();
        }
        return format!("No changes.{deferred}{unmanaged}");
    }
    let redeliver = match plan.count(ActionKind::Redeliver) {
        0 => String::new(),
        n => format!(", {n} to redeliver"),
    };
    let no_verdict = match plan.no_verdicts() {
        0 => String::new(),
        1 => " 1 dry run gave no verdict.".to_string(),
        n => format!(" {n} dry runs gave no verdict."),
    };
    format!(
        "Plan: {} to rotate, {} to generate, {} to reseal, {} to forget{redeliver}.{deferred}{no_verdict}{unmanaged}",
        plan.count(ActionKind::Rotate),
        plan.count(ActionKind::Generate),
        plan.count(ActionKind::Reseal),
        plan.count(ActionKind::Forget)
    )
}

/// `fra-b: due, waiting for window (opens ...)`: the first line of a
/// deferred tunnel's block.
pub(crate) fn deferred_headline(d: &Deferred) -> String {
    let due = match d.kind {
        ActionKind::Generate => "first PSK due",
        ActionKind::Forget => "not forgotten",
        _ => "due",
    };
    format!("{}: {due}, {}", d.name, d.why.describe())
}

/// `edge-1: due 2026-12-01T00:00:00Z (policy "p"), window opens ...`.
pub(crate) fn upcoming_line(u: &Upcoming) -> String {
    let mut line = format!(
        "{}: due {} (policy \"{}\")",
        u.name,
        format_time(&u.due),
        u.policy
    );
    if u.starts != u.due {
        line.push_str(&format!(", window opens {}", format_time(&u.starts)));
    }
    line
}

/// The unchanged tunnel that falls due first (by name on a tie), for the
/// "up to date; next due" line; `None` when every tunnel has an action.
pub(crate) fn next_due(plan: &Plan) -> Option<&Unchanged> {
    plan.unchanged
        .iter()
        .min_by(|x, y| x.next_due.cmp(&y.next_due).then(x.name.cmp(&y.name)))
}

/// How many tunnels need nothing at all, and the one falling due first,
/// for the "N tunnels are up to date; next due" line. A tunnel whose PSK
/// stays but that is resealed or redelivered is not up to date: counting
/// it would print "4 tunnels are up to date" beside 4 reseals.
pub(crate) fn up_to_date(plan: &Plan) -> Option<(usize, &Unchanged)> {
    let busy: std::collections::HashSet<_> = plan.actions.iter().map(|a| &a.key).collect();
    let n = (plan.unchanged.iter())
        .filter(|u| !busy.contains(&u.key))
        .count();
    next_due(plan).map(|next| (n, next))
}

/// "3 tunnels are up to date; next due: NAME on DATE.", with the name as
/// `name` gives it (escaped for markdown, plain for a terminal).
pub(crate) fn up_to_date_line(plan: &Plan, name: impl Fn(&str) -> String) -> Option<String> {
    let (n, next) = up_to_date(plan)?;
    let due = format!(
        "next due: {} on {}.",
        name(&next.name),
        next.next_due.format("%Y-%m-%d")
    );
    Some(match n {
        0 => format!("N{}", &due[1..]),
        1 => format!("1 tunnel is up to date; {due}"),
        n => format!("{n} tunnels are up to date; {due}"),
    })
}
