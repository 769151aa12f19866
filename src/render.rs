//! Printers for a plan: one model, several formats.
//!
//! The plan is pasted into pull requests, so every format is a pure
//! function of the plan: same plan, same bytes. Nothing here can print a
//! PSK, because a plan never holds one.

pub mod diff;
pub mod markdown;

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use crate::reconcile::{Action, ActionKind, Deferral, Deferred, DryRun, Plan, Reason, Upcoming};
use crate::state::format_time;

/// Whether human output may use ANSI colour: only on a terminal, and never
/// with `--no-color` or a non-empty `NO_COLOR` (no-color.org).
pub fn use_color(no_color_flag: bool, is_terminal: bool) -> bool {
    let env_off = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    is_terminal && !no_color_flag && !env_off
}

/// Applies a style when colour is on; plain text otherwise.
#[derive(Debug, Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn paint(self, style: Style, text: &str) -> String {
        if self.0 {
            format!("{style}{text}{style:#}")
        } else {
            text.to_string()
        }
    }
}

fn kind_style(kind: ActionKind) -> Style {
    match kind {
        ActionKind::Generate => AnsiColor::Green.on_default(),
        ActionKind::Rotate => AnsiColor::Yellow.on_default(),
        ActionKind::Forget => AnsiColor::Red.on_default(),
        ActionKind::Reseal => AnsiColor::Cyan.on_default(),
        ActionKind::Redeliver => AnsiColor::Magenta.on_default(),
    }
}

fn no_verdict_style() -> Style {
    AnsiColor::Yellow.on_default()
}

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

/// The JSON plan format's version; only additive changes within a major.
/// 1.1 added `dry_run.status` `no_verdict` and `summary.no_verdict`.
pub const JSON_FORMAT_VERSION: &str = "1.1";

fn symbol(kind: ActionKind) -> char {
    match kind {
        ActionKind::Generate => '+',
        ActionKind::Rotate => '~',
        ActionKind::Forget => '-',
        ActionKind::Reseal => '*',
        ActionKind::Redeliver => '>',
    }
}

fn headline(a: &Action) -> String {
    match a.kind {
        ActionKind::Generate => format!("{} will get its first PSK from psk", a.name),
        ActionKind::Rotate => format!("{} will be rotated", a.name),
        ActionKind::Forget => format!("{} will be forgotten", a.name),
        ActionKind::Redeliver => format!(
            "{} will get its PSK delivered again by `psk deliver {}`",
            a.name, a.name
        ),
        ActionKind::Reseal => format!(
            "{} will be re-sealed to psk.yaml's recipients by `psk reseal`",
            a.name
        ),
    }
}

/// The one-line summary that ends every human plan.
pub fn summary_line(plan: &Plan) -> String {
    let deferred = match plan.deferred.len() {
        0 => String::new(),
        n => format!(" {n} deferred."),
    };
    if !plan.has_changes() {
        if deferred.is_empty() {
            return "No changes. Every PSK matches psk.yaml.".to_string();
        }
        return format!("No changes.{deferred}");
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
        "Plan: {} to rotate, {} to generate, {} to reseal, {} to forget{redeliver}.{deferred}{no_verdict}",
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
        _ => "due",
    };
    format!("{}: {due}, {}", d.name, d.why.describe())
}

/// One deferred tunnel as text, like an action block without a symbol:
/// nothing happens to it in this apply.
pub(crate) fn deferred_block(d: &Deferred, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "  # {}", deferred_headline(d))?;
    for (i, r) in d.reasons.iter().enumerate() {
        let lead = if i == 0 { "because" } else { "and" };
        writeln!(out, "  # ({lead} {})", r.describe())?;
    }
    writeln!(out, "      tunnel_id:    {}", d.key.tunnel_id)?;
    writeln!(out, "      account_id:   {}", d.key.account_id)?;
    writeln!(out, "      policy:       {}", d.policy)?;
    writeln!(out)
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

fn horizon_text(plan: &Plan) -> String {
    plan.horizon
        .map_or_else(|| "0s".to_string(), |s| s.to_string())
}

/// Terraform-style text for a terminal or a CI log, without colour.
pub fn human(plan: &Plan, out: &mut dyn Write) -> io::Result<()> {
    human_styled(plan, out, false)
}

