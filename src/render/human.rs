//! The plan for a terminal or a CI log, Terraform-style: a legend, one
//! block per action, then what waits, what falls due soon and the summary.
//! Colour only marks what the words already say, so the plain text (what
//! CI logs and `markdown`'s details show) loses nothing.

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};

use super::text::{
    deferred_headline, no_verdict_note, summary_line, up_to_date_line, upcoming_line,
};
use crate::reconcile::unmanaged;
use crate::reconcile::{Action, ActionKind, Deferred, DryRun, Plan, Reason};
use crate::state::format_time;
use crate::tunnel::TunnelKey;

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
        ActionKind::Generate if a.replaces_unknown_key() => format!(
            "{} will get a new PSK, replacing a live one psk does not hold",
            a.name
        ),
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

/// Terraform-style text for a terminal or a CI log, without colour.
pub fn human(plan: &Plan, out: &mut dyn Write) -> io::Result<()> {
    human_styled(plan, out, false)
}

/// [`human`], in colour when `color` is true.
pub fn human_styled(plan: &Plan, out: &mut dyn Write, color: bool) -> io::Result<()> {
    let p = Paint(color);
    scope_notes(plan, out, p)?;
    if plan.has_changes() {
        legend(plan, out, p)?;
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
    if !plan.health.is_empty() {
        writeln!(
            out,
            "Health of the paths of the sites this plan touches (verify):"
        )?;
        for h in &plan.health {
            writeln!(out, "  {}", h.describe())?;
        }
        writeln!(out)?;
    }
    if !plan.upcoming.is_empty() {
        let horizon = plan
            .horizon
            .map_or_else(|| "0s".to_string(), |s| s.to_string());
        writeln!(
            out,
            "Falling due within {horizon} (information, not actions):"
        )?;
        for u in &plan.upcoming {
            writeln!(out, "  {}", upcoming_line(u))?;
        }
        writeln!(out)?;
    }
    if !plan.unmanaged.is_empty() {
        let (n, ignored) = (plan.unmanaged.len(), plan.ignored);
        let heading = unmanaged::heading(n, ignored, |k| format!("`{k}`"));
        writeln!(out, "{heading}")?;
        for u in &plan.unmanaged {
            writeln!(out, "  {}", u.line())?;
        }
        writeln!(out)?;
    }
    if let Some(line) = up_to_date_line(plan, str::to_string) {
        writeln!(out, "{line}\n")?;
    }
    closing(plan, out, p)
}

/// What limits the whole plan, before anything else: `--target`, offline.
fn scope_notes(plan: &Plan, out: &mut dyn Write, p: Paint) -> io::Result<()> {
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
    Ok(())
}

/// The symbols of the kinds in this plan, and what NO VERDICT means when
/// one shows.
fn legend(plan: &Plan, out: &mut dyn Write, p: Paint) -> io::Result<()> {
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
    writeln!(out)
}

/// The summary line, then what the dry runs mean for apply.
fn closing(plan: &Plan, out: &mut dyn Write, p: Paint) -> io::Result<()> {
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

/// One deferred tunnel as text, like an action block without a symbol:
/// nothing happens to it in this apply.
fn deferred_block(d: &Deferred, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "  # {}", deferred_headline(d))?;
    because(&d.reasons, out)?;
    ids(&d.key, out)?;
    if !d.policy.is_empty() {
        writeln!(out, "      policy:       {}", d.policy)?;
    }
    writeln!(out)
}

/// A block's reasons, the first after "because".
fn because(reasons: &[Reason], out: &mut dyn Write) -> io::Result<()> {
    for (i, r) in reasons.iter().enumerate() {
        let lead = if i == 0 { "because" } else { "and" };
        writeln!(out, "  # ({lead} {})", r.describe())?;
    }
    Ok(())
}

fn ids(key: &TunnelKey, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "      tunnel_id:    {}", key.tunnel_id)?;
    writeln!(out, "      account_id:   {}", key.account_id)
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
    because(&a.reasons, out)?;
    let sym = p.paint(kind_style(a.kind), &symbol(a.kind).to_string());
    writeln!(out, "  {sym} {} \"{}\"", a.kind.as_str(), a.name)?;
    ids(&a.key, out)?;
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
