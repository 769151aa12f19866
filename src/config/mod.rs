//! The desired state, `psk.yaml`: what people edit and review.
//!
//! Two stages, so the rest of psk never sees an invalid value: `raw` mirrors
//! the file for serde, then [`Config::parse`] checks it as a whole and builds
//! the validated model. Every problem found is reported with file and line.

mod guard;
mod locate;
mod raw;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::policy::{Policy, Span};
use crate::seal::Recipient;
pub use locate::{Locations, Position};

/// The only format version this build understands.
pub const CONFIG_VERSION: u64 = 1;

/// A Cloudflare account or tunnel identifier: 32 lowercase hex characters.
pub fn is_cloudflare_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[derive(Debug)]
pub struct Config {
    /// The file this was read from, as given.
    pub path: PathBuf,
    /// Where the state lives: `state:` resolved against the config's folder.
    pub state_path: PathBuf,
    pub recipients: Vec<Recipient>,
    pub policies: BTreeMap<String, Policy>,
    /// In file order.
    pub tunnels: Vec<Tunnel>,
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

/// A tunnel's identity across config, state and Cloudflare: account and id.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TunnelKey {
    pub account_id: String,
    pub tunnel_id: String,
}

impl TunnelKey {
    pub fn new(account_id: &str, tunnel_id: &str) -> Self {
        TunnelKey {
            account_id: account_id.to_ascii_lowercase(),
            tunnel_id: tunnel_id.to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for TunnelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account_id, self.tunnel_id)
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
        let fail = |diagnostics: Vec<Diagnostic>| ConfigError {
            file: path.to_path_buf(),
            diagnostics,
        };
        guard::check(text).map_err(|d| fail(vec![d]))?;
        let raw = raw::parse(text).map_err(|d| fail(vec![d]))?;
        let loc = Locations::index(text);
        let mut errs = Validator {
            loc: &loc,
            out: Vec::new(),
        };
        for (key, position) in loc.duplicates() {
            errs.out.push(Diagnostic {
                position: *position,
                key: key.clone(),
                message:
                    "appears twice in one mapping; YAML keeps only one of them, so remove the other"
                        .into(),
            });
        }

        if raw.version != CONFIG_VERSION {
            errs.push(
                "version",
                format!(
                    "version {} is not supported; this psk reads version {CONFIG_VERSION}",
                    raw.version
                ),
            );
        }

        let default_account = raw.account_id.as_deref().map(str::trim);
        if let Some(a) = default_account {
            if !is_cloudflare_id(a) {
                errs.push("account_id", bad_id("account id", a));
            }
        }

        let mut recipients = Vec::new();
        if raw.recipients.is_empty() {
            errs.push(
                "recipients",
                "no recipients: list at least one age (age1...) or SSH public key that may open the PSKs".into(),
            );
        }
        for (i, r) in raw.recipients.iter().enumerate() {
            match r.parse::<Recipient>() {
                Ok(r) => recipients.push(r),
                Err(e) => errs.push(&format!("recipients[{i}]"), e.to_string()),
            }
        }

        let mut policies = BTreeMap::new();
        for (name, p) in &raw.policies {
            let key = format!("policies.{name}");
            if !is_plain_name(name) {
                errs.push(
                    &key,
                    format!("policy name `{name}` must be letters, digits, `-` or `_`"),
                );
            }
            match p.rotate_every.parse::<Span>() {
                Ok(rotate_every) => {
                    policies.insert(
                        name.clone(),
                        Policy {
                            name: name.clone(),
                            rotate_every,
                        },
                    );
                }
                Err(e) => errs.push(&format!("{key}.rotate_every"), e.to_string()),
            }
        }

        let mut tunnels = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut by_id: HashMap<TunnelKey, usize> = HashMap::new();
        for (i, t) in raw.tunnels.iter().enumerate() {
            let at = |k: &str| format!("tunnels[{i}].{k}");
            let name = t.name.trim().to_string();
            if name.is_empty() || name.chars().any(char::is_control) {
                errs.push(
                    &at("name"),
                    "a tunnel name must be non-empty printable text".into(),
                );
            } else if let Some(first) = by_name.insert(name.clone(), i) {
                let p = loc.get(&format!("tunnels[{first}].name"));
                errs.push(
                    &at("name"),
                    format!(
                        "duplicate tunnel name `{name}` (first used at line {})",
                        p.line
                    ),
                );
            }
            let id = t.id.trim().to_ascii_lowercase();
            let id_ok = is_cloudflare_id(&id);
            if !id_ok {
                errs.push(&at("id"), bad_id("tunnel id", &t.id));
            }
            let account = match t.account_id.as_deref().map(str::trim).or(default_account) {
                Some(a) if is_cloudflare_id(a) => Some(a.to_ascii_lowercase()),
                Some(a) => {
                    if t.account_id.is_some() {
                        errs.push(&at("account_id"), bad_id("account id", a));
                    }
                    None
                }
                None => {
                    errs.push(
                        &format!("tunnels[{i}]"),
                        "no account: set `account_id` on the tunnel or at the top of the file"
                            .into(),
                    );
                    None
                }
            };
            let policy = t.policy.clone().unwrap_or_else(|| "default".to_string());
            if !raw.policies.contains_key(&policy) {
                let known: Vec<&str> = raw.policies.keys().map(String::as_str).collect();
                let key = if t.policy.is_some() {
                    at("policy")
                } else {
                    format!("tunnels[{i}]")
                };
                errs.push(
                    &key,
                    format!(
                        "unknown policy `{policy}`{}; defined: {}",
                        if t.policy.is_none() {
                            " (the default when `policy` is absent)"
                        } else {
                            ""
                        },
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            if let (true, Some(account)) = (id_ok, account) {
                let key = TunnelKey::new(&account, &id);
                if let Some(first) = by_id.insert(key, i) {
                    let p = loc.get(&format!("tunnels[{first}].id"));
                    errs.push(
                        &at("id"),
                        format!(
                            "duplicate tunnel id {id} in account {account} (first used at line {})",
                            p.line
                        ),
                    );
                }
                tunnels.push(Tunnel {
                    name,
                    id,
                    account_id: account,
                    policy,
                    site: t.site.clone().filter(|s| !s.trim().is_empty()),
                });
            }
        }

        if !errs.out.is_empty() {
            let mut d = errs.out;
            d.sort_by_key(|a| a.position);
            return Err(fail(d));
        }

        let base = path.parent().unwrap_or(Path::new(""));
        let state_path = base.join(raw.state.as_deref().unwrap_or("psk.state.json"));
        Ok(Config {
            path: path.to_path_buf(),
            state_path,
            recipients,
            policies,
            tunnels,
        })
    }

    pub fn tunnel_by_name(&self, name: &str) -> Option<&Tunnel> {
        self.tunnels.iter().find(|t| t.name == name)
    }

    pub fn policy_of(&self, tunnel: &Tunnel) -> &Policy {
        // Validation guarantees every tunnel's policy exists.
        &self.policies[&tunnel.policy]
    }

    /// Accounts in a stable order, each once.
    pub fn accounts(&self) -> Vec<String> {
        let mut a: Vec<String> = self.tunnels.iter().map(|t| t.account_id.clone()).collect();
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
}

impl Validator<'_> {
    fn push(&mut self, key: &str, message: String) {
        self.out.push(Diagnostic {
            position: self.loc.get(key),
            key: key.to_string(),
            message,
        });
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
        assert!(e[0].1.contains("unknown field `sight`"), "{}", e[0].1);
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
        assert!(e[0]
            .1
            .contains("duplicate tunnel name `fra-primary` (first used at line 9)"));
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
}
