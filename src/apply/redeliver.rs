//! `psk deliver` as an entry point of the executor: handing sealed PSKs to
//! their routers again, outside an apply, under the same rules.
//!
//! A delivery outside apply must not be a back door around the site rule:
//! a path whose router is fine is not handed its key again while another
//! path of its site may be down (a router taking a key may bounce its
//! tunnel, and the site may hang on it alone), and a delivery that fails
//! here holds the site as one that failed in apply does. Every outcome goes
//! through the state's journal, committed before the next delivery starts,
//! and the record changes only through `TunnelState::record_delivery`.

use chrono::Utc;

use super::ApplyError;
use crate::config::{Config, Tunnel};
use crate::reconcile::{may_be_down, MayBeDown};
use crate::seal::{self, Identities};
use crate::state::{Journal, Lock, State};

/// Why `psk deliver` refuses before delivering anything.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no tunnel named `{name}` in {config}{hint}")]
    UnknownTunnel {
        name: String,
        config: String,
        hint: String,
    },
    #[error("tunnel `{name}` has no delivery command: its policy \"{policy}\" sets no `deliver`")]
    NoCommand { name: String, policy: String },
    #[error("psk holds no PSK for `{name}` yet; run `psk apply` first")]
    NoKey { name: String },
}

/// Why a run of deliveries stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("cannot open the PSK of `{name}`")]
    Open {
        name: String,
        #[source]
        source: seal::SealError,
    },
    #[error(transparent)]
    State(#[from] ApplyError),
}

/// How one tunnel's delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The command exited 0: the router holds the sealed PSK.
    Delivered,
    /// `--accept`: recorded as delivered without running the command
    /// (the operator put the key on the router another way).
    Accepted,
    /// The command failed, with why (never its output).
    Failed(String),
    /// Not run: another path of its site may be down. The sentence says
    /// which, and what lifts it.
    Held(String),
}

/// What `psk deliver` will hand over, checked: only [`select`] makes one,
/// so every tunnel in it has a sealed PSK and (unless `accept`) a
/// delivery command.
#[derive(Debug, Clone)]
pub struct Selection {
    tunnels: Vec<Tunnel>,
    accept: bool,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.tunnels.is_empty()
    }

    /// Whether the keys must be opened (not with `accept`).
    pub fn needs_identity(&self) -> bool {
        !self.accept && !self.tunnels.is_empty()
    }
}

/// The tunnels to deliver to: those named, or without names every tunnel
/// whose last delivery failed. A name psk.yaml does not hold, a policy
/// without `deliver` (unless `accept`) or a tunnel with no sealed PSK is
/// refused before anything runs.
pub fn select(
    config: &Config,
    state: &State,
    names: &[String],
    accept: bool,
) -> Result<Selection, Refusal> {
    let mut todo = Vec::new();
    if names.is_empty() {
        let failed = |t: &&Tunnel| {
            let rec = state.get(&t.key());
            rec.and_then(|r| r.delivery.as_ref()).is_some_and(|d| !d.ok)
                && rec.is_some_and(|r| r.psk.is_some())
        };
        todo.extend(config.tunnels.iter().filter(failed).cloned());
    }
    for n in names {
        let t = config
            .tunnel_by_name(n)
            .ok_or_else(|| Refusal::UnknownTunnel {
                name: n.clone(),
                config: config.path.display().to_string(),
                hint: config.did_you_mean(n),
            })?;
        todo.push(t.clone());
    }
    for t in &todo {
        if !accept && config.policy_of(t).deliver.is_none() {
            return Err(Refusal::NoCommand {
                name: t.name.clone(),
                policy: t.policy.clone(),
            });
        }
        if state.get(&t.key()).and_then(|r| r.psk.as_ref()).is_none() {
            return Err(Refusal::NoKey {
                name: t.name.clone(),
            });
        }
    }
    Ok(Selection {
        tunnels: todo,
        accept,
    })
}

/// Delivers the sealed PSK of each tunnel of `todo`, one after another,
/// or with `accept` records each as delivered. Each outcome is committed to
/// the journal before the next starts, and the journal is folded into the
/// state at the end; `on_result` hears of each as it is durable.
/// `identities` may be empty with `accept`.
pub async fn deliver(
    config: &Config,
    state: &mut State,
    lock: &Lock,
    todo: &Selection,
    identities: &Identities,
    mut on_result: impl FnMut(&Tunnel, &Delivered),
) -> Result<Vec<(String, Delivered)>, DeliverError> {
    let accept = todo.accept;
    let todo = &todo.tunnels;
    let mut journal = lock.journal(state).map_err(ApplyError::from)?;
    let mut results = Vec::new();
    let outcome = deliver_each(
        config,
        state,
        &mut journal,
        todo,
        identities,
        accept,
        &mut results,
        &mut on_result,
    )
    .await;
    // What was committed stays committed; fold it in either way.
    super::unwritable::fold(&mut journal, state)
        .await
        .map_err(ApplyError::from)?;
    outcome.map(|()| results)
}

#[allow(clippy::too_many_arguments)]
async fn deliver_each(
    config: &Config,
    state: &mut State,
    journal: &mut Journal,
    todo: &[Tunnel],
    identities: &Identities,
    accept: bool,
    results: &mut Vec<(String, Delivered)>,
    on_result: &mut impl FnMut(&Tunnel, &Delivered),
) -> Result<(), DeliverError> {
    for t in todo {
        let outcome = match held_by_a_sibling(config, state, t) {
            Some(why) => Delivered::Held(why),
            None if accept => Delivered::Accepted,
            None => {
                let sealed = (state.get(&t.key()).and_then(|r| r.psk.clone()))
                    .expect("a Selection holds only tunnels with a sealed PSK");
                let psk = seal::open(&sealed, identities).map_err(|source| DeliverError::Open {
                    name: t.name.clone(),
                    source,
                })?;
                let how = (config.policy_of(t).deliver.clone())
                    .expect("a Selection without accept holds only policies with `deliver`");
                match crate::deliver::deliver(&how, t, &psk).await {
                    Ok(()) => Delivered::Delivered,
                    Err(e) => Delivered::Failed(e),
                }
            }
        };
        let result = match &outcome {
            Delivered::Held(_) => None,
            Delivered::Delivered | Delivered::Accepted => Some(Ok(())),
            Delivered::Failed(e) => Some(Err(e.clone())),
        };
        if let Some(result) = result {
            (state.entry(&t.key(), &t.name)).record_delivery(result, Utc::now());
            journal.stage(&t.key());
            journal.commit(state).map_err(ApplyError::from)?;
        }
        on_result(t, &outcome);
        results.push((t.name.clone(), outcome));
    }
    Ok(())
}

/// The site rule for a delivery: a path that may itself be down is always
/// delivered to (that is what lifts it); any other waits while a sibling
/// may be down. The sentence is the hold the plan would show.
fn held_by_a_sibling(config: &Config, state: &State, t: &Tunnel) -> Option<String> {
    let site = t.site.as_deref()?;
    if may_be_down(config, t, Some(state), None).is_some() {
        return None;
    }
    (config.tunnels.iter())
        .filter(|s| s.site.as_deref() == Some(site) && s.key() != t.key())
        .find_map(|s| {
            let down: MayBeDown = may_be_down(config, s, Some(state), None)?;
            Some(down.hold(site, &s.name).describe())
        })
}
