//! The executor: carries out a plan, never losing a key.
//!
//! For each rotation the order is fixed: record an intent (or, for a key
//! psk makes, the sealed key as pending) and make it durable, ask
//! Cloudflare to change the PSK, seal and record the answer durably. A
//! crash between any two steps leaves either the old sealed PSK (the call
//! never happened) or an intent or pending key that the next plan turns
//! into a new rotation (the key on the edge is unknown). Every change is
//! made durable before anything depends on it: committed to the state
//! journal (one fsync for all the changes of one turn), then folded into the
//! state file once at the end (see `state::Journal`), so N tunnels cost O(N)
//! bytes of writes and far fewer than 2N fsyncs.
//!
//! One executor, two paths that share `Run` (the plan, the state and its
//! journal, the outcomes) and one `site` gate:
//! - `bulk`: keys psk makes itself (`generator: local`) go out first, in
//!   bulk requests, in rounds of at most one tunnel per site;
//! - `stream`: everything else, `psk_generate` rotations streaming
//!   `--parallelism` at a time, forgets, and what is left for other commands.
//!
//! Every change to a tunnel's record goes through the transitions on
//! `state::TunnelState`, the same ones `import` and `reseal` use. `psk
//! deliver` and `psk verify` are entry points of this executor
//! (`redeliver`, `reverify`): the same journal, and the same site rule
//! (`reconcile::down`), so no command goes around it.

mod bulk;
pub mod redeliver;
pub mod reverify;
mod room;
mod site;
mod stream;
mod unwritable;
mod verify;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::cloudflare::Client;
use crate::config::{Config, Tunnel};
use crate::policy::{Deliver, Generator, Verify};
use crate::reconcile::{Action, ActionKind, Plan, Reason};
use crate::seal::Psk;
use crate::state::{Journal, Lock, State, StateError};
use crate::tunnel::TunnelKey;
pub use unwritable::Unwritable;

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
    /// open a sealed PSK to re-seal it (`psk reseal` does that) or hand it
    /// to its router again (`psk deliver`). `command` is that command.
    Deferred {
        message: String,
        command: &'static str,
    },
    /// Not started, to keep a site up: another path of the site may be
    /// down (or `verify`'s preflight found one not healthy).
    Held {
        message: String,
    },
    Failed {
        message: String,
        interrupted: bool,
    },
    /// Not started because the apply was stopped (Ctrl-C) first.
    NotStarted,
    /// The new PSK is recorded, but the `deliver` command failed: the
    /// router may still hold the old one. `psk deliver NAME` retries.
    Undelivered {
        last_rotated: DateTime<Utc>,
        message: String,
    },
    /// The new PSK is recorded (and delivered), but the tunnel did not
    /// come back within `verify.timeout`: its site stops, the key stays
    /// sealed, nothing is rolled back.
    Unverified {
        last_rotated: DateTime<Utc>,
        message: String,
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
            .filter(|(_, o)| {
                matches!(
                    o,
                    Outcome::Failed { .. }
                        | Outcome::Undelivered { .. }
                        | Outcome::Unverified { .. }
                )
            })
            .count()
    }

    pub fn not_started(&self) -> usize {
        self.count(|o| matches!(o, Outcome::NotStarted))
    }

    /// Whether the exit code must say something went wrong.
    pub fn is_failure(&self) -> bool {
        self.failed() > 0 || self.not_started() > 0
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|(_, o)| f(o)).count()
    }

    pub fn summary_line(&self) -> String {
        let rotated = self.count(|o| matches!(o, Outcome::Rotated { .. }));
        let generated = self.count(|o| matches!(o, Outcome::Generated { .. }));
        let undelivered = match self.count(|o| matches!(o, Outcome::Undelivered { .. })) {
            0 => String::new(),
            n => format!(" ({n} of the failures: new PSK recorded, delivery failed)"),
        };
        let unverified = match self.count(|o| matches!(o, Outcome::Unverified { .. })) {
            0 => String::new(),
            n => format!(" ({n} of the failures: new PSK recorded, tunnel did not come back)"),
        };
        let forgotten = self.count(|o| matches!(o, Outcome::Forgotten));
        // Work left for a command that holds an identity, by command.
        let mut deferred = String::new();
        for command in ["psk deliver", "psk reseal"] {
            let n =
                self.count(|o| matches!(o, Outcome::Deferred { command: c, .. } if *c == command));
            if n > 0 {
                deferred.push_str(&format!(", {n} left for `{command}`"));
            }
        }
        let deferred = match self.count(|o| matches!(o, Outcome::Held { .. })) {
            0 => deferred,
            n => format!("{deferred}, {n} held back to keep a site up"),
        };
        let failed = self.failed();
        let not_started = match self.not_started() {
            0 => String::new(),
            n => format!(", {n} not started"),
        };
        let head = if self.not_started() > 0 {
            "Apply stopped."
        } else if failed == 0 {
            "Apply complete!"
        } else {
            "Apply finished with errors."
        };
        format!("{head} {rotated} rotated, {generated} generated, {forgotten} forgotten, {failed} failed{undelivered}{unverified}{deferred}{not_started}.")
    }
}

