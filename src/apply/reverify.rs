//! `psk verify` as an entry point of the executor: checking, outside an
//! apply, whether paths that were not shown back up after their new PSK
//! are back, and lifting the hold they put on their sites.
//!
//! The check is one poll of apply's wait (`verify::check_once`), and the
//! record changes only through `TunnelState::end_verification`, committed
//! to the state's journal before the next check, as apply records a wait.

use chrono::{DateTime, Utc};

use super::ApplyError;
use crate::cloudflare::Client;
use crate::config::{Config, Tunnel};
use crate::state::{Lock, State};

/// Why `psk verify` refuses before checking anything.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no tunnel named `{name}` in {config}{hint}")]
    UnknownTunnel {
        name: String,
        config: String,
        hint: String,
    },
}

/// What `psk verify` will check: the tunnels named, or every tunnel not
/// shown back up, keeping only those whose record says they were not.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Named tunnels that are not held (nothing to check), for the report.
    pub clear: Vec<String>,
    tunnels: Vec<(Tunnel, DateTime<Utc>)>,
}

impl Selection {
    /// Nothing is held by any of them.
    pub fn is_empty(&self) -> bool {
        self.tunnels.is_empty()
    }
}

/// How one tunnel's check went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Back up; says what showed it. The hold is lifted.
    Back(String),
    /// Still not shown back up since its new key of `since`: why.
    StillDown { since: DateTime<Utc>, why: String },
}

/// The tunnels to check, from their names (all not shown back up when
/// none are given).
pub fn select(config: &Config, state: &State, names: &[String]) -> Result<Selection, Refusal> {
    let since =
        |t: &Tunnel| (state.get(&t.key()).and_then(|r| r.verification.as_ref())).map(|v| v.since);
    let mut named = Vec::new();
    for n in names {
        let t = config
            .tunnel_by_name(n)
            .ok_or_else(|| Refusal::UnknownTunnel {
                name: n.clone(),
                config: config.path.display().to_string(),
                hint: config.did_you_mean(n),
            })?;
        named.push(t.clone());
    }
    let candidates: Vec<Tunnel> = match names.is_empty() {
        true => config.tunnels.clone(),
        false => named.clone(),
    };
    let tunnels = (candidates.into_iter())
        .filter_map(|t| since(&t).map(|s| (t, s)))
        .collect();
    let clear = (named.iter())
        .filter(|t| since(t).is_none())
        .map(|t| t.name.clone())
        .collect();
    Ok(Selection { clear, tunnels })
}

/// Checks each tunnel of `todo` once, as a poll of apply's wait does (with
/// `client` for Cloudflare's health checks; without one, `--accept`: every
/// hold is lifted unchecked). A path shown back up has its record cleared
/// and committed to the journal before the next check; the journal is
/// folded into the state at the end. `on_result` hears of each.
pub async fn verify(
    config: &Config,
    state: &mut State,
    lock: &Lock,
    client: Option<&Client>,
    todo: &Selection,
    mut on_result: impl FnMut(&Tunnel, &Checked),
) -> Result<Vec<(String, Checked)>, ApplyError> {
    let mut journal = lock.journal(state)?;
    let mut results = Vec::new();
    let mut committed = Ok(());
    for (t, since) in &todo.tunnels {
        let result = match (client, config.policy_of(t).verify.as_ref()) {
            (None, _) => Ok("not checked (--accept)".to_string()),
            (Some(_), None) => Err(format!(
                "its policy \"{}\" no longer sets `verify`, so there is nothing to check; `psk verify --accept {}` lifts the hold",
                t.policy, t.name
            )),
            (Some(c), Some(v)) => super::verify::check_once(c, v, t, *since).await,
        };
        let checked = match result {
            Ok(how) => {
                (state.entry(&t.key(), &t.name)).end_verification(Ok(()), Utc::now());
                journal.stage(&t.key());
                committed = journal.commit(state);
                Checked::Back(how)
            }
            Err(why) => Checked::StillDown { since: *since, why },
        };
        if committed.is_err() {
            break;
        }
        on_result(t, &checked);
        results.push((t.name.clone(), checked));
    }
    super::unwritable::fold(&mut journal, state).await?;
    committed?;
    Ok(results)
}
