//! The desired state, `psk.yaml`: what people edit and review.
//!
//! This file holds the model the rest of psk reads: a [`Config`] that
//! cannot hold an invalid value, its tunnels, and the [`Diagnostic`]s that
//! explain a file which is not one. Getting there is three stages, each in
//! its own module, so the rest of psk never sees an invalid value:
//!
//! - [`parse`](Config::parse) reads the text: the checks on raw characters
//!   (`guard`), one event pass for positions and the document (`scan`,
//!   `locate`), the schema generated from the `raw` types (every unknown
//!   key, missing key and wrong type at once), then serde into `raw`.
//! - `validate` checks the raw file as a whole (duplicates, references,
//!   durations, windows, recipients) and builds the `Config`.
//! - `resolve` finds the ids of tunnels named only by name, once psk has
//!   Cloudflare's list or the state.
//!
//! `write` goes the other way: names and scalars as psk writes them into a
//! psk.yaml (`psk init`, the line a plan offers for an unmanaged tunnel).
//!
//! Every problem found is reported with file, line, column and key path.

mod guard;
mod locate;
mod parse;
mod raw;
mod resolve;
mod scan;
pub mod schema;
mod validate;
pub mod write;

#[cfg(test)]
mod fixtures;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::policy::Policy;
use crate::seal::Recipient;
use crate::tunnel::TunnelKey;
pub use locate::{Locations, Position};

/// The only format version this build understands.
pub const CONFIG_VERSION: u64 = 1;

/// The state psk.yaml names when it says nothing: beside it.
pub const DEFAULT_STATE: &str = "psk.state.json";

#[derive(Debug)]
pub struct Config {
    /// The file this was read from, as given.
    pub path: PathBuf,
    /// Where the state lives, as psk.yaml's `state:` says it (a file
    /// relative to psk.yaml's folder, or a URL); the session resolves it.
    pub state: String,
    pub recipients: Vec<Recipient>,
    pub policies: BTreeMap<String, Policy>,
    /// Tunnels whose Cloudflare id is known, in file order.
    pub tunnels: Vec<Tunnel>,
    /// Tunnels named only by their Cloudflare name whose id is not known
    /// yet: see [`Config::resolve`].
    pub unresolved: Vec<Unresolved>,
    /// Problems that do not stop psk, such as a policy no tunnel uses.
    pub warnings: Vec<Diagnostic>,
    /// What people call each recipient, by fingerprint: the YAML comment
    /// on its line (`- age1... # alice`), an SSH key's own comment, or the
    /// key shortened. Shown wherever a fingerprint alone would say nothing.
    pub recipient_names: BTreeMap<String, String>,
    /// Tunnels psk.yaml leaves alone on purpose (`ignore:`): never
    /// reported as unmanaged.
    pub ignore: Vec<Ignored>,
    /// Each tunnel's place in the file, by name, to keep file order.
    order: HashMap<String, usize>,
}

/// An entry of `ignore:`: a tunnel psk.yaml's accounts hold that psk
/// leaves to someone else, by its Cloudflare id or its name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// 32 hexadecimal characters, lowercase.
    Id(String),
    /// The tunnel's name at Cloudflare, exactly.
    Name(String),
}

impl Ignored {
    /// Whether this entry names the tunnel `id` called `name` at Cloudflare.
    pub fn matches(&self, id: &str, name: &str) -> bool {
        match self {
            Ignored::Id(i) => i.eq_ignore_ascii_case(id),
            Ignored::Name(n) => n == name,
        }
    }
}

/// A tunnel named by its Cloudflare name alone, before its id is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub name: String,
    pub account_id: String,
    pub policy: String,
    pub site: Option<String>,
    /// Its key path in psk.yaml, e.g. `accounts.eu.tunnels[2]`.
    pub key_path: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub name: String,
    pub id: String,
    pub account_id: String,
    pub policy: String,
    pub site: Option<String>,
}

impl Tunnel {
    pub fn key(&self) -> TunnelKey {
        TunnelKey::new(&self.account_id, &self.id)
    }
}

/// One problem in a file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub position: Position,
    /// The key path, e.g. `tunnels[2].id`; empty for the whole document.
    pub key: String,
    pub message: String,
}

/// Everything wrong with a config file, in file order.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        writeln!(
            f,
            "{} has {} problem{}:",
            self.file.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for (i, d) in self.diagnostics.iter().enumerate() {
            let key = if d.key.is_empty() {
                String::new()
            } else {
                format!("{}: ", d.key)
            };
            write!(
                f,
                "  {}:{}:{}: {}{}",
                self.file.display(),
                d.position.line,
                d.position.column,
                key,
                d.message
            )?;
            if i + 1 < n {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Diagnostic {
    /// A problem of the text itself (a character, a second document, the
    /// encoding), which no key owns.
    fn at(position: Position, message: String) -> Diagnostic {
        Diagnostic {
            position,
            key: String::new(),
            message,
        }
    }
}

impl ConfigError {
    /// Every problem of `file`, in file order.
    fn new(file: &Path, mut diagnostics: Vec<Diagnostic>) -> ConfigError {
        diagnostics.sort_by_key(|d| d.position);
        ConfigError {
            file: file.to_path_buf(),
            diagnostics,
        }
    }
}

impl Config {
    pub fn policy_of(&self, tunnel: &Tunnel) -> &Policy {
        // Validation guarantees every tunnel's policy exists.
        &self.policies[&tunnel.policy]
    }

    /// Accounts in a stable order, each once (also those of tunnels whose
    /// id is not known yet: their account is listed to find it).
    pub fn accounts(&self) -> Vec<String> {
        let mut a: Vec<String> = self
            .tunnels
            .iter()
            .map(|t| t.account_id.clone())
            .chain(self.unresolved.iter().map(|u| u.account_id.clone()))
            .collect();
        a.sort();
        a.dedup();
        a
    }

    /// The name people know `fingerprint` by, when psk.yaml lists it.
    pub fn recipient_name(&self, fingerprint: &str) -> Option<&str> {
        self.recipient_names.get(fingerprint).map(String::as_str)
    }

    /// Recipient fingerprints, sorted: what the state header records.
    pub fn recipient_fingerprints(&self) -> Vec<String> {
        let mut f: Vec<String> = self.recipients.iter().map(Recipient::fingerprint).collect();
        f.sort();
        f.dedup();
        f
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{parse, GOOD};

    #[test]
    fn error_display_names_file_and_line() {
        let err = parse(&GOOD.replace("90d", "0d")).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("conf/psk.yaml:7:5: policies.default.rotate_every: `0d` is zero"),
            "{shown}"
        );
    }
}