/// Why an apply had to stop before finishing its plan.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
    /// The state stopped taking writes mid-apply (see `unwritable`).
    #[error(transparent)]
    Unwritable(#[from] Unwritable),
}

/// Asks a running apply to stop starting new work (Ctrl-C). Work already
/// in flight finishes and is recorded, so the state stays consistent.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Stop {
    pub fn request(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        let notified = self.notify.notified();
        if self.requested() {
            return;
        }
        notified.await;
    }
}

/// How the executor runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rotations in flight at once (tunnels of one site never overlap).
    pub parallelism: usize,
    pub stop: Stop,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parallelism: crate::cloudflare::DEFAULT_PARALLELISM,
            stop: Stop::default(),
        }
    }
}

/// Progress, as it happens, for the terminal, logs or `--json`.
#[derive(Debug)]
pub enum Event<'a> {
    Started(&'a Action),
    Finished(&'a Action, &'a Outcome),
    /// A stop was requested; `in_flight` rotations are being finished.
    Stopping {
        in_flight: usize,
    },
    /// A `deliver` command finished for this action's new PSK.
    Delivered(&'a Action, Result<(), &'a str>),
    /// `verify` showed this action's tunnel back up with its new PSK, this
    /// long after the edge took it (the rotation's outage).
    Verified(&'a Action, Option<std::time::Duration>),
}

/// Carries out `plan`, making each change to `state` durable in the journal
/// of the state `lock` holds before anything depends on it, and folding the
/// journal into the state at the end. Returning early with an error leaves
/// the journal, which the next load replays.
///
/// Locally made keys go first, in bulk (`bulk`); then up to
/// `options.parallelism` rotations stream at once (`stream`). Never two
/// of one site change at once, and only this task touches the state.
pub async fn apply(
    config: &Config,
    plan: &Plan,
    state: &mut State,
    lock: &Lock,
    client: &Client,
    options: &Options,
    mut on_event: impl FnMut(Event<'_>),
) -> Result<Report, ApplyError> {
    let mut journal = lock.journal(state)?;
    let room = room::needed(config, plan, state);
    if room > 0 {
        journal.reserve(room)?;
    }
    // New keys are sealed to psk.yaml's recipients; a record says so when
    // the state's header (not yet re-sealed) names others.
    let sealed_to = state.sealed_to_for(&config.recipient_fingerprints());
    let mut run = Run {
        config,
        plan,
        state,
        journal,
        client,
        by_key: config.tunnels_by_key(),
        sites: site::SiteGate::new(config),
        watcher: verify::Watcher::new(client),
        sealed_to,
        outcomes: vec![None; plan.actions.len()],
        edge_took: HashMap::new(),
        options,
        on_event: &mut on_event,
    };
    // `verify`'s preflight, now: a saved plan may be old, and a path whose
    // site's health only a probe can show was not checked by the plan.
    let mut held = verify::preflight_health(client, config, plan).await;
    held.extend(verify::preflight_probes(config, plan, run.parallelism()).await);
    for (idx, outcome) in held {
        run.finish(idx, outcome);
    }
    let (local, streamed): (Vec<usize>, Vec<usize>) = (0..plan.actions.len())
        .filter(|&i| run.outcomes[i].is_none())
        .partition(|&i| {
            let a = &plan.actions[i];
            a.kind.changes_psk() && run.generator_of(&a.key) == Generator::Local
        });
    let ran = match bulk::run(&mut run, local).await {
        Ok(()) => stream::run(&mut run, streamed).await,
        Err(e) => Err(e),
    };
    let ran = match ran {
        Ok(()) => run.commit().await,
        Err(e) => Err(e),
    };
    if let Err(e) = ran {
        return Err(unwritable::rescue(&mut run, e).into());
    }
    let Run {
        mut journal,
        state,
        outcomes,
        ..
    } = run;
    unwritable::fold(&mut journal, state).await?;
    let results = plan
        .actions
        .iter()
        .zip(outcomes)
        .map(|(a, o)| (a.name.clone(), o.unwrap_or(Outcome::NotStarted)))
        .collect();
    Ok(Report { results })
}

/// What both paths share. Only the executor's own task holds it, so the
/// state has exactly one writer and every change goes through its journal.
struct Run<'a> {
    config: &'a Config,
    plan: &'a Plan,
    state: &'a mut State,
    journal: Journal,
    client: &'a Client,
    by_key: HashMap<TunnelKey, &'a Tunnel>,
    sites: site::SiteGate,
    /// Reads the health of every tunnel being verified, one query per
    /// account per poll.
    watcher: verify::Watcher,
    /// What a newly sealed key's record says it is sealed to.
    sealed_to: Option<Vec<String>>,
    /// By action index; `None` is not started (yet).
    outcomes: Vec<Option<Outcome>>,
    /// By action index: when Cloudflare's answer said the edge took the
    /// new key, on the runner's monotonic clock. The rotation's outage runs
    /// from here, and so does `verify`'s deadline (a clock set back or
    /// forward on the runner moves neither).
    edge_took: HashMap<usize, std::time::Instant>,
    options: &'a Options,
    on_event: &'a mut dyn FnMut(Event<'_>),
}

