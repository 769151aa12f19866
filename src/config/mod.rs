//! The desired state, `psk.yaml`: what people edit and review.
//!
//! Three stages, so the rest of psk never sees an invalid value: the YAML
//! is checked against the schema generated from `raw` (every unknown key,
//! missing key and wrong type at once), then read into the `raw` structs,
//! then [`Config::parse`] checks it as a whole (duplicates, references,
//! durations, windows, recipients) and builds the validated model. Every
//! problem found is reported with file, line, column and key path.

mod guard;
mod locate;
mod raw;
mod scan;
pub mod schema;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::policy::window::{self, Window};
use crate::policy::{Generator, Policy, Span};
use crate::seal::Recipient;
use crate::suggest::closest;
use crate::tunnel::is_cloudflare_id;
use crate::tunnel::TunnelKey;
pub use locate::{Locations, Position};

/// The only format version this build understands.
pub const CONFIG_VERSION: u64 = 1;

#[derive(Debug)]
pub struct Config {
    /// The file this was read from, as given.
    pub path: PathBuf,
    /// Where the state lives: `state:` resolved against the config's folder.
    pub state_path: PathBuf,
    pub recipients: Vec<Recipient>,
    pub policies: BTreeMap<String, Policy>,
    /// Tunnels whose Cloudflare id is known, in file order.
    pub tunnels: Vec<Tunnel>,
    /// Tunnels named only by their Cloudflare name whose id is not known
    /// yet: see [`Config::resolve`].
    pub unresolved: Vec<Unresolved>,
    /// Problems that do not stop psk, such as a policy no tunnel uses.
    pub warnings: Vec<Diagnostic>,
    /// Each tunnel's place in the file, by name, to keep file order.
    order: HashMap<String, usize>,
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

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let single = |message: String| ConfigError {
            file: path.to_path_buf(),
            diagnostics: vec![Diagnostic {
                position: Position { line: 1, column: 1 },
                key: String::new(),
                message,
            }],
        };
        let bytes = std::fs::read(path).map_err(|e| {
            single(format!(
                "cannot read it: {e}. Create it (see examples/quickstart/psk.yaml) or pass -c FILE"
            ))
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let offset = e.utf8_error().valid_up_to();
            let before = &e.as_bytes()[..offset];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let column = offset
                - before
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |p| p + 1)
                + 1;
            ConfigError {
                file: path.to_path_buf(),
                diagnostics: vec![Diagnostic {
                    position: Position { line, column },
                    key: String::new(),
                    message: "the file is not valid UTF-8".into(),
                }],
            }
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let fail = |mut diagnostics: Vec<Diagnostic>| {
            diagnostics.sort_by_key(|d| d.position);
            ConfigError {
                file: path.to_path_buf(),
                diagnostics,
            }
        };
        let at_start = |message: &str| Diagnostic {
            position: Position { line: 1, column: 1 },
            key: String::new(),
            message: message.to_string(),
        };
        guard::check_text(text).map_err(|d| fail(vec![d]))?;
        // One pass of yaml-rust2: the alias cap, key positions, the tree.
        let scan::Scan {
            locations: loc,
            doc,
        } = scan::scan(text).map_err(|d| fail(vec![d]))?;
        if text.trim().is_empty() {
            return Err(fail(vec![at_start(
                "the file is empty; it needs at least `version: 1`, `recipients`, `policies` and `tunnels`",
            )]));
        }
        // The model, read once. serde_yaml reads the whole document before
        // building anything, so a document it reads is free of syntax
        // errors; when it fails, the syntax is checked on its own first,
        // because serde_yaml's messages and positions for those are good.
        let raw = serde_yaml::from_str::<raw::RawConfig>(text);
        if raw.is_err() {
            serde_yaml::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| fail(vec![serde_diagnostic(&e)]))?;
        }
        // Before anything builds a tree: loaders keep one of two equal keys.
        let duplicates: Vec<Diagnostic> = loc
            .duplicates()
            .iter()
            .map(|(key, position)| Diagnostic {
                position: *position,
                key: key.clone(),
                message:
                    "appears twice in one mapping; YAML keeps only one of them, so remove the other"
                        .into(),
            })
            .collect();
        if !duplicates.is_empty() {
            return Err(fail(duplicates));
        }
        let structural = schema::check(&doc, &loc);
        if !structural.diagnostics.is_empty() {
            let mut all = structural.diagnostics.clone();
            // Misspelled keys alone do not hide the other mistakes: check
            // the meaning of the rest too, so every error shows at once.
            let pruned = structural
                .only_unknown_keys
                .then(|| without_keys(text, &loc, &structural.unknown_paths))
                .flatten();
            if let Some(pruned) = pruned {
                if let Ok(raw) = serde_yaml::from_str::<raw::RawConfig>(&pruned) {
                    let mut v = Validator {
                        loc: &loc,
                        out: Vec::new(),
                        warnings: Vec::new(),
                    };
                    v.config(&raw);
                    all.extend(v.out);
                }
            }
            return Err(fail(all));
        }
        let raw = raw.map_err(|e| fail(vec![serde_diagnostic(&e)]))?;
        let mut v = Validator {
            loc: &loc,
            out: Vec::new(),
            warnings: Vec::new(),
        };
        let checked = v.config(&raw);
        if !v.out.is_empty() {
            return Err(fail(v.out));
        }
        let (recipients, policies, tunnels, unresolved, order) = checked;
        let mut warnings = v.warnings;
        warnings.sort_by_key(|d| d.position);
        let base = path.parent().unwrap_or(Path::new(""));
        let state_path = base.join(raw.state.as_deref().unwrap_or("psk.state.json"));
        Ok(Config {
            path: path.to_path_buf(),
            state_path,
            recipients,
            policies,
            tunnels,
            unresolved,
            warnings,
            order,
        })
    }

    /// Finds the ids of tunnels named only by name: `lookup(account, name)`
    /// answers from Cloudflare's list or from the state. Returns the
    /// tunnels still unknown (they stay in `unresolved`).
    pub fn resolve(
        &mut self,
        mut lookup: impl FnMut(&str, &str) -> Option<String>,
    ) -> Vec<Unresolved> {
        let mut still = Vec::new();
        for u in std::mem::take(&mut self.unresolved) {
            match lookup(&u.account_id, &u.name) {
                Some(id) => self.tunnels.push(Tunnel {
                    name: u.name,
                    id: id.to_ascii_lowercase(),
                    account_id: u.account_id,
                    policy: u.policy,
                    site: u.site,
                }),
                None => still.push(u),
            }
        }
        let order = &self.order;
        self.tunnels
            .sort_by_key(|t| order.get(&t.name).copied().unwrap_or(usize::MAX));
        self.unresolved = still.clone();
        still
    }

    /// Every tunnel with an id, in file order: those of psk.yaml and those
    /// named only by name that `lookup(account, name)` finds (in the list
    /// Cloudflare returned). Does not change `self`.
    pub fn tunnels_resolved_by(
        &self,
        lookup: impl FnMut(&str, &str) -> Option<String>,
    ) -> Vec<Tunnel> {
        if self.unresolved.is_empty() {
            return self.tunnels.clone();
        }
        let mut copy = Config {
            path: self.path.clone(),
            state_path: self.state_path.clone(),
            recipients: Vec::new(),
            policies: BTreeMap::new(),
            tunnels: self.tunnels.clone(),
            unresolved: self.unresolved.clone(),
            warnings: Vec::new(),
            order: self.order.clone(),
        };
        copy.resolve(lookup);
        copy.tunnels
    }

    /// An error naming every tunnel whose id is still unknown, or `Ok`.
    pub fn require_resolved(&self, why: &str) -> Result<(), ConfigError> {
        if self.unresolved.is_empty() {
            return Ok(());
        }
        Err(ConfigError {
            file: self.path.clone(),
            diagnostics: self
                .unresolved
                .iter()
                .map(|u| Diagnostic {
                    position: Position {
                        line: u.line,
                        column: 1,
                    },
                    key: u.key_path.clone(),
                    message: format!(
                        "tunnel `{}` has no `id` and {why}; run `psk plan` without --offline (psk finds the id by name at Cloudflare) and `psk apply` once to record it, or add its `id`",
                        u.name
                    ),
                })
                .collect(),
        })
    }

    /// Tunnels by key, for code that looks up one per action: a linear
    /// search each time makes a 10,000-tunnel plan or apply quadratic.
    pub fn tunnels_by_key(&self) -> std::collections::HashMap<TunnelKey, &Tunnel> {
        self.tunnels.iter().map(|t| (t.key(), t)).collect()
    }

    pub fn tunnel_by_name(&self, name: &str) -> Option<&Tunnel> {
        self.tunnels.iter().find(|t| t.name == name)
    }

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

    /// Recipient fingerprints, sorted: what the state header records.
    pub fn recipient_fingerprints(&self) -> Vec<String> {
        let mut f: Vec<String> = self.recipients.iter().map(Recipient::fingerprint).collect();
        f.sort();
        f.dedup();
        f
    }
}

