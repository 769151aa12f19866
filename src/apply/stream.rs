//! The streaming path: keys Cloudflare makes (`psk_generate`), up to
//! `--parallelism` in flight, plus the actions that change no key (forget,
//! and what is left for `psk reseal` / `psk deliver`).
//!
//! One loop owns the state. Each turn it stages the answers that came back
//! and the intents of the rotations it is about to start, commits them all
//! with one fsync (group commit), and only then starts those calls and
//! deliveries and reports those outcomes: durability costs one fsync per
//! turn rather than two per tunnel.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio::task::{Id, JoinError, JoinSet};

use super::site::Gate;
use super::{changed, was_uncertain, Delivered, Event, Outcome, Run};
use crate::cloudflare::{ApiError, Generated};
use crate::config::Tunnel;
use crate::policy::{Deliver, Verify};
use crate::reconcile::ActionKind;
use crate::seal::{self, Psk};
use crate::state::StateError;

/// Runs the actions `waiting` (indices into the plan, in plan order) until
/// all are done or a stop request has let the ones in flight finish.
pub(super) async fn run(run: &mut Run<'_>, waiting: Vec<usize>) -> Result<(), StateError> {
    let stopping = run.options.stop.requested();
    if stopping {
        run.event(Event::Stopping { in_flight: 0 });
    }
    let mut stream = Stream {
        run,
        waiting,
        tasks: JoinSet::new(),
        task_of: HashMap::new(),
        after: Vec::new(),
        stopping,
    };
    loop {
        stream.start_ready();
        // One fsync for everything staged this turn; then act on it.
        if let Err(e) = stream.run.commit().await {
            stream.stop_unwritable().await;
            return Err(e);
        }
        stream.act_on_committed();
        if stream.tasks.is_empty() {
            // Done, stopped, or (cannot happen: only in-flight work blocks
            // a site) nothing could start. Never spin on it.
            return Ok(());
        }
        for joined in stream.next_answers().await {
            stream.take_answer(joined);
        }
    }
}

/// What a task brings back to the loop that owns the state.
enum TaskResult {
    Rotation(usize, Result<Generated, ApiError>),
    /// A delivery finished; carries the rotation's outcome to report.
    Delivery(usize, Delivered, Outcome),
    /// A verification finished (`Err`: why the tunnel is not back).
    Verification(usize, Result<(), String>, Outcome),
}

impl TaskResult {
    fn index(&self) -> usize {
        match self {
            TaskResult::Rotation(i, _)
            | TaskResult::Delivery(i, _, _)
            | TaskResult::Verification(i, _, _) => *i,
        }
    }
}

type Joined = Result<(Id, TaskResult), JoinError>;

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
    /// Wait for the rotated tunnel to come back (`verify`).
    Verify {
        idx: usize,
        how: Verify,
        tunnel: Tunnel,
        since: DateTime<Utc>,
        arrived: std::time::Instant,
        outcome: Outcome,
    },
    Report(usize, Outcome),
}

/// The loop's own state, between turns.
struct Stream<'r, 'a> {
    run: &'r mut Run<'a>,
    /// Not started yet, in plan order.
    waiting: Vec<usize>,
    tasks: JoinSet<TaskResult>,
    /// Which action a task is for, should it die without saying.
    task_of: HashMap<Id, usize>,
    /// Staged this turn, to act on after the commit.
    after: Vec<AfterCommit>,
    /// A stop was requested: start nothing new.
    stopping: bool,
}

impl Stream<'_, '_> {
    /// Starts whatever may start, in plan order, up to the parallelism;
    /// what it starts is only staged until the next commit.
    fn start_ready(&mut self) {
        let mut i = 0;
        let mut starting = 0;
        while !self.stopping
            && i < self.waiting.len()
            && self.tasks.len() + starting < self.run.parallelism()
        {
            let idx = self.waiting[i];
            match self.run.sites.check(self.run.action(idx)) {
                Gate::Busy => {
                    i += 1;
                    continue;
                }
                Gate::Blocked(outcome) => {
                    self.waiting.remove(i);
                    self.after.push(AfterCommit::Report(idx, outcome));
                    continue;
                }
                Gate::Open => {}
            }
            self.waiting.remove(i);
            let work = self.start(idx);
            if matches!(work, AfterCommit::Rotate(_)) {
                starting += 1;
            }
            self.after.push(work);
        }
    }

