//! The bulk path, for keys psk makes itself (`generator: local`): each key
//! is sealed into the state as pending and made durable before it is sent,
//! then set with `POST .../ipsec_tunnels/psk`, many tunnels a request. A
//! crash anywhere leaves the pending key in the state, and the next plan
//! sends a fresh one: nothing is lost. With `verify`, each round's tunnels
//! (at most one per site) must come back before the next round starts, so
//! a site's paths change one after another, each only once the previous
//! one is back.

use std::collections::BTreeMap;

use chrono::Utc;

use super::site::Gate;
use super::{changed, deliver, was_uncertain, Event, Outcome, Run, Wait};
use crate::cloudflare::{ApiError, BulkOutcome, BulkResult, PskEntry};
use crate::seal::{self, Psk};
use crate::state::StateError;

/// Sends the local keys of `remaining` (indices into the plan) in rounds
/// that hold at most one tunnel per site, so a site's tunnels never change
/// together; a site whose delivery failed gets no further round. With one
/// site per tunnel (or none) it is a single round. A stop request ends it
/// between rounds.
pub(super) async fn run(run: &mut Run<'_>, mut remaining: Vec<usize>) -> Result<(), StateError> {
    while !remaining.is_empty() && !run.options.stop.requested() {
        let mut round = Vec::new();
        let mut later = Vec::new();
        for idx in remaining {
            match run.sites.check(run.action(idx)) {
                Gate::Blocked(outcome) => run.finish(idx, outcome),
                Gate::Busy => later.push(idx),
                Gate::Open => {
                    run.sites.occupy(&run.action(idx).key);
                    round.push(idx);
                }
            }
        }
        tracing::debug!(
            tunnels = round.len(),
            later = later.len(),
            "local keys: one round, at most one tunnel per site"
        );
        rotate(run, &round).await?;
        for &idx in &round {
            run.sites.release(&run.action(idx).key);
        }
        remaining = later;
    }
    Ok(())
}

/// One round: make each key, seal it into the state as pending and commit
/// them all, then set them in bulk, per account; promote what Cloudflare
/// reports applied and commit that before any router gets its key.
async fn rotate(run: &mut Run<'_>, indices: &[usize]) -> Result<(), StateError> {
    let by_account = stage_pending(run, indices);
    // Every pending key is durable before any is sent. If the state cannot
    // take them, none is sent: nothing changed on the edge.
    if let Err(e) = run.commit().await {
        for (idx, _) in by_account.values().flatten() {
            run.revert(*idx);
            run.finish(*idx, Outcome::NotStarted);
        }
        return Err(e);
    }
    for (account, batch) in by_account {
        let settled = send(run, &account, &batch).await;
        // Promotions are durable before any router is given its key; if
        // the state cannot take them, the apply stops here and they are
        // rescued (no router gets a key the state does not hold).
        if let Err(e) = run.commit().await {
            for (idx, outcome, _) in settled {
                run.finish(idx, outcome);
            }
            return Err(e);
        }
        deliver_settled(run, settled).await?;
    }
    Ok(())
}

/// Makes and seals a key for each action and stages it as pending;
/// returns the keys to send, per account. A key that cannot be sealed is
/// never sent.
fn stage_pending(run: &mut Run<'_>, indices: &[usize]) -> BTreeMap<String, Vec<(usize, PskEntry)>> {
    let mut by_account: BTreeMap<String, Vec<(usize, PskEntry)>> = BTreeMap::new();
    for &idx in indices {
        let action = run.action(idx);
        run.event(Event::Started(action));
        let psk = super::new_local_psk();
        let sealed = match seal::seal(&psk, &run.config.recipients) {
            Ok(s) => s,
            Err(e) => {
                let message = format!("the new PSK could not be sealed, so it was not sent: {e}");
                run.finish(
                    idx,
                    Outcome::Failed {
                        message,
                        interrupted: false,
                    },
                );
                continue;
            }
        };
        run.state.entry(&action.key, &action.name).stage_pending(
            sealed,
            run.sealed_to.clone(),
            Utc::now(),
        );
        run.stage(idx);
        let entry = PskEntry {
            tunnel_id: action.key.tunnel_id.clone(),
            psk,
        };
        by_account
            .entry(action.key.account_id.clone())
            .or_default()
            .push((idx, entry));
    }
    by_account
}

/// Sets one account's keys and stages what the answer means for each.
async fn send<'b>(
    run: &mut Run<'_>,
    account: &str,
    batch: &'b [(usize, PskEntry)],
) -> Vec<(usize, Outcome, &'b Psk)> {
    tracing::info!(%account, tunnels = batch.len(), "sending locally made keys in bulk");
    let entries: Vec<PskEntry> = batch.iter().map(|(_, e)| e.clone()).collect();
    let answer = run.client.set_psks(account, &entries, false).await;
    drop(entries);
    batch
        .iter()
        .map(|(idx, entry)| (*idx, settle(run, *idx, &answer), &entry.psk))
        .collect()
}

