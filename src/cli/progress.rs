//! How long work reports progress: apply's rotations (a bar on a terminal,
//! one line per tunnel in logs, or one JSON object per line with `--json`
//! for CI), and the refresh and dry runs before a plan ([`PlanProgress`]).

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::apply::{Event, Outcome, Report};
use crate::reconcile::Plan;
use crate::state::format_time;

pub enum Progress {
    Bar(ProgressBar),
    Lines,
    Json,
}

impl Progress {
    /// A bar only when a person watches a terminal; lines otherwise.
    pub fn new(json: bool, total: usize, is_terminal: bool) -> Progress {
        if json {
            return Progress::Json;
        }
        if is_terminal {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            return Progress::Bar(bar);
        }
        Progress::Lines
    }

    pub fn event(&mut self, event: Event<'_>) {
        match self {
            Progress::Json => {
                let v = json_event(&event);
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{v}");
                let _ = out.flush();
            }
            Progress::Lines => {
                if let Some(line) = line(&event) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            Progress::Bar(bar) => {
                match &event {
                    Event::Started(a) => bar.set_message(format!("{} {}", a.kind.as_str(), a.name)),
                    Event::Finished(..) => bar.inc(1),
                    Event::Stopping { .. } | Event::Delivered(..) | Event::Verified(..) => {}
                }
                if let Some(line) = line(&event) {
                    bar.println(line);
                }
            }
        }
    }

    /// The closing summary, in the progress's own form.
    pub fn finish(
        &mut self,
        report: &Report,
        plan: &Plan,
        state_path: &std::path::Path,
        serial: u64,
    ) {
        match self {
            Progress::Json => {
                let count = |c: &str| {
                    report
                        .results
                        .iter()
                        .filter(|(_, o)| outcome_code(o) == c)
                        .count()
                };
                let v = json!({
                    "type": "summary",
                    "rotated": count("rotated"),
                    "generated": count("generated"),
                    "forgotten": count("forgotten"),
                    "deferred": count("deferred"),
                    "failed": count("failed"),
                    "not_started": count("not_started"),
                    "replace_again": NotStarted::of(report, plan).replace_again,
                    "state": state_path.display().to_string(),
                    "serial": serial,
                });
                println!("{v}");
            }
            Progress::Bar(bar) => {
                bar.finish_and_clear();
                print_summary(report, plan, state_path, serial);
            }
            Progress::Lines => print_summary(report, plan, state_path, serial),
        }
    }
}

/// One `apply --json` progress line: the tunnel by name and ids, never a
/// PSK; messages are psk's own words.
fn json_event(event: &Event<'_>) -> serde_json::Value {
    match event {
        Event::Started(a) => json!({
            "type": "started",
            "name": a.name,
            "tunnel_id": a.key.tunnel_id,
            "account_id": a.key.account_id,
            "action": a.kind.as_str(),
        }),
        Event::Finished(a, o) => {
            let mut v = json!({
                "type": "finished",
                "name": a.name,
                "tunnel_id": a.key.tunnel_id,
                "account_id": a.key.account_id,
                "action": a.kind.as_str(),
                "outcome": outcome_code(o),
            });
            match o {
                Outcome::Generated { last_rotated } | Outcome::Rotated { last_rotated } => {
                    v["last_rotated"] = json!(format_time(last_rotated));
                }
                Outcome::Failed {
                    message,
                    interrupted,
                } => {
                    v["message"] = json!(message);
                    v["interrupted"] = json!(interrupted);
                }
                Outcome::Deferred { message, .. } | Outcome::Held { message } => {
                    v["message"] = json!(message)
                }
                Outcome::Undelivered {
                    last_rotated,
                    message,
                }
                | Outcome::Unverified {
                    last_rotated,
                    message,
                } => {
                    v["last_rotated"] = json!(format_time(last_rotated));
                    v["message"] = json!(message);
                }
                Outcome::Forgotten | Outcome::NotStarted => {}
            }
            v
        }
        Event::Stopping { in_flight } => {
            json!({"type": "stopping", "in_flight": in_flight})
        }
        Event::Verified(a, outage) => {
            let mut v = json!({
                "type": "verified",
                "name": a.name,
                "tunnel_id": a.key.tunnel_id,
            });
            if let Some(o) = outage {
                v["outage_seconds"] = json!(crate::status::outage_seconds(*o));
            }
            v
        }
        Event::Delivered(a, r) => json!({
            "type": "delivered",
            "name": a.name,
            "tunnel_id": a.key.tunnel_id,
            "ok": r.is_ok(),
            "message": r.err(),
        }),
    }
}

/// The actions an apply never started, split by whether the next plan
/// proposes them again: a due key or a drift is still there tomorrow, but
/// `--replace` lives only on the command line (or in the saved plan) that
/// asked for it.
struct NotStarted<'a> {
    next_apply: Vec<&'a str>,
    replace_again: Vec<&'a str>,
}

