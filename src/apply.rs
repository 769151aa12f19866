//! The executor: carries out a plan one tunnel at a time, never losing a key.
//!
//! For each rotation the order is fixed: record an intent and make it
//! durable, ask Cloudflare for the new PSK, seal it, record it durably. A
//! crash between any two steps leaves either the old sealed PSK (the call
//! never happened) or an intent the next plan turns into a new rotation (the
//! key on the edge is unknown). Every change is made durable before the
//! next step: appended to the state journal and fsynced, then folded into the
//! state file once at the end (see `state::Journal`), so N tunnels cost O(N)
//! bytes of writes.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::cloudflare::{ApiError, Client};
use crate::config::Config;
use crate::reconcile::{Action, ActionKind, Plan};
use crate::seal;
use crate::state::{Intent, Journal, State, StateError};

/// What happened to one planned action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Generated {
        last_rotated: DateTime<Utc>,
    },
    Rotated {
        last_rotated: DateTime<Utc>,
    },
    Forgotten,
    /// Left for another command: apply holds no identity, so it cannot
    /// open a sealed PSK to re-seal it (`psk reseal` does that).
    Deferred {
        message: String,
    },
    Failed {
        message: String,
        interrupted: bool,
    },
}

#[derive(Debug, Default)]
pub struct Report {
    pub results: Vec<(String, Outcome)>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.results
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed { .. }))
            .count()
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|(_, o)| f(o)).count()
    }

    pub fn summary_line(&self) -> String {
        let rotated = self.count(|o| matches!(o, Outcome::Rotated { .. }));
        let generated = self.count(|o| matches!(o, Outcome::Generated { .. }));
        let forgotten = self.count(|o| matches!(o, Outcome::Forgotten));
        let deferred = match self.count(|o| matches!(o, Outcome::Deferred { .. })) {
            0 => String::new(),
            n => format!(", {n} left for `psk reseal`"),
        };
        let failed = self.failed();
        let head = if failed == 0 {
            "Apply complete!"
        } else {
            "Apply finished with errors."
        };
        format!("{head} {rotated} rotated, {generated} generated, {forgotten} forgotten, {failed} failed{deferred}.")
    }
}

/// Why an apply had to stop before finishing its plan.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
}

/// Carries out `plan`, making each change to `state` durable in the journal
/// beside `state_path` as it happens, and folding it into the state at the
/// end. Returning early with an error leaves the journal, which the next
/// load replays.
/// `on_result` is called as each action finishes, for progress output.
pub async fn apply(
    config: &Config,
    plan: &Plan,
    state: &mut State,
    state_path: &Path,
    client: &Client,
    mut on_result: impl FnMut(&Action, &Outcome),
) -> Result<Report, ApplyError> {
    let mut report = Report::default();
    let mut journal = Journal::open(state_path, state)?;
    for action in &plan.actions {
        let outcome = match action.kind {
            ActionKind::Forget => {
                state.tunnels.remove(&action.key.to_string());
                journal.record(state, &action.key)?;
                Outcome::Forgotten
            }
            ActionKind::Generate | ActionKind::Rotate => {
                rotate(config, action, state, &mut journal, client).await?
            }
            ActionKind::Reseal => Outcome::Deferred {
                message: "re-sealing needs an identity, which apply never holds; run `psk reseal`"
                    .into(),
            },
        };
        on_result(action, &outcome);
        report.results.push((action.name.clone(), outcome));
    }
    journal.finish(state)?;
    Ok(report)
}

async fn rotate(
    config: &Config,
    action: &Action,
    state: &mut State,
    journal: &mut Journal,
    client: &Client,
) -> Result<Outcome, ApplyError> {
    let key = &action.key;
    state.entry(key, &action.name).intent = Some(Intent {
        operation: "psk_generate".into(),
        started: Utc::now(),
    });
    journal.record(state, key)?;

    let generated = client
        .psk_generate(&key.account_id, &key.tunnel_id, false)
        .await;
    let generated = match generated {
        Ok(Some(g)) => g,
        Ok(None) => unreachable!("a real psk_generate returns a PSK or an error"),
        Err(e) => return settle_failure(e, action, state, journal),
    };
    let sealed = match seal::seal(&generated.psk, &config.recipients) {
        Ok(s) => s,
        Err(e) => {
            // The intent stays: the edge has a key psk could not keep.
            return Ok(Outcome::Failed {
                message: format!("the new PSK could not be sealed: {e}"),
                interrupted: true,
            });
        }
    };
    drop(generated.psk);
    let last_rotated = generated.last_generated_on.unwrap_or_else(Utc::now);
    let rec = state.entry(key, &action.name);
    rec.psk = Some(sealed);
    rec.last_rotated = Some(last_rotated);
    rec.intent = None;
    journal.record(state, key)?;
    Ok(match action.kind {
        ActionKind::Generate => Outcome::Generated { last_rotated },
        _ => Outcome::Rotated { last_rotated },
    })
}

/// After a failed call: if Cloudflare surely did nothing, the intent is
/// withdrawn; if it may have acted, the intent stays for the next plan.
fn settle_failure(
    e: ApiError,
    action: &Action,
    state: &mut State,
    journal: &mut Journal,
) -> Result<Outcome, ApplyError> {
    let interrupted = e.outcome_unknown();
    if !interrupted {
        let k = action.key.to_string();
        let empty = match state.tunnels.get_mut(&k) {
            Some(rec) => {
                rec.intent = None;
                rec.psk.is_none()
            }
            None => false,
        };
        if empty {
            // A first generation that Cloudflare refused leaves nothing to keep.
            state.tunnels.remove(&k);
        }
        journal.record(state, &action.key)?;
    }
    let mut message = e.to_string();
    if interrupted {
        message.push_str(
            "\nCloudflare may have changed the PSK; the next plan rotates this tunnel again",
        );
    }
    Ok(Outcome::Failed {
        message,
        interrupted,
    })
}