/// Hands each confirmed key to its router (when the policy delivers),
/// `--parallelism` at a time, then commits how that went before reporting.
async fn deliver_settled(
    run: &mut Run<'_>,
    settled: Vec<(usize, Outcome, &Psk)>,
) -> Result<(), StateError> {
    let shared: &Run<'_> = run;
    let deliveries =
        crate::cloudflare::concurrently(shared.parallelism(), settled, |(idx, o, psk)| {
            let how = match o {
                Outcome::Generated { .. } | Outcome::Rotated { .. } => {
                    shared.deliver_of(&shared.action(idx).key)
                }
                _ => None,
            };
            async move { (idx, o, deliver(how, psk).await) }
        })
        .await;
    let mut reports = Vec::new();
    let mut waits = Vec::new();
    for (idx, o, delivered) in deliveries {
        let o = match delivered {
            Some(r) => run.record_delivery(idx, r, o),
            None => o,
        };
        match run.begin_verification(idx, &o) {
            Some(wait) => waits.push((idx, o, wait)),
            None => reports.push((idx, o)),
        }
    }
    // Deliveries, and the start of each wait, are durable before the wait;
    // if the state cannot take them, no wait starts and the apply stops.
    let mut committed = run.commit().await;
    if committed.is_ok() && !waits.is_empty() {
        reports.extend(verify_round(run, waits).await);
        committed = run.commit().await;
    } else {
        reports.extend(waits.into_iter().map(|(idx, o, _)| (idx, o)));
    }
    for (idx, o) in reports {
        run.finish(idx, o);
    }
    committed
}

/// With `verify`: waits for every tunnel of the round (at most one per
/// site) to come back, side by side, before the next round rotates the
/// next path of their sites; stages how each went.
async fn verify_round(
    run: &mut Run<'_>,
    waits: Vec<(usize, Outcome, Wait)>,
) -> Vec<(usize, Outcome)> {
    let watcher = run.watcher.clone();
    let stop = run.options.stop.clone();
    let results = futures_util::future::join_all(waits.into_iter().map(
        |(idx, o, (how, tunnel, since, arrived))| {
            let (watcher, stop) = (watcher.clone(), stop.clone());
            async move {
                let r =
                    super::verify::until_back_up(&watcher, &how, &tunnel, since, arrived, &stop)
                        .await;
                (idx, o, r)
            }
        },
    ))
    .await;
    results
        .into_iter()
        .map(|(idx, o, r)| (idx, run.record_verification(idx, r, o)))
        .collect()
}

/// Stages what Cloudflare's answer to the bulk set means for one tunnel.
fn settle(run: &mut Run<'_>, idx: usize, answer: &BulkOutcome) -> Outcome {
    let action = run.action(idx);
    match answer.for_tunnel(&action.key.tunnel_id) {
        BulkResult::Applied(applied) => {
            run.edge_took(idx);
            let on = (applied.last_generated_on).unwrap_or_else(|| run.client.cloudflare_now());
            run.state
                .entry(&action.key, &action.name)
                .promote_pending(on);
            run.stage(idx);
            changed(action, on)
        }
        BulkResult::Unapplied(reason) => {
            withdraw_pending(run, idx);
            Outcome::Failed {
                message: format!("Cloudflare did not apply the PSK: {reason}"),
                interrupted: was_uncertain(action),
            }
        }
        BulkResult::Failed(e) => not_settled(run, idx, Some(e)),
        BulkResult::Unmentioned => not_settled(run, idx, None),
    }
}

/// The request failed (`err`) or the answer skipped the tunnel: the
/// pending key stays unless Cloudflare surely did not set it.
fn not_settled(run: &mut Run<'_>, idx: usize, err: Option<&ApiError>) -> Outcome {
    let action = run.action(idx);
    let unknown = err.is_none_or(|e| e.outcome_unknown());
    if !unknown {
        withdraw_pending(run, idx);
    }
    let mut message = err.map_or_else(
        || "Cloudflare's answer did not mention this tunnel".to_string(),
        |e| e.to_string(),
    );
    let interrupted = unknown || was_uncertain(action);
    if interrupted {
        message.push_str("\nThe PSK stays pending in the state; the next plan sends a new one");
    }
    Outcome::Failed {
        message,
        interrupted,
    }
}

/// Cloudflare surely did not set the pending key: drop it, unless the edge
/// was already unknown, in which case the pending record keeps saying so.
fn withdraw_pending(run: &mut Run<'_>, idx: usize) {
    let action = run.action(idx);
    if was_uncertain(action) {
        return;
    }
    run.state.withdraw_pending(&action.key);
    run.stage(idx);
}
