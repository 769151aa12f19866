//! The executor: carries out a plan one tunnel at a time, never losing a key.
//!
//! For each rotation the order is fixed: record an intent and make it
//! durable, ask Cloudflare for the new PSK, seal it, record it durably. A
//! crash between any two steps leaves either the old sealed PSK (the call
//! never happened) or an intent the next plan turns into a new rotation (the
//! key on the edge is unknown). Every change is made durable before
//! anything depends on it: committed to the state journal (one fsync for
//! all the changes of one turn of the loop), then folded into the state file
//! once at the end (see `state::Journal`), so N tunnels cost O(N) bytes of
//! writes and far fewer than 2N fsyncs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::cloudflare::{ApiError, Client, PskEntry};
use crate::config::{Config, Tunnel};
use crate::policy::{Deliver, Generator};
use crate::reconcile::{Action, ActionKind, Plan, Reason};
use crate::seal;
use crate::seal::Psk;
use crate::state::{Delivery, Intent, Journal, State, StateError};
use crate::tunnel::TunnelKey;

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
    /// Not started because the apply was stopped (Ctrl-C) first.
    NotStarted,
    /// The new PSK is recorded, but the `deliver` command failed: the
    /// router may still hold the old one. `psk deliver NAME` retries.
    Undelivered {
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
            .filter(|(_, o)| matches!(o, Outcome::Failed { .. } | Outcome::Undelivered { .. }))
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
        let forgotten = self.count(|o| matches!(o, Outcome::Forgotten));
        let deferred = match self.count(|o| matches!(o, Outcome::Deferred { .. })) {
            0 => String::new(),
            n => format!(", {n} left for `psk reseal`"),
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
        format!("{head} {rotated} rotated, {generated} generated, {forgotten} forgotten, {failed} failed{undelivered}{deferred}{not_started}.")
    }
}

/// Why an apply had to stop before finishing its plan.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
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
            parallelism: 10,
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
}

/// What a task brings back to the loop that owns the state.
enum TaskResult {
    Rotation(usize, Result<crate::cloudflare::Generated, ApiError>),
    /// A delivery finished; carries the rotation's outcome to report.
    Delivery(usize, Result<(), String>, Outcome),
}

impl TaskResult {
    fn index(&self) -> usize {
        match self {
            TaskResult::Rotation(i, _) | TaskResult::Delivery(i, _, _) => *i,
        }
    }
}

/// Work that may begin only once the changes it follows are committed to
/// the journal: the API call an intent announces, the delivery of a PSK,
/// the report that a change is recorded.
enum AfterCommit {
    Rotate(usize),
    Deliver {
        idx: usize,
        how: Deliver,
        tunnel: Tunnel,
        psk: Psk,
        outcome: Outcome,
    },
    Report(usize, Outcome),
}