    /// Stages what starting action `idx` changes in the state.
    fn start(&mut self, idx: usize) -> AfterCommit {
        let action = self.run.action(idx);
        self.run.event(Event::Started(action));
        let report = |o| AfterCommit::Report(idx, o);
        match action.kind {
            ActionKind::Forget => {
                self.run.state.forget(&action.key);
                self.run.stage(idx);
                report(Outcome::Forgotten)
            }
            ActionKind::Redeliver => report(Outcome::Deferred {
                command: "psk deliver",
                message: format!(
                    "delivering again needs an identity to open the sealed PSK, which apply never holds; run `psk deliver {}`",
                    action.name
                ),
            }),
            ActionKind::Reseal => report(Outcome::Deferred {
                command: "psk reseal",
                message: "re-sealing needs an identity, which apply never holds; run `psk reseal`"
                    .into(),
            }),
            ActionKind::Generate | ActionKind::Rotate => {
                self.run
                    .state
                    .entry(&action.key, &action.name)
                    .begin_rotation("psk_generate", Utc::now());
                self.run.stage(idx);
                tracing::debug!(tunnel = %action.name, "intent staged; rotation starts after the commit");
                self.run.sites.occupy(&action.key);
                AfterCommit::Rotate(idx)
            }
        }
    }

    /// After the commit: starts the calls and deliveries, reports outcomes.
    fn act_on_committed(&mut self) {
        for work in std::mem::take(&mut self.after) {
            match work {
                AfterCommit::Rotate(idx) => {
                    let key = self.run.action(idx).key.clone();
                    let client = self.run.client.clone();
                    let handle = self.tasks.spawn(async move {
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
                    self.task_of.insert(handle.id(), idx);
                }
                AfterCommit::Deliver {
                    idx,
                    how,
                    tunnel,
                    psk,
                    outcome,
                } => {
                    let handle = self.tasks.spawn(async move {
                        let r = crate::deliver::deliver(&how, &tunnel, &psk).await;
                        TaskResult::Delivery(idx, r, outcome)
                    });
                    self.task_of.insert(handle.id(), idx);
                }
                AfterCommit::Verify {
                    idx,
                    how,
                    tunnel,
                    since,
                    arrived,
                    outcome,
                } => {
                    let watcher = self.run.watcher.clone();
                    let stop = self.run.options.stop.clone();
                    let handle = self.tasks.spawn(async move {
                        let r = super::verify::until_back_up(
                            &watcher, &how, &tunnel, since, arrived, &stop,
                        )
                        .await;
                        TaskResult::Verification(idx, r, outcome)
                    });
                    self.task_of.insert(handle.id(), idx);
                }
                AfterCommit::Report(idx, o) => self.run.finish(idx, o),
            }
        }
    }

    /// The state cannot take this turn's commit: nothing more starts (a
    /// rotation whose intent is not on disk is never sent, and no router is
    /// given a key the disk does not hold), but the calls in flight are let
    /// answer, since the edge holds their keys now: each is sealed and
    /// staged, for the rescue.
    async fn stop_unwritable(&mut self) {
        self.stopping = true;
        // Verifications in flight end now rather than at their timeout.
        self.run.options.stop.request();
        self.abandon_after();
        while !self.tasks.is_empty() {
            for joined in self.next_answers().await {
                self.take_answer(joined);
            }
            self.abandon_after();
        }
    }

    /// Settles the work staged this turn without acting on it.
    fn abandon_after(&mut self) {
        let not_recorded = |name: &str| {
            Outcome::Failed {
            message: format!(
                "the state could not be written, so the apply stopped before {name}'s new PSK was delivered or verified; once `psk recover` took it back, `psk deliver {name}` delivers it"
            ),
            interrupted: false,
        }
        };
        for work in std::mem::take(&mut self.after) {
            let (idx, outcome) = match work {
                AfterCommit::Rotate(idx) => {
                    self.run.revert(idx);
                    (idx, Outcome::NotStarted)
                }
                AfterCommit::Deliver { idx, .. } | AfterCommit::Verify { idx, .. } => {
                    (idx, not_recorded(&self.run.action(idx).name))
                }
                AfterCommit::Report(idx, o) => (idx, o),
            };
            // Nothing starts any more, so the sites stay as they are.
            self.run.finish(idx, outcome);
        }
    }

    /// Waits for one answer, then takes every other one already in, so
    /// that one commit covers them all. A stop request ends the wait with
    /// no answers.
    async fn next_answers(&mut self) -> Vec<Joined> {
        let options = self.run.options;
        let mut answers = Vec::new();
        tokio::select! {
            joined = self.tasks.join_next_with_id() => {
                answers.extend(joined);
                while let Some(j) = self.tasks.try_join_next_with_id() {
                    answers.push(j);
                }
            }
            _ = options.stop.wait(), if !self.stopping => {
                tracing::info!(in_flight = self.tasks.len(), "stop requested; finishing the rotations in flight");
                self.stopping = true;
                self.run.event(Event::Stopping { in_flight: self.tasks.len() });
            }
        }
        answers
    }

    /// Stages what an answer means for the state; its report (or the
    /// delivery it leads to) waits for the commit.
    fn take_answer(&mut self, joined: Joined) {
        let (idx, result) = match joined {
            Ok((_, r)) => (r.index(), Ok(r)),
            Err(e) => (self.task_of[&e.id()], Err(e)),
        };
        let action = self.run.action(idx);
        let outcome = match result {
            Ok(TaskResult::Rotation(_, Ok(generated))) => {
                let (outcome, psk) = record_generated(self.run, idx, generated);
                match (psk, self.run.deliver_of(&action.key)) {
                    // The site stays busy until the router has it.
                    (Some(psk), Some((how, tunnel))) => {
                        self.after.push(AfterCommit::Deliver {
                            idx,
                            how,
                            tunnel,
                            psk,
                            outcome,
                        });
                        return;
                    }
                    (Some(_), None) => match self.verify_next(idx, outcome) {
                        Some(o) => o,
                        None => return,
                    },
                    _ => outcome,
                }
            }
            Ok(TaskResult::Rotation(_, Err(e))) => {
                tracing::debug!(tunnel = %action.name, outcome_unknown = e.outcome_unknown(), "rotation failed");
                settle_failure(self.run, idx, e)
            }
            Ok(TaskResult::Delivery(_, r, outcome)) => {
                let outcome = self.run.record_delivery(idx, r, outcome);
                match self.verify_next(idx, outcome) {
                    Some(o) => o,
                    None => return,
                }
            }
            Ok(TaskResult::Verification(_, r, outcome)) => self.run.record_verification(idx, r, outcome),
            // A task that died mid-call: the edge may have changed.
            Err(_) => Outcome::Failed {
                message: "the rotation task stopped unexpectedly; the next plan rotates this tunnel again".into(),
                interrupted: true,
            },
        };
        // A path that may be down blocks its site before the site frees up.
        self.run.sites.settled(action, &outcome);
        self.run.sites.release(&action.key);
        self.after.push(AfterCommit::Report(idx, outcome));
    }

    /// With `verify`, a new key that is recorded (and delivered) is waited
    /// on before its site moves on: the verification is queued and `None`
    /// returned (the site stays busy). Otherwise the outcome to report.
    fn verify_next(&mut self, idx: usize, outcome: Outcome) -> Option<Outcome> {
        let Some((how, tunnel, since, arrived)) = self.run.begin_verification(idx, &outcome) else {
            return Some(outcome);
        };
        self.after.push(AfterCommit::Verify {
            idx,
            how,
            tunnel,
            since,
            arrived,
            outcome,
        });
        None
    }
}

/// Seals a PSK Cloudflare generated and stages it with its date. Returns
/// the PSK too, for a delivery once the change is committed.
fn record_generated(run: &mut Run<'_>, idx: usize, generated: Generated) -> (Outcome, Option<Psk>) {
    run.edge_took(idx);
    let action = run.action(idx);
    let sealed = match seal::seal(&generated.psk, &run.config.recipients) {
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
    let last_rotated = (generated.last_generated_on).unwrap_or_else(|| run.client.cloudflare_now());
    run.state.entry(&action.key, &action.name).record_key(
        sealed,
        run.sealed_to.clone(),
        last_rotated,
    );
    run.stage(idx);
    (changed(action, last_rotated), Some(generated.psk))
}

/// After a failed call: if Cloudflare surely did nothing, the intent is
/// withdrawn; if it may have acted, the intent stays for the next plan.
fn settle_failure(run: &mut Run<'_>, idx: usize, e: ApiError) -> Outcome {
    let action = run.action(idx);
    // Cloudflare surely did nothing this time; but if the edge was already
    // unknown before (an earlier interrupted rotation), it still is.
    let interrupted = e.outcome_unknown() || was_uncertain(action);
    if !interrupted {
        run.state.withdraw_intent(&action.key);
        run.stage(idx);
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
