//! Tunnels psk.yaml names only by their Cloudflare name: which tunnel id
//! each one means.
//!
//! This happens once, before planning, so the planner, the dry run and the
//! executor all see one [`Config`] in which every tunnel that can be known
//! has its id (and so its policy, site and generator). The state answers
//! first: it recorded the id the last apply used, which is what lets
//! `--offline` plan such a tunnel. Cloudflare's list answers the rest,
//! when psk is online.

use std::collections::HashMap;
use std::path::PathBuf;

use super::plan::Remote;
use crate::config::Config;
use crate::state::State;
use crate::tunnel::TunnelKey;

/// A name in psk.yaml that does not point at exactly one tunnel psk.yaml
/// does not already list. (Returned boxed: it is rare and large.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "{}:{line}: tunnel `{name}` is Cloudflare's tunnel {id} in account {account}, which psk.yaml also lists as `{listed_as}`; list each tunnel once",
        file.display()
    )]
    ListedTwice {
        file: PathBuf,
        line: usize,
        name: String,
        id: String,
        account: String,
        listed_as: String,
    },
    #[error(
        "{}:{line}: {} tunnels in account {account} are named `{name}` ({}); psk cannot tell which one `{name}` means. Add its `id` to psk.yaml",
        file.display(),
        ids.len(),
        ids.join(", ")
    )]
    Ambiguous {
        file: PathBuf,
        line: usize,
        name: String,
        account: String,
        ids: Vec<String>,
    },
}

/// Gives every tunnel of `config` named only by name the id that `state`
/// recorded for it, else the one in Cloudflare's list (`remote`). What
/// neither knows stays in `config.unresolved`: offline, the CLI refuses it
/// (`Config::require_resolved`); online, refresh reports it missing.
///
/// Refuses a name Cloudflare gives to several tunnels of the account, and
/// one that turns out to be a tunnel psk.yaml also lists by id.
pub fn resolve_names(
    config: &mut Config,
    state: Option<&State>,
    remote: Option<&Remote>,
) -> Result<(), Box<NameError>> {
    if config.unresolved.is_empty() {
        return Ok(());
    }
    if let Some(state) = state {
        let mut recorded: HashMap<(&str, &str), &str> = HashMap::new();
        for rec in state.tunnels.values() {
            recorded
                .entry((rec.account_id.as_str(), rec.name.as_str()))
                .or_insert(rec.tunnel_id.as_str());
        }
        config.resolve(|account, name| recorded.get(&(account, name)).map(|id| id.to_string()));
    }
    if let Some(remote) = remote {
        let listed = ids_by_name(remote);
        check_remote_names(config, &listed)?;
        config.resolve(|account, name| match listed.get(&(account, name)) {
            Some(ids) if ids.len() == 1 => Some(ids[0].to_string()),
            _ => None,
        });
    }
    Ok(())
}

/// Cloudflare's tunnel ids by account and name, in key order.
fn ids_by_name(remote: &Remote) -> HashMap<(&str, &str), Vec<&str>> {
    let mut listed: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    for (key, t) in &remote.tunnels {
        listed
            .entry((key.account_id.as_str(), t.name.as_str()))
            .or_default()
            .push(key.tunnel_id.as_str());
    }
    listed
}

/// The first name, in psk.yaml order, that means several tunnels or one
/// psk.yaml lists already.
fn check_remote_names(
    config: &Config,
    listed: &HashMap<(&str, &str), Vec<&str>>,
) -> Result<(), Box<NameError>> {
    let by_key = config.tunnels_by_key();
    for u in &config.unresolved {
        let ids = listed
            .get(&(u.account_id.as_str(), u.name.as_str()))
            .map_or(&[][..], Vec::as_slice);
        match ids {
            [] => {}
            [id] => {
                if let Some(t) = by_key.get(&TunnelKey::new(&u.account_id, id)) {
                    return Err(Box::new(NameError::ListedTwice {
                        file: config.path.clone(),
                        line: u.line,
                        name: u.name.clone(),
                        id: id.to_string(),
                        account: u.account_id.clone(),
                        listed_as: t.name.clone(),
                    }));
                }
            }
            _ => {
                return Err(Box::new(NameError::Ambiguous {
                    file: config.path.clone(),
                    line: u.line,
                    name: u.name.clone(),
                    account: u.account_id.clone(),
                    ids: ids.iter().map(|id| id.to_string()).collect(),
                }))
            }
        }
    }
    Ok(())
}