/// `text` with the block-style lines of each key at `paths` turned into
/// comments, so line numbers stay put; `None` when a key is not written
/// alone at the start of its line (flow style), where that is not safe.
fn without_keys(text: &str, loc: &Locations, paths: &[String]) -> Option<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for path in paths {
        let key = path.rsplit('.').next()?;
        let pos = loc.get(path);
        let at = pos.line.checked_sub(1)?;
        let indent = pos.column.checked_sub(1)?;
        let line = lines.get(at)?;
        let rest = line.get(indent..)?;
        if !line[..indent].trim().is_empty() || !rest.starts_with(key) {
            return None;
        }
        if !rest[key.len()..].trim_start().starts_with(':') {
            return None;
        }
        lines[at] = "#".into();
        // The key's value continues on the lines indented deeper.
        for next in lines.iter_mut().skip(at + 1) {
            let depth = next.len() - next.trim_start().len();
            if !next.trim().is_empty() && depth <= indent {
                break;
            }
            *next = "#".into();
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Some(out)
}

/// A serde_yaml error (syntax, or a type serde found first) as a diagnostic.
fn serde_diagnostic(e: &serde_yaml::Error) -> Diagnostic {
    let position = e
        .location()
        .map_or(Position { line: 1, column: 1 }, |l| Position {
            line: l.line(),
            column: l.column(),
        });
    let mut message = e.to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    // serde_yaml prefixes the key path ("tunnels[0]: ..."); split it off
    // so every diagnostic has the same shape.
    let (key, message) = match message.split_once(": ") {
        Some((k, m)) if !k.contains(' ') => (k.to_string(), m.to_string()),
        _ => (String::new(), message),
    };
    Diagnostic {
        position,
        key,
        message,
    }
}

fn bad_id(what: &str, value: &str) -> String {
    let shown: String = value.chars().take(48).collect();
    format!("`{shown}` is not a Cloudflare {what}; expected 32 hexadecimal characters")
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

struct Validator<'a> {
    loc: &'a Locations,
    out: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

/// Where a tunnel's policy came from, for the message when it is unknown.
enum PolicySource {
    Tunnel,
    Inherited,
    Implicit,
}

/// A tunnel entry from anywhere in the file, with where it sits.
struct Entry<'r> {
    raw: &'r raw::RawTunnel,
    path: String,
    /// `(name, id)` of the `accounts:` block it sits in.
    block: Option<(&'r str, Option<String>)>,
    block_policy: Option<&'r str>,
}

type Checked = (
    Vec<Recipient>,
    BTreeMap<String, Policy>,
    Vec<Tunnel>,
    Vec<Unresolved>,
    HashMap<String, usize>,
);

impl Validator<'_> {
    fn push(&mut self, key: &str, message: String) {
        self.out.push(Diagnostic {
            position: self.loc.get(key),
            key: key.to_string(),
            message,
        });
    }

    fn warn(&mut self, key: &str, message: String) {
        self.warnings.push(Diagnostic {
            position: self.loc.get(key),
            key: key.to_string(),
            message,
        });
    }

    fn line_of(&self, key: &str) -> usize {
        self.loc.get(key).line
    }

    fn config(&mut self, raw: &raw::RawConfig) -> Checked {
        if raw.version != CONFIG_VERSION {
            self.push(
                "version",
                format!(
                    "version {} is not supported; this psk reads version {CONFIG_VERSION}",
                    raw.version
                ),
            );
        }
        let recipients = self.recipients(&raw.recipients);
        let policies = self.policies(&raw.policies);
        let known_policy = |name: &str| raw.policies.contains_key(name);

        // Accounts by their short name.
        let mut account_ids: BTreeMap<&str, Option<String>> = BTreeMap::new();
        let mut seen_account: HashMap<String, String> = HashMap::new();
        for (alias, a) in &raw.accounts {
            let key = format!("accounts.{alias}");
            if !is_plain_name(alias) {
                self.push(
                    &key,
                    format!("account name `{alias}` must be letters, digits, `-` or `_`"),
                );
            }
            let id = a.id.trim().to_ascii_lowercase();
            let id = if is_cloudflare_id(&id) {
                if let Some(first) = seen_account.insert(id.clone(), key.clone()) {
                    let line = self.line_of(&format!("{first}.id"));
                    self.push(
                        &format!("{key}.id"),
                        format!("account id {id} is also `{first}` (line {line}); list each account once"),
                    );
                }
                Some(id)
            } else {
                self.push(&format!("{key}.id"), bad_id("account id", &a.id));
                None
            };
            if let Some(p) = a.policy.as_deref() {
                if !known_policy(p) {
                    let msg = self.unknown_policy(p, &raw.policies, "");
                    self.push(&format!("{key}.policy"), msg);
                }
            }
            account_ids.insert(alias.as_str(), id);
        }

        // The default account: `account_id` or `defaults.account`.
        let defaults = raw.defaults.as_ref();
        let default_account: Option<Option<String>> = match (
            raw.account_id.as_deref(),
            defaults.and_then(|d| d.account.as_deref()),
        ) {
            (Some(_), Some(_)) => {
                self.push(
                    "defaults.account",
                    "both `account_id` and `defaults.account` set the default account; keep one"
                        .into(),
                );
                Some(None)
            }
            (Some(a), None) => Some(self.account_ref(a, &account_ids, "account_id", true)),
            (None, Some(a)) => Some(self.account_ref(a, &account_ids, "defaults.account", false)),
            (None, None) => None,
        };
        let default_policy = defaults.and_then(|d| d.policy.as_deref());
        if let Some(p) = default_policy {
            if !known_policy(p) {
                let msg = self.unknown_policy(p, &raw.policies, "");
                self.push("defaults.policy", msg);
            }
        }

        // Every tunnel, wherever it is written, in file order.
        let mut entries: Vec<Entry> = Vec::new();
        for (i, t) in raw.tunnels.iter().enumerate() {
            entries.push(Entry {
                raw: t,
                path: format!("tunnels[{i}]"),
                block: None,
                block_policy: None,
            });
        }
        for (alias, a) in &raw.accounts {
            for (i, t) in a.tunnels.iter().enumerate() {
                entries.push(Entry {
                    raw: t,
                    path: format!("accounts.{alias}.tunnels[{i}]"),
                    block: Some((
                        alias.as_str(),
                        account_ids.get(alias.as_str()).cloned().flatten(),
                    )),
                    block_policy: a.policy.as_deref(),
                });
            }
        }
        entries.sort_by_cached_key(|e| self.loc.get(&e.path));

        let mut tunnels = Vec::new();
        let mut unresolved = Vec::new();
        let mut order = HashMap::new();
        // The entry that first used a name or an id; its key path is only
        // spelled out for a duplicate.
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut by_id: HashMap<TunnelKey, usize> = HashMap::new();
        let mut used_policies: HashMap<String, usize> = HashMap::new();
        for (index, e) in entries.iter().enumerate() {
            let t = e.raw;
            let at = |k: &str| format!("{}.{k}", e.path);
            let name = t.name.trim().to_string();
            let mut ok = true;
            if name.is_empty() || name.chars().any(char::is_control) {
                self.push(
                    &at("name"),
                    "a tunnel name must be non-empty printable text".into(),
                );
                ok = false;
            } else if let Some(&first) = by_name.get(&name) {
                let first = format!("{}.name", entries[first].path);
                let line = self.line_of(&first);
                self.push(
                    &at("name"),
                    format!("duplicate tunnel name `{name}` (first used at line {line}: {first})"),
                );
            } else {
                by_name.insert(name.clone(), index);
            }
            let id = match t.id.as_deref() {
                Some(raw_id) => {
                    let id = raw_id.trim().to_ascii_lowercase();
                    if is_cloudflare_id(&id) {
                        Some(id)
                    } else {
                        self.push(&at("id"), bad_id("tunnel id", raw_id));
                        ok = false;
                        None
                    }
                }
                None => None,
            };

            let account = match (
                e.block.as_ref(),
                t.account.as_deref(),
                t.account_id.as_deref(),
            ) {
                (Some((alias, _)), Some(_), _) | (Some((alias, _)), None, Some(_)) => {
                    let k = if t.account.is_some() {
                        "account"
                    } else {
                        "account_id"
                    };
                    self.push(
                        &at(k),
                        format!("this tunnel is listed under `accounts.{alias}`, which sets its account; remove `{k}`"),
                    );
                    None
                }
                (Some((_, id)), None, None) => id.clone(),
                (None, Some(_), Some(_)) => {
                    self.push(
                        &at("account"),
                        "both `account` and `account_id` are set; keep one".into(),
                    );
                    None
                }
                (None, Some(a), None) => self.account_ref(a, &account_ids, &at("account"), false),
                (None, None, Some(a)) => self.account_ref(a, &account_ids, &at("account_id"), true),
                (None, None, None) => match &default_account {
                    Some(a) => a.clone(),
                    None => {
                        self.push(
                            &e.path,
                            "no account: set `account_id` at the top of the file or on the tunnel, `defaults.account`, or list the tunnel under `accounts`".into(),
                        );
                        None
                    }
                },
            };

            let (policy, source) = match (t.policy.as_deref(), e.block_policy, default_policy) {
                (Some(p), _, _) => (p, PolicySource::Tunnel),
                (None, Some(p), _) | (None, None, Some(p)) => (p, PolicySource::Inherited),
                (None, None, None) => ("default", PolicySource::Implicit),
            };
            *used_policies.entry(policy.to_string()).or_default() += 1;
            if !known_policy(policy) {
                match source {
                    PolicySource::Tunnel => {
                        let msg = self.unknown_policy(policy, &raw.policies, "");
                        self.push(&at("policy"), msg);
                    }
                    // Reported once, where the account or defaults name it.
                    PolicySource::Inherited => {}
                    PolicySource::Implicit => {
                        let msg = self.unknown_policy(
                            policy,
                            &raw.policies,
                            " (the default when neither the tunnel, its account nor `defaults` names a policy)",
                        );
                        self.push(&e.path, msg);
                    }
                }
            }
            let site = t.site.as_deref().map(str::trim).filter(|s| !s.is_empty());
            let (Some(account), true) = (account, ok) else {
                continue;
            };
            order.insert(name.clone(), index);
            match id {
                Some(id) => {
                    let key = TunnelKey::new(&account, &id);
                    if let Some(&first) = by_id.get(&key) {
                        let first = format!("{}.id", entries[first].path);
                        let line = self.line_of(&first);
                        self.push(
                            &at("id"),
                            format!("duplicate tunnel id {id} in account {account} (first used at line {line}: {first})"),
                        );
                        continue;
                    }
                    by_id.insert(key, index);
                    tunnels.push(Tunnel {
                        name,
                        id,
                        account_id: account,
                        policy: policy.to_string(),
                        site: site.map(str::to_string),
                    });
                }
                None => unresolved.push(Unresolved {
                    name,
                    account_id: account,
                    policy: policy.to_string(),
                    site: site.map(str::to_string),
                    line: self.line_of(&e.path),
                    key_path: e.path.clone(),
                }),
            }
        }

        for name in raw.policies.keys() {
            if !used_policies.contains_key(name) {
                self.warn(
                    &format!("policies.{name}"),
                    format!("policy `{name}` is not used by any tunnel"),
                );
            }
        }
        (recipients, policies, tunnels, unresolved, order)
    }

    fn unknown_policy(
        &self,
        name: &str,
        policies: &BTreeMap<String, raw::RawPolicy>,
        why: &str,
    ) -> String {
        let known: Vec<&str> = policies.keys().map(String::as_str).collect();
        let hint = match closest(name, known.iter().copied()) {
            Some(best) => format!(", did you mean `{best}`?"),
            None if known.is_empty() => {
                "; no policies are defined: add one under `policies`".into()
            }
            None => format!("; defined: {}", known.join(", ")),
        };
        format!("unknown policy `{name}`{why}{hint}")
    }

    /// An account named by its short name under `accounts` or by its id.
    fn account_ref(
        &mut self,
        text: &str,
        accounts: &BTreeMap<&str, Option<String>>,
        key: &str,
        id_only: bool,
    ) -> Option<String> {
        let text = text.trim();
        if !id_only {
            if let Some(id) = accounts.get(text) {
                return id.clone();
            }
        }
        let id = text.to_ascii_lowercase();
        if is_cloudflare_id(&id) {
            return Some(id);
        }
        let msg = if id_only {
            bad_id("account id", text)
        } else {
            let names: Vec<&str> = accounts.keys().copied().collect();
            match closest(text, names.iter().copied()) {
                Some(best) => format!("unknown account `{text}`, did you mean `{best}`?"),
                None => format!(
                    "unknown account `{text}`; expected a name under `accounts`{} or a Cloudflare account id (32 hexadecimal characters)",
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", names.join(", "))
                    }
                ),
            }
        };
        self.push(key, msg);
        None
    }

    fn recipients(&mut self, raw: &[String]) -> Vec<Recipient> {
        let mut recipients = Vec::new();
        if raw.is_empty() {
            self.push(
                "recipients",
                "no recipients: list at least one age (age1...) or SSH public key that may open the PSKs".into(),
            );
        }
        for (i, r) in raw.iter().enumerate() {
            match r.parse::<Recipient>() {
                Ok(r) => recipients.push(r),
                Err(e) => self.push(&format!("recipients[{i}]"), e.to_string()),
            }
        }
        recipients
    }

    fn policies(&mut self, raw: &BTreeMap<String, raw::RawPolicy>) -> BTreeMap<String, Policy> {
        let mut policies = BTreeMap::new();
        for (name, p) in raw {
            let key = format!("policies.{name}");
            if !is_plain_name(name) {
                self.push(
                    &key,
                    format!("policy name `{name}` must be letters, digits, `-` or `_`"),
                );
            }
            let rotate_every = match p.rotate_every.parse::<Span>() {
                Ok(s) => Some(s),
                Err(e) => {
                    self.push(&format!("{key}.rotate_every"), e.to_string());
                    None
                }
            };
            let spread = match p.spread.as_deref().map(str::parse::<Span>) {
                None => None,
                Some(Ok(s)) => {
                    if let Some(every) = rotate_every.filter(|every| s >= *every) {
                        self.push(
                            &format!("{key}.spread"),
                            format!("spread {s} is not shorter than rotate_every {every}; rotations are spread over the span before a key falls due, so it must be shorter"),
                        );
                    }
                    Some(s)
                }
                Some(Err(e)) => {
                    self.push(
                        &format!("{key}.spread"),
                        e.to_string().replace("a rotation period", "a spread"),
                    );
                    None
                }
            };
            let window = p
                .window
                .as_ref()
                .and_then(|w| self.window(&format!("{key}.window"), w));
            let deliver_timeout = match p.deliver_timeout.as_deref().map(str::parse::<Span>) {
                None => Span::from_seconds(crate::policy::DEFAULT_DELIVER_TIMEOUT_SECONDS),
                Some(Ok(t)) => Some(t),
                Some(Err(e)) => {
                    self.push(&format!("{key}.deliver_timeout"), e.to_string());
                    None
                }
            };
            if p.deliver_timeout.is_some() && p.deliver.is_none() {
                self.push(
                    &format!("{key}.deliver_timeout"),
                    "`deliver_timeout` without `deliver`: add the delivery command or remove the timeout".into(),
                );
            }
            let deliver = match &p.deliver {
                None => None,
                Some(argv) if argv.is_empty() || argv[0].trim().is_empty() => {
                    self.push(
                        &format!("{key}.deliver"),
                        "`deliver` needs a command: a list whose first item is the program, e.g. [\"/usr/local/bin/push-psk\", \"--router\", \"fra\"]".into(),
                    );
                    None
                }
                Some(argv) => deliver_timeout.map(|timeout| crate::policy::Deliver {
                    argv: argv.clone(),
                    timeout,
                }),
            };
            if let Some(rotate_every) = rotate_every {
                policies.insert(
                    name.clone(),
                    Policy {
                        name: name.clone(),
                        rotate_every,
                        generator: match p.generator {
                            Some(raw::RawGenerator::Local) => Generator::Local,
                            Some(raw::RawGenerator::Cloudflare) | None => Generator::Cloudflare,
                        },
                        window,
                        spread,
                        site_parallel: p.site_parallel.unwrap_or(false),
                        deliver,
                    },
                );
            }
        }
        policies
    }

    fn window(&mut self, key: &str, w: &raw::RawWindow) -> Option<Window> {
        let start = window::parse_time_of_day(&w.start, false)
            .map_err(|e| self.push(&format!("{key}.start"), e))
            .ok();
        let end = window::parse_time_of_day(&w.end, true)
            .map_err(|e| self.push(&format!("{key}.end"), e))
            .ok();
        let tz = match w.timezone.as_deref() {
            None => Some(chrono_tz::UTC),
            Some(name) => window::parse_timezone(name.trim())
                .map_err(|e| self.push(&format!("{key}.timezone"), e))
                .ok(),
        };
        let days: Vec<usize> = match &w.days {
            None => (0..7).collect(),
            Some(d) => d.iter().map(|d| d.index()).collect(),
        };
        let (start, end, tz) = (start?, end?, tz?);
        match Window::new(&days, start, end, tz) {
            Ok(w) => Some(w),
            Err(e) => {
                let at = if days.is_empty() {
                    format!("{key}.days")
                } else {
                    key.to_string()
                };
                self.push(&at, e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version: 1
account_id: 023e105f4ecef8ad9ca31a8372d0c353
recipients:
  - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
policies:
  default:
    rotate_every: 90d
tunnels:
  - name: fra-primary
    id: 0123456789abcdef0123456789abcdef
    site: fra
  - name: fra-secondary
    id: 0123456789abcdef0123456789abcdee
    account_id: 99999999999999999999999999999999
";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("conf/psk.yaml"), text)
    }

    #[test]
    fn parses_a_good_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.tunnels.len(), 2);
        assert_eq!(c.tunnels[0].account_id, "023e105f4ecef8ad9ca31a8372d0c353");
        assert_eq!(c.tunnels[1].account_id, "99999999999999999999999999999999");
        assert_eq!(c.tunnels[0].policy, "default");
        assert_eq!(c.tunnels[0].site.as_deref(), Some("fra"));
        assert_eq!(c.state_path, Path::new("conf/psk.state.json"));
        assert_eq!(c.accounts().len(), 2);
    }

    fn errors(text: &str) -> Vec<(usize, String)> {
        parse(text)
            .unwrap_err()
            .diagnostics
            .into_iter()
            .map(|d| (d.position.line, d.message))
            .collect()
    }

    #[test]
    fn unknown_key_is_located() {
        let e = errors(&GOOD.replace("    site: fra\n", "    sight: fra\n"));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, 11);
        assert_eq!(
            e[0].1,
            "unknown key `sight`; expected one of: account, account_id, id, name, policy, site"
        );
    }

    #[test]
    fn semantic_errors_all_reported_with_lines() {
        let text = GOOD
            .replace(
                "0123456789abcdef0123456789abcdee",
                "0123456789abcdef0123456789abcdef\n    policy: fast",
            )
            .replace("fra-secondary", "fra-primary")
            .replace(
                "account_id: 99999999999999999999999999999999",
                "account_id: 023e105f4ecef8ad9ca31a8372d0c353",
            );
        let e = errors(&text);
        let lines: Vec<usize> = e.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![12, 13, 14], "{e:?}");
        assert!(e[0].1.contains(
            "duplicate tunnel name `fra-primary` (first used at line 9: tunnels[0].name)"
        ));
        assert!(e[1].1.contains("duplicate tunnel id"));
        assert!(e[2].1.contains("unknown policy `fast`"));
    }

    #[test]
    fn malformed_id_and_recipient() {
        let text = GOOD
            .replace("0123456789abcdef0123456789abcdee", "not-an-id")
            .replace("age1ql3z7", "age1zzzz");
        let e = errors(&text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].0, 4);
        assert_eq!(e[1].0, 13);
        assert!(e[1].1.contains("32 hexadecimal"));
    }

    #[test]
    fn wrong_version_and_bad_duration() {
        let e = errors(
            &GOOD
                .replace("version: 1", "version: 2")
                .replace("90d", "ninety"),
        );
        assert_eq!(e.len(), 2);
        assert!(e[0].1.contains("version 2 is not supported"));
        assert_eq!(e[1].0, 7);
    }

    #[test]
    fn syntax_error_is_located() {
        let e = errors("version: 1\ntunnels: [\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].0 >= 2, "{e:?}");
    }

    #[test]
    fn error_display_names_file_and_line() {
        let err = parse(&GOOD.replace("90d", "0d")).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("conf/psk.yaml:7:5: policies.default.rotate_every: `0d` is zero"),
            "{shown}"
        );
    }

    const FLEET: &str = "version: 1
recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
defaults:
  policy: standard
  account: eu
policies:
  standard: {rotate_every: 90d}
  night:
    rotate_every: 30d
    generator: local
    spread: 3d
    site_parallel: true
    window: {days: [mon, fri], start: \"22:00\", end: \"02:00\", timezone: Asia/Tokyo}
  lab: {rotate_every: 7d}
accounts:
  eu:
    id: 023E105F4ECEF8AD9CA31A8372D0C353
    tunnels:
      - {name: eu-1, id: 0123456789abcdef0123456789abcdef}
  us:
    id: 99999999999999999999999999999999
    policy: night
    tunnels:
      - {name: us-1, id: 0123456789abcdef0123456789abcdef}
      - {name: us-2, id: 0123456789abcdef0123456789abcdee, policy: lab}
      - {name: us-by-name}
tunnels:
  - {name: top-1, id: fedcba9876543210fedcba9876543210}
  - {name: top-2, id: fedcba9876543210fedcba9876543211, account: us}
";

    #[test]
    fn accounts_defaults_and_policy_precedence() {
        let c = parse(FLEET).unwrap();
        let t = |n: &str| c.tunnel_by_name(n).unwrap();
        assert_eq!(t("eu-1").account_id, "023e105f4ecef8ad9ca31a8372d0c353");
        assert_eq!(t("eu-1").policy, "standard", "defaults.policy");
        assert_eq!(t("us-1").account_id, "99999999999999999999999999999999");
        assert_eq!(t("us-1").policy, "night", "the account's policy");
        assert_eq!(t("us-2").policy, "lab", "the tunnel's own policy wins");
        assert_eq!(
            t("top-1").account_id,
            "023e105f4ecef8ad9ca31a8372d0c353",
            "defaults.account"
        );
        assert_eq!(
            t("top-2").account_id,
            "99999999999999999999999999999999",
            "`account: us`"
        );
        // The same id in two accounts is two tunnels.
        assert_eq!(t("eu-1").id, t("us-1").id);
        assert_eq!(c.unresolved.len(), 1);
        assert_eq!(c.unresolved[0].name, "us-by-name");
        assert_eq!(c.unresolved[0].policy, "night");
        assert_eq!(c.accounts().len(), 2);
        // File order, wherever a tunnel is written.
        let names: Vec<&str> = c.tunnels.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["eu-1", "us-1", "us-2", "top-1", "top-2"]);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn every_policy_field_is_carried() {
        let c = parse(FLEET).unwrap();
        let night = &c.policies["night"];
        assert_eq!(night.rotate_every.seconds(), 30 * 86_400);
        assert_eq!(night.generator, Generator::Local);
        assert_eq!(night.spread.map(Span::seconds), Some(3 * 86_400));
        assert!(night.site_parallel);
        let w = night.window.as_ref().unwrap();
        assert_eq!(w.to_string(), "mon, fri 22:00–02:00 Asia/Tokyo");
        // Friday 22:00 in Tokyo is 13:00 UTC; the window runs to Saturday 02:00.
        assert!(w.contains("2026-11-27T13:00:00Z".parse().unwrap()));
        assert!(w.contains("2026-11-27T16:59:59Z".parse().unwrap()));
        assert!(!w.contains("2026-11-27T17:00:00Z".parse().unwrap()));
        let standard = &c.policies["standard"];
        assert_eq!(standard.generator, Generator::Cloudflare);
        assert!(standard.window.is_none() && standard.spread.is_none());
        assert!(!standard.site_parallel);
    }

    #[test]
    fn resolving_names_keeps_file_order() {
        let mut c = parse(FLEET).unwrap();
        let still = c.resolve(|account, name| {
            (account == "99999999999999999999999999999999" && name == "us-by-name")
                .then(|| "ABCDEF0123456789ABCDEF0123456789".to_string())
        });
        assert!(still.is_empty());
        assert!(c.unresolved.is_empty());
        let names: Vec<&str> = c.tunnels.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["eu-1", "us-1", "us-2", "us-by-name", "top-1", "top-2"]
        );
        assert_eq!(
            c.tunnel_by_name("us-by-name").unwrap().id,
            "abcdef0123456789abcdef0123456789"
        );
        assert!(c.require_resolved("x").is_ok());
    }

    #[test]
    fn an_unused_policy_is_a_warning() {
        let c = parse(&GOOD.replace("tunnels:", "  spare: {rotate_every: 1d}\ntunnels:")).unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].key, "policies.spare");
        assert_eq!(c.warnings[0].position.line, 8);
    }

    #[test]
    fn a_misspelled_key_does_not_hide_other_errors() {
        let text = GOOD
            .replace("    site: fra\n", "    sight: fra\n")
            .replace("fra-secondary", "fra-primary");
        let e = errors(&text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].0, 11);
        assert!(e[0].1.starts_with("unknown key `sight`"));
        assert_eq!(e[1].0, 12);
        assert!(e[1].1.starts_with("duplicate tunnel name"));
    }

    #[test]
    fn pruning_a_misspelled_block_keeps_line_numbers() {
        let text = "version: 1\nrecipients: [x]\npolicis:\n  a:\n    rotate_every: 1d\n\nmore: 1\n";
        let loc = Locations::index(text);
        let pruned = without_keys(text, &loc, &["policis".to_string()]).unwrap();
        assert_eq!(pruned, "version: 1\nrecipients: [x]\n#\n#\n#\n#\nmore: 1\n");
        // A key inside a flow mapping cannot be cut out line by line.
        let flow = "tunnels:\n  - {name: a, sight: b}\n";
        let loc = Locations::index(flow);
        assert_eq!(
            without_keys(flow, &loc, &["tunnels[0].sight".to_string()]),
            None
        );
    }
}