/// [`human`], in colour when `color` is true.
pub fn human_styled(plan: &Plan, out: &mut dyn Write, color: bool) -> io::Result<()> {
    let p = Paint(color);
    if plan.targeted {
        writeln!(
            out,
            "{} this plan is limited with --target and may be incomplete: other tunnels due for rotation are not shown. Targeting is for exceptional use.\n",
            p.paint(AnsiColor::Yellow.on_default().bold(), "Warning:")
        )?;
    }
    if plan.offline {
        writeln!(
            out,
            "Offline: Cloudflare was not contacted, so changes made outside psk and dry runs were not checked.\n"
        )?;
    }
    if plan.has_changes() {
        let mut kinds: Vec<ActionKind> = plan.actions.iter().map(|a| a.kind).collect();
        kinds.sort();
        kinds.dedup();
        let legend: Vec<String> = kinds
            .iter()
            .map(|k| {
                let sym = p.paint(kind_style(*k), &symbol(*k).to_string());
                format!("{sym} {}", k.as_str())
            })
            .collect();
        writeln!(out, "Symbols: {}", legend.join(", "))?;
        if plan.no_verdicts() > 0 {
            writeln!(
                out,
                "Dry runs: {} means the dry run itself failed (no answer, a 5xx or the rate limit); a warning, not a refusal",
                p.paint(no_verdict_style(), "NO VERDICT")
            )?;
        }
        writeln!(out)?;
        writeln!(out, "psk will perform the following actions:\n")?;
        for a in &plan.actions {
            action_block_styled(a, out, p)?;
        }
    }
    if !plan.deferred.is_empty() {
        writeln!(out, "psk will not change these in this apply:\n")?;
        for d in &plan.deferred {
            deferred_block(d, out)?;
        }
    }
    if !plan.upcoming.is_empty() {
        writeln!(
            out,
            "Falling due within {} (information, not actions):",
            horizon_text(plan)
        )?;
        for u in &plan.upcoming {
            writeln!(out, "  {}", upcoming_line(u))?;
        }
        writeln!(out)?;
    }
    if !plan.unchanged.is_empty() {
        let next = plan
            .unchanged
            .iter()
            .min_by(|x, y| x.next_due.cmp(&y.next_due).then(x.name.cmp(&y.name)))
            .expect("non-empty");
        let n = plan.unchanged.len();
        writeln!(
            out,
            "{n} tunnel{} up to date; next due: {} on {}.\n",
            if n == 1 { " is" } else { "s are" },
            next.name,
            next.next_due.format("%Y-%m-%d")
        )?;
    }
    writeln!(out, "{}", p.paint(Style::new().bold(), &summary_line(plan)))?;
    if plan.has_refusals() {
        writeln!(
            out,
            "\nCloudflare refused at least one dry run (shown above); apply would fail for those tunnels."
        )?;
    }
    if plan.no_verdicts() > 0 {
        writeln!(
            out,
            "\n{} {}",
            p.paint(no_verdict_style().bold(), "Warning:"),
            no_verdict_note(plan)
        )?;
    }
    Ok(())
}

/// One action as text, as in the human plan (used by markdown details too).
pub(crate) fn action_block(a: &Action, out: &mut dyn Write) -> io::Result<()> {
    action_block_styled(a, out, Paint(false))
}

fn action_block_styled(a: &Action, out: &mut dyn Write, p: Paint) -> io::Result<()> {
    writeln!(
        out,
        "  {}",
        p.paint(Style::new().bold(), &format!("# {}", headline(a)))
    )?;
    for (i, r) in a.reasons.iter().enumerate() {
        let lead = if i == 0 { "because" } else { "and" };
        writeln!(out, "  # ({lead} {})", r.describe())?;
    }
    let sym = p.paint(kind_style(a.kind), &symbol(a.kind).to_string());
    writeln!(out, "  {sym} {} \"{}\"", a.kind.as_str(), a.name)?;
    writeln!(out, "      tunnel_id:    {}", a.key.tunnel_id)?;
    writeln!(out, "      account_id:   {}", a.key.account_id)?;
    if let Some(policy) = &a.policy {
        writeln!(out, "      policy:       {policy}")?;
    }
    if let Some(t) = &a.last_rotated {
        writeln!(out, "      last_rotated: {}", format_time(t))?;
    }
    match &a.dry_run {
        DryRun::NotRun if a.kind.changes_psk() => {
            writeln!(out, "      dry run:      not run (offline)")?
        }
        DryRun::NotRun => {}
        DryRun::Accepted => writeln!(
            out,
            "      dry run:      accepted by Cloudflare (validate_only)"
        )?,
        DryRun::Refused(m) => writeln!(
            out,
            "      dry run:      {} {m}",
            p.paint(AnsiColor::Red.on_default().bold(), "REFUSED:")
        )?,
        DryRun::NoVerdict(m) => writeln!(
            out,
            "      dry run:      {} {m}",
            p.paint(no_verdict_style().bold(), "NO VERDICT:")
        )?,
    }
    writeln!(out)
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    format_version: &'static str,
    evaluated_at: String,
    offline: bool,
    targeted: bool,
    applyable: bool,
    actions: Vec<JsonAction<'a>>,
    unchanged: Vec<JsonUnchanged<'a>>,
    deferred: Vec<JsonDeferred<'a>>,
    forecast_horizon: Option<String>,
    upcoming: Vec<JsonUpcoming<'a>>,
    summary: JsonSummary,
}

#[derive(Serialize)]
struct JsonDeferred<'a> {
    name: &'a str,
    tunnel_id: &'a str,
    account_id: &'a str,
    action: &'static str,
    reasons: Vec<JsonReason>,
    policy: &'a str,
    deferred: JsonDeferral<'a>,
}