/// Carries out `plan`, making each change to `state` durable in the journal
/// beside `state_path` before anything depends on it, and folding the
/// journal into the state at the end. Returning early with an error leaves
/// the journal, which the next load replays.
///
/// Up to `options.parallelism` rotations run at once, never two of one
/// site. Only this loop touches the state. Each turn it stages the answers
/// that came back and the intents of the rotations it is about to start,
/// commits them all with one fsync (group commit), and only then starts
/// those calls and deliveries and reports those outcomes: durability costs
/// one fsync per turn rather than two per tunnel.
pub async fn apply(
    config: &Config,
    plan: &Plan,
    state: &mut State,
    state_path: &Path,
    client: &Client,
    options: &Options,
    mut on_event: impl FnMut(Event<'_>),
) -> Result<Report, ApplyError> {
    let mut journal = Journal::open(state_path, state)?;
    let by_key = config.tunnels_by_key();
    let site_of: HashMap<TunnelKey, String> = config
        .tunnels
        .iter()
        .filter_map(|t| t.site.clone().map(|s| (t.key(), s)))
        .collect();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; plan.actions.len()];
    // Sites whose last delivery failed: both paths may be down if another
    // of its tunnels rotates now, so the rest of the site waits.
    let mut blocked_sites: HashMap<String, String> = HashMap::new();
    let parallelism = options.parallelism.max(1);
    // New keys are sealed to psk.yaml's recipients; a record says so when
    // the state's header (not yet re-sealed) names others.
    let sealed_to = state.sealed_to_for(&config.recipient_fingerprints());

    // Keys psk makes itself go out first, in bulk: one request per chunk.
    let (local, mut waiting): (Vec<usize>, Vec<usize>) = (0..plan.actions.len()).partition(|i| {
        let a = &plan.actions[*i];
        a.kind.changes_psk() && generator_of(config, &by_key, &a.key) == Generator::Local
    });
    let mut local_run = LocalRun {
        config,
        plan,
        state: &mut *state,
        journal: &mut journal,
        client,
        by_key: &by_key,
        parallelism,
        sealed_to: &sealed_to,
        on_event: &mut on_event,
    };
    local_run
        .rounds(
            local,
            &site_of,
            &mut blocked_sites,
            &mut outcomes,
            &options.stop,
        )
        .await?;

    let mut busy_sites: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<TaskResult> = JoinSet::new();
    let mut task_of: HashMap<tokio::task::Id, usize> = HashMap::new();
    let mut after: Vec<AfterCommit> = Vec::new();
    let mut stopping = options.stop.requested();
    if stopping {
        on_event(Event::Stopping { in_flight: 0 });
    }

    loop {
        // Start whatever may start, in plan order.
        let mut i = 0;
        let mut starting = 0;
        while !stopping && i < waiting.len() && tasks.len() + starting < parallelism {
            let idx = waiting[i];
            let action = &plan.actions[idx];
            let site = site_of.get(&action.key);
            if let Some(failed) = site.and_then(|s| blocked_sites.get(s)) {
                if action.kind.changes_psk() {
                    waiting.remove(i);
                    after.push(AfterCommit::Report(idx, site_blocked(failed)));
                    continue;
                }
            }
            if action.kind.changes_psk() && site.is_some_and(|s| busy_sites.contains(s)) {
                i += 1;
                continue;
            }
            waiting.remove(i);
            on_event(Event::Started(action));
            let report = |o| AfterCommit::Report(idx, o);
            after.push(match action.kind {
                ActionKind::Forget => {
                    state.tunnels.remove(&action.key.to_string());
                    journal.stage(&action.key);
                    report(Outcome::Forgotten)
                }
                ActionKind::Redeliver => report(Outcome::Deferred {
                    message: format!(
                        "delivering again needs an identity to open the sealed PSK, which apply never holds; run `psk deliver {}`",
                        action.name
                    ),
                }),
                ActionKind::Reseal => report(Outcome::Deferred {
                    message: "re-sealing needs an identity, which apply never holds; run `psk reseal`".into(),
                }),
                ActionKind::Generate | ActionKind::Rotate => {
                    state.entry(&action.key, &action.name).intent = Some(Intent {
                        operation: "psk_generate".into(),
                        started: Utc::now(),
                    });
                    journal.stage(&action.key);
                    tracing::debug!(tunnel = %action.name, "intent staged; rotation starts after the commit");
                    if let Some(s) = site {
                        busy_sites.insert(s.clone());
                    }
                    starting += 1;
                    AfterCommit::Rotate(idx)
                }
            });
        }

        // One fsync for everything staged this turn; then act on it.
        journal.commit(state)?;
        for work in after.drain(..) {
            let (idx, handle) = match work {
                AfterCommit::Rotate(idx) => {
                    let key = plan.actions[idx].key.clone();
                    let client = client.clone();
                    let handle = tasks.spawn(async move {
                        let r = client
                            .psk_generate(&key.account_id, &key.tunnel_id, false)
                            .await
                            .and_then(|g| {
                                g.ok_or_else(|| ApiError::Decode {
                                    url: client.base_url().to_string(),
                                    status: 200,
                                    message: "no PSK in the answer".into(),
                                })
                            });
                        TaskResult::Rotation(idx, r)
                    });
                    (idx, handle)
                }
                AfterCommit::Deliver {
                    idx,
                    how,
                    tunnel,
                    psk,
                    outcome,
                } => {
                    let handle = tasks.spawn(async move {
                        let r = crate::deliver::deliver(&how, &tunnel, &psk).await;
                        TaskResult::Delivery(idx, r, outcome)
                    });
                    (idx, handle)
                }
                AfterCommit::Report(idx, o) => {
                    finish(&mut outcomes, idx, &plan.actions[idx], o, &mut on_event);
                    continue;
                }
            };
            task_of.insert(handle.id(), idx);
        }

        if tasks.is_empty() {
            // Done, stopped, or (cannot happen: only in-flight work blocks
            // a site) nothing could start. Never spin on it.
            break;
        }

        // Wait for one answer, then take every other one already in, so
        // that one commit covers them all.
        let mut answers = Vec::new();
        tokio::select! {
            joined = tasks.join_next_with_id() => {
                answers.extend(joined);
                while let Some(j) = tasks.try_join_next_with_id() {
                    answers.push(j);
                }
            }
            _ = options.stop.wait(), if !stopping => {
                tracing::info!(in_flight = tasks.len(), "stop requested; finishing the rotations in flight");
                stopping = true;
                on_event(Event::Stopping { in_flight: tasks.len() });
            }
        }
        for joined in answers {
            let (idx, result) = match joined {
                Ok((_, r)) => (r.index(), Ok(r)),
                Err(e) => (task_of[&e.id()], Err(e)),
            };
            let action = &plan.actions[idx];
            let site = site_of.get(&action.key);
            let outcome = match result {
                Ok(TaskResult::Rotation(_, Ok(generated))) => {
                    let (outcome, psk) =
                        record_generated(config, action, generated, &sealed_to, state, &mut journal);
                    match (psk, deliver_of(config, &by_key, &action.key)) {
                        // The site stays busy until the router has it.
                        (Some(psk), Some((how, tunnel))) => {
                            after.push(AfterCommit::Deliver {
                                idx,
                                how,
                                tunnel,
                                psk,
                                outcome,
                            });
                            continue;
                        }
                        _ => outcome,
                    }
                }
                Ok(TaskResult::Rotation(_, Err(e))) => {
                    tracing::debug!(tunnel = %action.name, outcome_unknown = e.outcome_unknown(), "rotation failed");
                    settle_failure(e, action, state, &mut journal)
                }
                Ok(TaskResult::Delivery(_, r, outcome)) => {
                    let o = record_delivery(action, r, outcome, state, &mut journal, &mut on_event);
                    if let (Outcome::Undelivered { .. }, Some(s)) = (&o, site) {
                        blocked_sites.insert(s.clone(), action.name.clone());
                    }
                    o
                }
                // A task that died mid-call: the edge may have changed.
                Err(_) => Outcome::Failed {
                    message: "the rotation task stopped unexpectedly; the next plan rotates this tunnel again".into(),
                    interrupted: true,
                },
            };
            if let Some(s) = site {
                busy_sites.remove(s);
            }
            after.push(AfterCommit::Report(idx, outcome));
        }
    }

    journal.finish(state)?;
    let results = plan
        .actions
        .iter()
        .zip(outcomes)
        .map(|(a, o)| (a.name.clone(), o.unwrap_or(Outcome::NotStarted)))
        .collect();
    Ok(Report { results })
}