impl<'a> NotStarted<'a> {
    fn of(report: &'a Report, plan: &'a Plan) -> Self {
        let mut out = NotStarted {
            next_apply: Vec::new(),
            replace_again: Vec::new(),
        };
        for ((name, outcome), action) in report.results.iter().zip(&plan.actions) {
            if !matches!(outcome, Outcome::NotStarted) {
                continue;
            }
            if action.proposed_again() {
                out.next_apply.push(name);
            } else {
                out.replace_again.push(name);
            }
        }
        out
    }
}

fn print_summary(report: &Report, plan: &Plan, state_path: &std::path::Path, serial: u64) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n{}", report.summary_line());
    let not_started = NotStarted::of(report, plan);
    if !not_started.next_apply.is_empty() {
        let _ = writeln!(
            out,
            "Left for the next apply: {}.",
            not_started.next_apply.join(", ")
        );
    }
    if !not_started.replace_again.is_empty() {
        let flags: Vec<String> = not_started
            .replace_again
            .iter()
            .map(|n| format!("--replace {n}"))
            .collect();
        let _ = writeln!(
            out,
            "Not rotated: {}; --replace is not remembered, so run `psk apply {}` again.",
            not_started.replace_again.join(", "),
            flags.join(" ")
        );
    }
    let _ = writeln!(
        out,
        "State saved to {} (serial {serial}).",
        state_path.display()
    );
}

fn outcome_code(o: &Outcome) -> &'static str {
    match o {
        Outcome::Generated { .. } => "generated",
        Outcome::Rotated { .. } => "rotated",
        Outcome::Forgotten => "forgotten",
        // A held path is deferred to a later apply, as the JSON always said.
        Outcome::Deferred { .. } | Outcome::Held { .. } => "deferred",
        Outcome::Failed { .. } => "failed",
        Outcome::Undelivered { .. } => "undelivered",
        Outcome::Unverified { .. } => "unverified",
        Outcome::NotStarted => "not_started",
    }
}

/// The human line for an event, if it deserves one.
fn line(event: &Event<'_>) -> Option<String> {
    match event {
        Event::Started(_) => None,
        Event::Delivered(a, Ok(())) => Some(format!("{}: new PSK delivered to its router", a.name)),
        Event::Delivered(_, Err(_)) => None,
        Event::Verified(a, outage) => Some(match outage {
            Some(o) => format!(
                "{}: back up with its new PSK (verified), down {}",
                a.name,
                crate::status::format_outage(*o)
            ),
            None => format!("{}: back up with its new PSK (verified)", a.name),
        }),
        Event::Stopping { in_flight } => Some(format!(
            "Stopping: finishing {in_flight} rotation(s) in flight, starting no new ones."
        )),
        Event::Finished(a, o) => Some(match o {
            Outcome::Generated { last_rotated } => format!(
                "{}: generated (Cloudflare dates it {})",
                a.name,
                format_time(last_rotated)
            ),
            Outcome::Rotated { last_rotated } => format!(
                "{}: rotated (Cloudflare dates it {})",
                a.name,
                format_time(last_rotated)
            ),
            Outcome::Forgotten => format!("{}: forgotten (state only)", a.name),
            // A site held: one of its paths may be down.
            Outcome::Held { message } => format!("{}: {message}", a.name),
            Outcome::Deferred {
                message,
                command: "psk deliver",
            } => format!("{}: not delivered again: {message}", a.name),
            Outcome::Deferred { message, .. } => format!("{}: not re-sealed: {message}", a.name),
            Outcome::Failed { message, .. } => {
                format!("{}: FAILED: {}", a.name, message.replace('\n', "\n    "))
            }
            Outcome::NotStarted => format!("{}: not started", a.name),
            Outcome::Unverified { last_rotated, message } => format!(
                "{}: new PSK recorded (Cloudflare dates it {}), but DID NOT COME BACK: {message}; the new PSK stays sealed, its site stops here",
                a.name,
                format_time(last_rotated)
            ),
            Outcome::Undelivered { last_rotated, message } => format!(
                "{}: rotated (Cloudflare dates it {}), but DELIVERY FAILED: {message}; `psk deliver {}` retries",
                a.name,
                format_time(last_rotated),
                a.name
            ),
        }),
    }
}