#[derive(Serialize)]
struct JsonDeferral<'a> {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    opens: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotating: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonUpcoming<'a> {
    name: &'a str,
    tunnel_id: &'a str,
    account_id: &'a str,
    policy: &'a str,
    due: String,
    starts: String,
}

#[derive(Serialize)]
struct JsonAction<'a> {
    name: &'a str,
    tunnel_id: &'a str,
    account_id: &'a str,
    action: &'static str,
    reasons: Vec<JsonReason>,
    policy: Option<&'a str>,
    last_rotated: Option<String>,
    next_due: Option<String>,
    dry_run: JsonDryRun<'a>,
}

#[derive(Serialize)]
struct JsonReason {
    code: &'static str,
    message: String,
}

/// Reasons as JSON, the same for actions and for deferred tunnels.
fn json_reasons(reasons: &[Reason]) -> Vec<JsonReason> {
    reasons
        .iter()
        .map(|r| JsonReason {
            code: r.code(),
            message: r.describe(),
        })
        .collect()
}

#[derive(Serialize)]
struct JsonDryRun<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonUnchanged<'a> {
    name: &'a str,
    tunnel_id: &'a str,
    account_id: &'a str,
    next_due: String,
}

#[derive(Serialize)]
struct JsonSummary {
    rotate: usize,
    generate: usize,
    forget: usize,
    reseal: usize,
    redeliver: usize,
    unchanged: usize,
    deferred: usize,
    upcoming: usize,
    /// Dry runs that failed in passing (since 1.1).
    no_verdict: usize,
}

/// Machine-readable plan; see README "JSON plan format".
pub fn json(plan: &Plan, out: &mut dyn Write) -> io::Result<()> {
    let doc = JsonPlan {
        format_version: JSON_FORMAT_VERSION,
        evaluated_at: format_time(&plan.now),
        offline: plan.offline,
        targeted: plan.targeted,
        applyable: !plan.has_refusals(),
        actions: plan
            .actions
            .iter()
            .map(|a| JsonAction {
                name: &a.name,
                tunnel_id: &a.key.tunnel_id,
                account_id: &a.key.account_id,
                action: a.kind.as_str(),
                reasons: json_reasons(&a.reasons),
                policy: a.policy.as_deref(),
                last_rotated: a.last_rotated.as_ref().map(format_time),
                next_due: a.next_due.as_ref().map(format_time),
                dry_run: match &a.dry_run {
                    DryRun::NotRun => JsonDryRun {
                        status: "not_run",
                        message: None,
                    },
                    DryRun::Accepted => JsonDryRun {
                        status: "accepted",
                        message: None,
                    },
                    DryRun::Refused(m) => JsonDryRun {
                        status: "refused",
                        message: Some(m),
                    },
                    DryRun::NoVerdict(m) => JsonDryRun {
                        status: "no_verdict",
                        message: Some(m),
                    },
                },
            })
            .collect(),
        unchanged: plan
            .unchanged
            .iter()
            .map(|u| JsonUnchanged {
                name: &u.name,
                tunnel_id: &u.key.tunnel_id,
                account_id: &u.key.account_id,
                next_due: format_time(&u.next_due),
            })
            .collect(),
        deferred: plan
            .deferred
            .iter()
            .map(|d| JsonDeferred {
                name: &d.name,
                tunnel_id: &d.key.tunnel_id,
                account_id: &d.key.account_id,
                action: d.kind.as_str(),
                reasons: json_reasons(&d.reasons),
                policy: &d.policy,
                deferred: match &d.why {
                    Deferral::Window { opens, .. } => JsonDeferral {
                        code: d.why.code(),
                        message: d.why.describe(),
                        opens: Some(format_time(opens)),
                        site: None,
                        rotating: None,
                    },
                    Deferral::Site { site, rotating } => JsonDeferral {
                        code: d.why.code(),
                        message: d.why.describe(),
                        opens: None,
                        site: Some(site),
                        rotating: Some(rotating),
                    },
                },
            })
            .collect(),
        forecast_horizon: plan.horizon.map(|h| h.to_string()),
        upcoming: plan
            .upcoming
            .iter()
            .map(|u| JsonUpcoming {
                name: &u.name,
                tunnel_id: &u.key.tunnel_id,
                account_id: &u.key.account_id,
                policy: &u.policy,
                due: format_time(&u.due),
                starts: format_time(&u.starts),
            })
            .collect(),
        summary: JsonSummary {
            rotate: plan.count(ActionKind::Rotate),
            generate: plan.count(ActionKind::Generate),
            forget: plan.count(ActionKind::Forget),
            reseal: plan.count(ActionKind::Reseal),
            redeliver: plan.count(ActionKind::Redeliver),
            unchanged: plan.unchanged.len(),
            deferred: plan.deferred.len(),
            upcoming: plan.upcoming.len(),
            no_verdict: plan.no_verdicts(),
        },
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}