fn finish(
    outcomes: &mut [Option<Outcome>],
    idx: usize,
    action: &Action,
    outcome: Outcome,
    on_event: &mut impl FnMut(Event<'_>),
) {
    on_event(Event::Finished(action, &outcome));
    outcomes[idx] = Some(outcome);
}

/// Why a tunnel was not started: `failed`, of the same site, has a new PSK
/// its router may not have.
fn site_blocked(failed: &str) -> Outcome {
    Outcome::Deferred {
        message: format!(
            "not started: the new PSK of {failed}, on the same site, was not delivered; fix that and run `psk deliver {failed}`, then apply again"
        ),
    }
}

/// Seals a PSK Cloudflare generated and stages it with its date. Returns
/// the PSK too, for a delivery once the change is committed.
fn record_generated(
    config: &Config,
    action: &Action,
    generated: crate::cloudflare::Generated,
    sealed_to: &Option<Vec<String>>,
    state: &mut State,
    journal: &mut Journal,
) -> (Outcome, Option<Psk>) {
    let key = &action.key;
    let sealed = match seal::seal(&generated.psk, &config.recipients) {
        Ok(s) => s,
        Err(e) => {
            // The intent stays: the edge has a key psk could not keep.
            let o = Outcome::Failed {
                message: format!("the new PSK could not be sealed: {e}"),
                interrupted: true,
            };
            return (o, None);
        }
    };
    let last_rotated = generated.last_generated_on.unwrap_or_else(Utc::now);
    let rec = state.entry(key, &action.name);
    rec.psk = Some(sealed);
    rec.sealed_to = sealed_to.clone();
    rec.last_rotated = Some(last_rotated);
    rec.intent = None;
    rec.delivery = None;
    journal.stage(key);
    let o = match action.kind {
        ActionKind::Generate => Outcome::Generated { last_rotated },
        _ => Outcome::Rotated { last_rotated },
    };
    (o, Some(generated.psk))
}

/// The policy's delivery command and the tunnel it is for, if any.
fn deliver_of(
    config: &Config,
    by_key: &HashMap<TunnelKey, &Tunnel>,
    key: &TunnelKey,
) -> Option<(Deliver, Tunnel)> {
    let t = by_key.get(key)?;
    let how = config.policy_of(t).deliver.clone()?;
    Some((how, (*t).clone()))
}

/// Stages how a delivery went; a failed one turns the rotation's outcome
/// into [`Outcome::Undelivered`] (the key itself is safely recorded).
fn record_delivery(
    action: &Action,
    result: Result<(), String>,
    outcome: Outcome,
    state: &mut State,
    journal: &mut Journal,
    on_event: &mut impl FnMut(Event<'_>),
) -> Outcome {
    tracing::debug!(tunnel = %action.name, ok = result.is_ok(), "delivery finished");
    on_event(Event::Delivered(
        action,
        result.as_ref().map(|_| ()).map_err(String::as_str),
    ));
    state.entry(&action.key, &action.name).delivery = Some(Delivery {
        at: Utc::now(),
        error: result.as_ref().err().cloned(),
        ok: result.is_ok(),
    });
    journal.stage(&action.key);
    match (result, outcome) {
        (Ok(()), o) => o,
        (Err(message), Outcome::Generated { last_rotated } | Outcome::Rotated { last_rotated }) => {
            Outcome::Undelivered {
                last_rotated,
                message,
            }
        }
        (Err(_), o) => o,
    }
}

/// Whether the PSK on the edge was already unknown when this action began.
fn was_uncertain(action: &Action) -> bool {
    action
        .reasons
        .iter()
        .any(|r| matches!(r, Reason::Interrupted { .. } | Reason::Pending { .. }))
}

fn generator_of(
    config: &Config,
    by_key: &HashMap<TunnelKey, &Tunnel>,
    key: &TunnelKey,
) -> Generator {
    by_key
        .get(key)
        .map_or(Generator::Cloudflare, |t| config.policy_of(t).generator)
}

/// A PSK made here, from the OS's CSPRNG: 32 characters of `[A-Za-z0-9]`,
/// about 190 bits.
pub fn new_local_psk() -> Psk {
    use rand::distributions::{Alphanumeric, DistString};
    Psk::new(Alphanumeric.sample_string(&mut rand::rngs::OsRng, LOCAL_PSK_LEN))
}

pub const LOCAL_PSK_LEN: usize = 32;

/// How a `deliver` command ended: `Err` carries why it failed.
type Delivered = Result<(), String>;

/// The `local` generator's part of an apply.
struct LocalRun<'a, F> {
    config: &'a Config,
    plan: &'a Plan,
    state: &'a mut State,
    journal: &'a mut Journal,
    client: &'a Client,
    by_key: &'a HashMap<TunnelKey, &'a Tunnel>,
    parallelism: usize,
    sealed_to: &'a Option<Vec<String>>,
    on_event: &'a mut F,
}

impl<F: FnMut(Event<'_>)> LocalRun<'_, F> {
    /// Sends the local keys in rounds that hold at most one tunnel per
    /// site, so a site's tunnels never change together; a site whose
    /// delivery failed gets no further round. With one site per tunnel (or
    /// none) it is a single round. A stop request ends it between rounds.
    async fn rounds(
        &mut self,
        mut remaining: Vec<usize>,
        site_of: &HashMap<TunnelKey, String>,
        blocked_sites: &mut HashMap<String, String>,
        outcomes: &mut [Option<Outcome>],
        stop: &Stop,
    ) -> Result<(), ApplyError> {
        while !remaining.is_empty() && !stop.requested() {
            let mut round = Vec::new();
            let mut later = Vec::new();
            let mut sites = HashSet::new();
            for idx in remaining {
                let action = &self.plan.actions[idx];
                let site = site_of.get(&action.key);
                if let Some(failed) = site.and_then(|s| blocked_sites.get(s)) {
                    finish(outcomes, idx, action, site_blocked(failed), self.on_event);
                    continue;
                }
                match site {
                    Some(s) if !sites.insert(s) => later.push(idx),
                    _ => round.push(idx),
                }
            }
            tracing::debug!(
                tunnels = round.len(),
                later = later.len(),
                "local keys: one round, at most one tunnel per site"
            );
            for (idx, outcome) in self.rotate(&round).await? {
                let action = &self.plan.actions[idx];
                if let (Outcome::Undelivered { .. }, Some(s)) = (&outcome, site_of.get(&action.key))
                {
                    blocked_sites.insert(s.clone(), action.name.clone());
                }
                outcomes[idx] = Some(outcome);
            }
            remaining = later;
        }
        Ok(())
    }

    /// One round: make each key, seal it into the state as pending and
    /// commit them all, then set them in bulk, per account; promote what
    /// Cloudflare reports applied and commit that before any router gets
    /// its key. A crash anywhere leaves the pending key in the state, and
    /// the next plan sends a fresh one: nothing is lost.
    async fn rotate(&mut self, indices: &[usize]) -> Result<Vec<(usize, Outcome)>, ApplyError> {
        let (config, plan, by_key) = (self.config, self.plan, self.by_key);
        let mut done = Vec::new();
        let mut by_account: BTreeMap<String, Vec<(usize, PskEntry)>> = BTreeMap::new();
        for &idx in indices {
            let action = &plan.actions[idx];
            (self.on_event)(Event::Started(action));
            let psk = new_local_psk();
            let sealed = match seal::seal(&psk, &config.recipients) {
                Ok(s) => s,
                Err(e) => {
                    let o = Outcome::Failed {
                        message: format!(
                            "the new PSK could not be sealed, so it was not sent: {e}"
                        ),
                        interrupted: false,
                    };
                    (self.on_event)(Event::Finished(action, &o));
                    done.push((idx, o));
                    continue;
                }
            };
            self.state.entry(&action.key, &action.name).stage_pending(
                sealed,
                self.sealed_to.clone(),
                Utc::now(),
            );
            self.journal.stage(&action.key);
            by_account
                .entry(action.key.account_id.clone())
                .or_default()
                .push((
                    idx,
                    PskEntry {
                        tunnel_id: action.key.tunnel_id.clone(),
                        psk,
                    },
                ));
        }
        // Every pending key is durable before any is sent.
        self.journal.commit(self.state)?;
        for (account, batch) in by_account {
            tracing::info!(%account, tunnels = batch.len(), "sending locally made keys in bulk");
            let entries: Vec<PskEntry> = batch.iter().map(|(_, e)| e.clone()).collect();
            let answer = self.client.set_psks(&account, &entries, false).await;
            drop(entries);
            let settled: Vec<(usize, Outcome, &Psk)> = batch
                .iter()
                .map(|(idx, entry)| {
                    let o = self.settle(&plan.actions[*idx], &entry.tunnel_id, &answer);
                    (*idx, o, &entry.psk)
                })
                .collect();
            // Promotions are durable before any router is given its key.
            self.journal.commit(self.state)?;
            let deliveries: Vec<(usize, Outcome, Option<Delivered>)> =
                crate::cloudflare::concurrently(self.parallelism, settled, |(idx, o, psk)| {
                    let how = match o {
                        Outcome::Generated { .. } | Outcome::Rotated { .. } => {
                            deliver_of(config, by_key, &plan.actions[idx].key)
                        }
                        _ => None,
                    };
                    async move {
                        let r = match how {
                            Some((how, tunnel)) => {
                                Some(crate::deliver::deliver(&how, &tunnel, psk).await)
                            }
                            None => None,
                        };
                        (idx, o, r)
                    }
                })
                .await;
            let mut reports = Vec::new();
            for (idx, o, delivered) in deliveries {
                let action = &plan.actions[idx];
                let o = match delivered {
                    Some(r) => {
                        record_delivery(action, r, o, self.state, self.journal, self.on_event)
                    }
                    None => o,
                };
                reports.push((idx, o));
            }
            self.journal.commit(self.state)?;
            for (idx, o) in reports {
                (self.on_event)(Event::Finished(&plan.actions[idx], &o));
                done.push((idx, o));
            }
        }
        Ok(done)
    }

    /// Stages what Cloudflare's answer to the bulk set means for one tunnel.
    fn settle(
        &mut self,
        action: &Action,
        tunnel_id: &str,
        answer: &crate::cloudflare::BulkOutcome,
    ) -> Outcome {
        let id = tunnel_id.to_ascii_lowercase();
        if let Some(applied) = answer.applied.get(&id) {
            let on = applied.last_generated_on.unwrap_or_else(Utc::now);
            let rec = self.state.entry(&action.key, &action.name);
            rec.promote_pending(on);
            rec.delivery = None;
            self.journal.stage(&action.key);
            return match action.kind {
                ActionKind::Generate => Outcome::Generated { last_rotated: on },
                _ => Outcome::Rotated { last_rotated: on },
            };
        }
        if let Some(reason) = answer.unapplied.get(&id) {
            withdraw_pending(action, self.state, self.journal);
            return Outcome::Failed {
                message: format!("Cloudflare did not apply the PSK: {reason}"),
                interrupted: was_uncertain(action),
            };
        }
        let err = answer
            .failed
            .iter()
            .find(|f| f.tunnel_ids.iter().any(|t| t.eq_ignore_ascii_case(&id)))
            .map(|f| &f.error);
        let unknown = err.is_none_or(|e| e.outcome_unknown());
        if !unknown {
            withdraw_pending(action, self.state, self.journal);
        }
        let mut message = err.map_or_else(
            || "Cloudflare's answer did not mention this tunnel".to_string(),
            |e| e.to_string(),
        );
        if unknown || was_uncertain(action) {
            message.push_str("\nThe PSK stays pending in the state; the next plan sends a new one");
        }
        Outcome::Failed {
            message,
            interrupted: unknown || was_uncertain(action),
        }
    }
}

/// Cloudflare surely did not set the pending key: drop it, unless the edge
/// was already unknown, in which case the pending record keeps saying so.
fn withdraw_pending(action: &Action, state: &mut State, journal: &mut Journal) {
    if was_uncertain(action) {
        return;
    }
    let k = action.key.to_string();
    let remove = match state.tunnels.get_mut(&k) {
        Some(rec) => {
            rec.pending = None;
            rec.psk.is_none() && rec.intent.is_none()
        }
        None => false,
    };
    if remove {
        state.tunnels.remove(&k);
    }
    journal.stage(&action.key);
}

/// After a failed call: if Cloudflare surely did nothing, the intent is
/// withdrawn; if it may have acted, the intent stays for the next plan.
fn settle_failure(
    e: ApiError,
    action: &Action,
    state: &mut State,
    journal: &mut Journal,
) -> Outcome {
    // Cloudflare surely did nothing this time; but if the edge was already
    // unknown before (an earlier interrupted rotation), it still is.
    let interrupted = e.outcome_unknown() || was_uncertain(action);
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
        journal.stage(&action.key);
    }
    let mut message = e.to_string();
    if interrupted {
        message.push_str(
            "\nCloudflare may have changed the PSK; the next plan rotates this tunnel again",
        );
    }
    Outcome::Failed {
        message,
        interrupted,
    }
}