/// What `plan` (and the plan phase of `apply`) shows while it refreshes
/// and dry-runs, on stderr so stdout stays the plan: a bar on a terminal,
/// a few plain lines otherwise (one per account, the dry runs' start, each
/// quarter of a long run, their end), nothing when quiet. Counts, not
/// names, in the lines: answers arrive in any order, the lines do not.
pub struct PlanProgress {
    show: Show,
    /// Dry runs: (answered, total).
    count: std::sync::Mutex<(usize, usize)>,
}

enum Show {
    Bar(ProgressBar),
    Lines,
    Quiet,
}

impl PlanProgress {
    /// A bar when a person watches stderr (and no log lines would tear it),
    /// lines otherwise, nothing when `quiet`.
    pub fn new(quiet: bool) -> PlanProgress {
        let logging = tracing::level_filters::LevelFilter::current()
            != tracing::level_filters::LevelFilter::OFF;
        let show = if quiet {
            Show::Quiet
        } else if std::io::stderr().is_terminal() && !logging {
            let bar = ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            Show::Bar(bar)
        } else {
            Show::Lines
        };
        PlanProgress {
            show,
            count: std::sync::Mutex::new((0, 0)),
        }
    }

    /// Lines only: the plain form, as in a CI log.
    #[cfg(test)]
    fn lines() -> PlanProgress {
        PlanProgress {
            show: Show::Lines,
            count: std::sync::Mutex::new((0, 0)),
        }
    }

    fn line(&self, text: &str) {
        if matches!(self.show, Show::Lines) {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{text}");
        }
    }

    /// The bar goes before the plan is printed.
    pub fn finish(&self) {
        if let Show::Bar(bar) = &self.show {
            bar.finish_and_clear();
        }
    }
}

impl Drop for PlanProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The line for `done` of `total` dry runs answered, at the quarters of a
/// run of 100 or more and at its end.
fn dry_run_line(done: usize, total: usize) -> Option<String> {
    let quarter = total >= 100 && (1..4).any(|q| done == total * q / 4);
    (done == total || quarter).then(|| format!("Dry runs: {done} of {total} answered."))
}

impl crate::remote::Watch for PlanProgress {
    fn listing(&self, account: &str) {
        if let Show::Bar(bar) = &self.show {
            bar.set_message(format!("listing the IPsec tunnels of account {account}"));
        }
    }

    fn listed(&self, account: &str, tunnels: usize) {
        self.line(&format!(
            "Refreshing: account {account} lists {tunnels} IPsec tunnel{}.",
            if tunnels == 1 { "" } else { "s" }
        ));
    }

    fn dry_runs(&self, total: usize) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) = (0, total);
        if total == 0 {
            return;
        }
        match &self.show {
            Show::Bar(bar) => {
                bar.set_length(total as u64);
                bar.set_position(0);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} dry runs [{bar:30}] {pos}/{len} {wide_msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
            }
            Show::Lines => self.line(&format!(
                "Dry-running {total} PSK change{} with Cloudflare (validate_only)...",
                if total == 1 { "" } else { "s" }
            )),
            Show::Quiet => {}
        }
    }

    fn answered(&self, name: &str) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        count.0 += 1;
        match &self.show {
            Show::Bar(bar) => {
                bar.inc(1);
                bar.set_message(name.to_string());
            }
            Show::Lines => {
                if let Some(l) = dry_run_line(count.0, count.1) {
                    self.line(&l);
                }
            }
            Show::Quiet => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::Watch as _;

    #[test]
    fn plain_lines_at_the_quarters_of_a_long_run_and_at_its_end() {
        let shown: Vec<usize> = (1..=200)
            .filter(|d| dry_run_line(*d, 200).is_some())
            .collect();
        assert_eq!(shown, [50, 100, 150, 200]);
        let shown: Vec<usize> = (1..=7).filter(|d| dry_run_line(*d, 7).is_some()).collect();
        assert_eq!(shown, [7]);
        // Counting is safe from any order of answers.
        let p = PlanProgress::lines();
        p.dry_runs(3);
        for n in ["c", "a", "b"] {
            p.answered(n);
        }
        assert_eq!(*p.count.lock().unwrap(), (3, 3));
    }
}