impl<'a> Run<'a> {
    fn action(&self, idx: usize) -> &'a Action {
        &self.plan.actions[idx]
    }

    fn parallelism(&self) -> usize {
        self.options.parallelism.max(1)
    }

    fn event(&mut self, event: Event<'_>) {
        (self.on_event)(event);
    }

    /// Reports an action's outcome (a path that may be down after it
    /// blocks its site, if that was not already said).
    fn finish(&mut self, idx: usize, outcome: Outcome) {
        let action = self.action(idx);
        self.sites.settled(action, &outcome);
        self.event(Event::Finished(action, &outcome));
        self.outcomes[idx] = Some(outcome);
    }

    /// Notes that the record of `idx`'s tunnel changed (see [`Journal::stage`]).
    fn stage(&mut self, idx: usize) {
        self.journal.stage(&self.action(idx).key);
    }

    /// Makes everything staged durable, with one fsync. A failed write is
    /// tried again after a pause (the keys wait in memory); the error is
    /// returned only once those attempts failed too (at once when this
    /// writer lost its lock), and then the caller stops the apply (see
    /// `unwritable`).
    async fn commit(&mut self) -> Result<(), StateError> {
        let mut delays = unwritable::retry_delays();
        loop {
            let Err(e) = self.journal.commit(self.state) else {
                return Ok(());
            };
            // A writer that lost its lock stays fenced: no retry helps.
            if e.lost_lock().is_some() {
                return Err(e);
            }
            let Some(delay) = delays.next() else {
                return Err(e);
            };
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "state journal not written; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Undoes what was staged for action `idx`, which will not start now
    /// that the state cannot be written: its record is what the disk holds.
    fn revert(&mut self, idx: usize) {
        let key = &self.action(idx).key;
        self.journal.revert(self.state, key);
    }

    fn generator_of(&self, key: &TunnelKey) -> Generator {
        self.by_key.get(key).map_or(Generator::Cloudflare, |t| {
            self.config.policy_of(t).generator
        })
    }

    /// The policy's delivery command and the tunnel it is for, if any.
    fn deliver_of(&self, key: &TunnelKey) -> Option<(Deliver, Tunnel)> {
        let t = self.by_key.get(key)?;
        let how = self.config.policy_of(t).deliver.clone()?;
        Some((how, (*t).clone()))
    }

    /// The policy's `verify` and the tunnel it is for, if any.
    fn verify_of(&self, key: &TunnelKey) -> Option<(Verify, Tunnel)> {
        let t = self.by_key.get(key)?;
        let how = self.config.policy_of(t).verify.clone()?;
        Some((how, (*t).clone()))
    }

    /// With `verify`, a new key that is recorded (and delivered) is
    /// waited on before its site moves on: stages the start of the wait
    /// (so a crash leaves the next plan knowing the path may be down) and
    /// returns what to wait for; `None` when there is nothing to verify.
    fn begin_verification(&mut self, idx: usize, outcome: &Outcome) -> Option<Wait> {
        let since = match outcome {
            Outcome::Generated { last_rotated } | Outcome::Rotated { last_rotated } => {
                *last_rotated
            }
            _ => return None,
        };
        let (how, tunnel) = self.verify_of(&self.action(idx).key)?;
        let action = self.action(idx);
        (self.state.entry(&action.key, &action.name)).begin_verification(since);
        self.stage(idx);
        let arrived = (self.edge_took.get(&idx).copied()).unwrap_or_else(std::time::Instant::now);
        Some((how, tunnel, since, arrived))
    }

    /// How a verification went, staged in the state: a tunnel that did not
    /// come back turns the outcome into [`Outcome::Unverified`] and stops
    /// its site at once; its record holds the site's other paths in later
    /// plans too.
    fn record_verification(
        &mut self,
        idx: usize,
        result: Result<(), String>,
        outcome: Outcome,
    ) -> Outcome {
        let action = self.action(idx);
        tracing::info!(tunnel = %action.name, ok = result.is_ok(), "verification finished");
        let outage = result
            .as_ref()
            .ok()
            .and_then(|()| self.edge_took.get(&idx))
            .map(|took| took.elapsed());
        if result.is_ok() {
            self.event(Event::Verified(action, outage));
        }
        let entry = self.state.entry(&action.key, &action.name);
        entry.end_verification(result.clone(), Utc::now());
        if let Some(outage) = outage {
            tracing::info!(tunnel = %action.name, outage_ms = outage.as_millis() as u64, "outage measured");
            entry.record_outage(outage);
        }
        self.stage(idx);
        let outcome = match (result, outcome) {
            (
                Err(message),
                Outcome::Generated { last_rotated } | Outcome::Rotated { last_rotated },
            ) => Outcome::Unverified {
                last_rotated,
                message,
            },
            (_, o) => o,
        };
        self.sites.settled(action, &outcome);
        outcome
    }

    /// Cloudflare answered that the edge took the new key of `idx` now.
    fn edge_took(&mut self, idx: usize) {
        self.edge_took.insert(idx, std::time::Instant::now());
    }

    /// Stages how a delivery went; a failed one turns the rotation's
    /// outcome into [`Outcome::Undelivered`] (the key itself is safely
    /// recorded) and blocks its site at once, before anything else starts.
    fn record_delivery(&mut self, idx: usize, result: Delivered, outcome: Outcome) -> Outcome {
        let action = self.action(idx);
        tracing::debug!(tunnel = %action.name, ok = result.is_ok(), "delivery finished");
        self.event(Event::Delivered(
            action,
            result.as_ref().map(|_| ()).map_err(String::as_str),
        ));
        self.state
            .entry(&action.key, &action.name)
            .record_delivery(result.clone(), Utc::now());
        self.stage(idx);
        let outcome = match (result, outcome) {
            (Ok(()), o) => o,
            (
                Err(message),
                Outcome::Generated { last_rotated } | Outcome::Rotated { last_rotated },
            ) => Outcome::Undelivered {
                last_rotated,
                message,
            },
            (Err(_), o) => o,
        };
        self.sites.settled(action, &outcome);
        outcome
    }
}

/// What a recorded new key means for its action.
fn changed(action: &Action, last_rotated: DateTime<Utc>) -> Outcome {
    match action.kind {
        ActionKind::Generate => Outcome::Generated { last_rotated },
        _ => Outcome::Rotated { last_rotated },
    }
}

/// Whether the PSK on the edge was already unknown when this action began.
fn was_uncertain(action: &Action) -> bool {
    action
        .reasons
        .iter()
        .any(|r| matches!(r, Reason::Interrupted { .. } | Reason::Pending { .. }))
}

/// A verification to wait for: the policy's `verify`, its tunnel, since
/// when the new key is on the edge (Cloudflare's date), and when its answer
/// arrived (the runner's monotonic clock, for the deadline).
type Wait = (Verify, Tunnel, DateTime<Utc>, std::time::Instant);

/// How a `deliver` command ended: `Err` carries why it failed.
type Delivered = Result<(), String>;

/// Runs the delivery of `psk`, when there is one to run.
async fn deliver(how: Option<(Deliver, Tunnel)>, psk: &Psk) -> Option<Delivered> {
    let (how, tunnel) = how?;
    Some(crate::deliver::deliver(&how, &tunnel, psk).await)
}

/// A PSK made here, from the OS's CSPRNG: 32 characters of `[A-Za-z0-9]`,
/// about 190 bits.
pub fn new_local_psk() -> Psk {
    use rand::distr::{Alphanumeric, SampleString};
    let mut os = rand::rand_core::UnwrapErr(rand::rngs::SysRng);
    Psk::new(Alphanumeric.sample_string(&mut os, LOCAL_PSK_LEN))
}

pub const LOCAL_PSK_LEN: usize = 32;
