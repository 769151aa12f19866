//! Whether a state file is this psk.yaml's.
//!
//! A psk.yaml pointed at another fleet's state (a copied `state:` line, a
//! wrong `--state`) would plan every record in it as "no longer in
//! psk.yaml" and forget the only copies of keys still live on Cloudflare.
//! So a state that shares no account, or no tunnel, with psk.yaml is
//! refused before anything is planned, naming both files and what differs.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use super::State;
use crate::config::Config;

/// A state that is not psk.yaml's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    pub state_path: PathBuf,
    pub config_path: PathBuf,
    /// The accounts each file names, when they share none.
    pub accounts: Option<(Vec<String>, Vec<String>)>,
    /// A few of the state's tunnel names, and how many it holds.
    pub state_tunnels: (Vec<String>, usize),
    /// A few of psk.yaml's tunnel names, and how many it lists.
    pub config_tunnels: (Vec<String>, usize),
}

/// `Err` when `state` (read from `state_path`) shares no account or no
/// tunnel (by id, or by name for tunnels psk.yaml names only by name) with
/// `config`. An empty state or an empty psk.yaml has nothing to compare.
pub fn check_belongs(
    state: &State,
    state_path: &Path,
    config: &Config,
) -> Result<(), Box<Foreign>> {
    if state.tunnels.is_empty() || config.tunnels.len() + config.unresolved.len() == 0 {
        return Ok(());
    }
    let state_accounts: BTreeSet<&str> = state
        .tunnels
        .keys()
        .map(|k| k.account_id.as_str())
        .collect();
    let config_accounts = config.accounts();
    let shares_account = config_accounts
        .iter()
        .any(|a| state_accounts.contains(a.as_str()));
    let state_names: BTreeSet<&str> = state.tunnels.values().map(|r| r.name.as_str()).collect();
    let shares_tunnel = config
        .tunnels
        .iter()
        .any(|t| state.tunnels.contains_key(&t.key()) || state_names.contains(t.name.as_str()))
        || config
            .unresolved
            .iter()
            .any(|u| state_names.contains(u.name.as_str()));
    if shares_account && shares_tunnel {
        return Ok(());
    }
    let config_names: Vec<String> = (config.tunnels.iter().map(|t| t.name.clone()))
        .chain(config.unresolved.iter().map(|u| u.name.clone()))
        .collect();
    Err(Box::new(Foreign {
        state_path: state_path.to_path_buf(),
        config_path: config.path.clone(),
        accounts: (!shares_account).then(|| {
            let ours = state_accounts.iter().map(|a| a.to_string()).collect();
            (ours, config_accounts.clone())
        }),
        state_tunnels: (
            state_names.iter().take(3).map(|n| n.to_string()).collect(),
            state.tunnels.len(),
        ),
        config_tunnels: (
            config_names.iter().take(3).cloned().collect(),
            config_names.len(),
        ),
    }))
}

impl std::error::Error for Foreign {}

fn some(names: &(Vec<String>, usize)) -> String {
    let (first, total) = names;
    let more = total.saturating_sub(first.len());
    let mut s = first.join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (state, config) = (self.state_path.display(), self.config_path.display());
        writeln!(f, "the state {state} is not the state of {config}:")?;
        if let Some((theirs, ours)) = &self.accounts {
            writeln!(
                f,
                "  accounts: the state holds {}; {config} names {}",
                theirs.join(", "),
                ours.join(", ")
            )?;
        }
        writeln!(
            f,
            "  tunnels: none in common; the state holds {} tunnel{} ({}), {config} lists {} ({})",
            self.state_tunnels.1,
            if self.state_tunnels.1 == 1 { "" } else { "s" },
            some(&self.state_tunnels),
            self.config_tunnels.1,
            some(&self.config_tunnels),
        )?;
        writeln!(
            f,
            "Planning with it would forget every record in it: the only copies of keys that may still be live on Cloudflare."
        )?;
        write!(
            f,
            "Point psk at this fleet's own state (psk.yaml's `state:` or --state FILE), or at the psk.yaml of that state's fleet (-c FILE). If {config} really replaces that whole fleet, pass --foreign-state"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::TunnelKey;

    const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
    const OTHER: &str = "99999999999999999999999999999999";

    fn config(account: &str, tunnels: &[(&str, &str)]) -> Config {
        let mut text = format!(
            "version: 1\naccount_id: {account}\nrecipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]\npolicies:\n  default: {{rotate_every: 30d}}\ntunnels:\n"
        );
        for (name, id) in tunnels {
            text.push_str(&format!("  - {{name: {name}, id: {id}}}\n"));
        }
        Config::parse(Path::new("psk.yaml"), &text).unwrap()
    }

    fn state(account: &str, tunnels: &[(&str, &str)]) -> State {
        let mut s = State::new(vec![]);
        for (name, id) in tunnels {
            s.entry(&TunnelKey::new(account, id), name);
        }
        s
    }

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";
    const C: &str = "00000000000000000000000000000c0c";

    #[test]
    fn one_tunnel_in_common_is_enough() {
        let c = config(ACCOUNT, &[("a", A), ("c", C)]);
        let s = state(ACCOUNT, &[("a", A), ("b", B)]);
        assert_eq!(check_belongs(&s, Path::new("s.json"), &c), Ok(()));
        // Renamed in psk.yaml, same id: still this fleet's.
        let s = state(ACCOUNT, &[("old-a", A)]);
        assert_eq!(check_belongs(&s, Path::new("s.json"), &c), Ok(()));
        // Empty on either side: nothing to compare.
        assert_eq!(
            check_belongs(&State::new(vec![]), Path::new("s.json"), &c),
            Ok(())
        );
    }

    #[test]
    fn no_tunnel_or_no_account_in_common_is_refused() {
        let c = config(ACCOUNT, &[("a", A)]);
        let s = state(ACCOUNT, &[("b", B), ("c", C)]);
        let e = check_belongs(&s, Path::new("other.state.json"), &c).unwrap_err();
        assert_eq!(e.accounts, None);
        let text = e.to_string();
        assert!(
            text.contains("other.state.json is not the state of psk.yaml"),
            "{text}"
        );
        assert!(
            text.contains("holds 2 tunnels (b, c), psk.yaml lists 1 (a)"),
            "{text}"
        );
        assert!(text.contains("--foreign-state"), "{text}");

        // Same names, other account: another fleet named alike.
        let s = state(OTHER, &[("a", A)]);
        let e = check_belongs(&s, Path::new("s.json"), &c).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!(
                "accounts: the state holds {OTHER}; psk.yaml names {ACCOUNT}"
            )),
            "{text}"
        );
    }
}
