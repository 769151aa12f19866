//! Checks psk.yaml as a whole, once serde has read it into the `raw` types,
//! and builds the [`Config`] from it.
//!
//! The schema and serde judge each value on its own; what needs the whole
//! file is here: names and ids used twice, accounts and policies named but
//! not defined, durations, windows and recipients that do not parse, and
//! each tunnel's account and policy, inherited from where it is written.
//! Every problem is collected with its key path, located through
//! [`Locations`], so one run shows them all. Each check has its own method;
//! [`config`] calls them in a fixed order, and problems are then sorted by
//! position, so two at one place always come out in the same order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::raw::{RawConfig, RawGenerator, RawPolicy, RawTunnel, RawVerify, RawWindow};
use super::{
    Config, Diagnostic, Ignored, Locations, Tunnel, Unresolved, CONFIG_VERSION, DEFAULT_STATE,
};
use crate::policy::window::{self, Window};
use crate::policy::{
    Deliver, Generator, Policy, Span, Verify, DEFAULT_DELIVER_TIMEOUT_SECONDS,
    DEFAULT_VERIFY_COMMAND_TIMEOUT_SECONDS, DEFAULT_VERIFY_SETTLE_SECONDS,
    DEFAULT_VERIFY_TIMEOUT_SECONDS,
};
use crate::seal::Recipient;
use crate::suggest::did_you_mean;
use crate::tunnel::{is_cloudflare_id, TunnelKey};

/// The model of the file at `path`, whose text serde read into `raw`; or
/// every problem found.
pub(super) fn config(
    path: &Path,
    raw: &RawConfig,
    loc: &Locations,
) -> Result<Config, Vec<Diagnostic>> {
    let mut v = Validator {
        loc,
        raw,
        out: Vec::new(),
        warnings: Vec::new(),
    };
    v.version();
    let recipients = v.recipients();
    let policies = v.policies();
    let scope = v.scope();
    let entries = v.entries(&scope.accounts);
    let fleet = v.tunnels(&entries, &scope);
    v.unused_policies(&fleet.used_policies);
    let ignore = v.ignore(&fleet.tunnels);
    if !v.out.is_empty() {
        return Err(v.out);
    }
    let mut warnings = v.warnings;
    warnings.sort_by_key(|d| d.position);
    Ok(Config {
        path: path.to_path_buf(),
        state: raw
            .state
            .clone()
            .unwrap_or_else(|| DEFAULT_STATE.to_string()),
        recipients,
        policies,
        tunnels: fleet.tunnels,
        unresolved: fleet.unresolved,
        warnings,
        recipient_names: BTreeMap::new(),
        ignore,
        order: fleet.order,
    })
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

struct Validator<'r> {
    loc: &'r Locations,
    raw: &'r RawConfig,
    out: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

/// Account ids by their short name under `accounts`; `None` for an id that
/// is not valid (reported where it is written).
type Accounts<'r> = BTreeMap<&'r str, Option<String>>;

/// What a tunnel that names no account or policy inherits.
struct Scope<'r> {
    accounts: Accounts<'r>,
    /// From `account_id` or `defaults.account`: `None` when neither is set,
    /// `Some(None)` when the one set is wrong (reported there).
    default_account: Option<Option<String>>,
    default_policy: Option<&'r str>,
}

/// A tunnel entry from anywhere in the file, with where it sits.
struct Entry<'r> {
    raw: &'r RawTunnel,
    path: String,
    /// `(name, id)` of the `accounts:` block it sits in.
    block: Option<(&'r str, Option<String>)>,
    block_policy: Option<&'r str>,
}

impl Entry<'_> {
    /// The key path of one of its keys.
    fn at(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }
}

/// Where a tunnel's policy came from, for the message when it is unknown.
enum PolicySource {
    Tunnel,
    Inherited,
    Implicit,
}

/// The tunnels checked so far, and what later entries are checked against.
#[derive(Default)]
struct Fleet<'r> {
    tunnels: Vec<Tunnel>,
    unresolved: Vec<Unresolved>,
    order: HashMap<String, usize>,
    /// The entry that first used a name or an id; its key path is only
    /// spelled out for a duplicate.
    by_name: HashMap<String, usize>,
    by_id: HashMap<TunnelKey, usize>,
    used_policies: HashSet<&'r str>,
}

impl<'r> Validator<'r> {
    fn located(&self, key: &str, message: String) -> Diagnostic {
        Diagnostic {
            position: self.loc.get(key),
            key: key.to_string(),
            message,
        }
    }

    fn push(&mut self, key: &str, message: String) {
        let d = self.located(key, message);
        self.out.push(d);
    }

    fn warn(&mut self, key: &str, message: String) {
        let d = self.located(key, message);
        self.warnings.push(d);
    }

    fn line_of(&self, key: &str) -> usize {
        self.loc.get(key).line
    }

    /// `first used at line N: path`, for a name or id used again.
    fn first_used(&self, first: &str) -> String {
        format!("first used at line {}: {first}", self.line_of(first))
    }

    fn version(&mut self) {
        let version = self.raw.version;
        if version != CONFIG_VERSION {
            self.push(
                "version",
                format!(
                    "version {version} is not supported; this psk reads version {CONFIG_VERSION}"
                ),
            );
        }
    }

    fn recipients(&mut self) -> Vec<Recipient> {
        let raw = self.raw;
        let mut recipients = Vec::new();
        if raw.recipients.is_empty() {
            self.push(
                "recipients",
                "no recipients: list at least one age (age1...) or SSH public key that may open the PSKs".into(),
            );
        }
        for (i, r) in raw.recipients.iter().enumerate() {
            match r.parse::<Recipient>() {
                Ok(r) => recipients.push(r),
                Err(e) => self.push(&format!("recipients[{i}]"), e.to_string()),
            }
        }
        recipients
    }

    fn policies(&mut self) -> BTreeMap<String, Policy> {
        let raw = self.raw;
        let mut policies = BTreeMap::new();
        for (name, p) in &raw.policies {
            if let Some(policy) = self.policy(name, p) {
                policies.insert(name.clone(), policy);
            }
        }
        policies
    }

    /// One policy, or `None` when its period is wrong. Every mistake is
    /// reported; a wrong optional field is left out.
    fn policy(&mut self, name: &str, p: &RawPolicy) -> Option<Policy> {
        let key = format!("policies.{name}");
        if !is_plain_name(name) {
            self.push(
                &key,
                format!("policy name `{name}` must be letters, digits, `-` or `_`"),
            );
        }
        let rotate_every = self.span(&format!("{key}.rotate_every"), &p.rotate_every);
        let spread = self.spread(&key, p, rotate_every);
        let window = p
            .window
            .as_ref()
            .and_then(|w| self.window(&format!("{key}.window"), w));
        let deliver = self.deliver(&key, p);
        let verify = p.verify.as_ref().and_then(|v| self.verify(&key, p, v));
        Some(Policy {
            name: name.to_string(),
            rotate_every: rotate_every?,
            generator: match p.generator {
                Some(RawGenerator::Local) => Generator::Local,
                Some(RawGenerator::Cloudflare) | None => Generator::Cloudflare,
            },
            window,
            spread,
            site_parallel: p.site_parallel.unwrap_or(false),
            deliver,
            verify,
        })
    }

    /// The policy's `verify`: something to check with, a settle time
    /// shorter than the timeout, and no `site_parallel` (a site whose paths
    /// change together cannot be verified one path at a time).
    fn verify(&mut self, policy: &str, p: &RawPolicy, v: &RawVerify) -> Option<Verify> {
        let key = format!("{policy}.verify");
        let span_or = |this: &mut Self, field: &str, text: &Option<String>, default: i64| match text
        {
            None => Span::from_seconds(default),
            Some(t) => this.span(&format!("{key}.{field}"), t),
        };
        let settle = span_or(self, "settle", &v.settle, DEFAULT_VERIFY_SETTLE_SECONDS);
        let timeout = span_or(self, "timeout", &v.timeout, DEFAULT_VERIFY_TIMEOUT_SECONDS);
        let command_timeout = span_or(
            self,
            "command_timeout",
            &v.command_timeout,
            DEFAULT_VERIFY_COMMAND_TIMEOUT_SECONDS,
        );
        let health_checks = v.health_checks.unwrap_or(true);
        let mut ok = true;
        if let (Some(s), Some(t)) = (settle, timeout) {
            if s >= t {
                self.push(
                    &format!("{key}.settle"),
                    format!("settle {s} is not shorter than timeout {t}; a tunnel must be able to stay healthy for `settle` before psk gives up on it"),
                );
                ok = false;
            }
        }
        if v.command_timeout.is_some() && v.command.is_none() {
            self.push(
                &format!("{key}.command_timeout"),
                "`command_timeout` without `command`: add the probe or remove the timeout".into(),
            );
        }
        let command = match &v.command {
            Some(argv) if argv.is_empty() || argv[0].trim().is_empty() => {
                self.push(
                    &format!("{key}.command"),
                    "`command` needs a program: a list whose first item is the program, e.g. [\"/usr/local/bin/ping-through\", \"fra\"]".into(),
                );
                ok = false;
                None
            }
            Some(argv) => command_timeout.map(|timeout| Deliver {
                argv: argv.clone(),
                timeout,
            }),
            None => None,
        };
        if !health_checks && v.command.is_none() {
            self.push(
                &key,
                "nothing to verify with: `health_checks: false` and no `command`; keep the health checks or add a probe".into(),
            );
            ok = false;
        }
        if p.site_parallel == Some(true) {
            self.push(
                &format!("{policy}.site_parallel"),
                "`site_parallel: true` with `verify`: a site's paths that change together cannot be verified one at a time; remove one of them".into(),
            );
            ok = false;
        }
        Some(Verify {
            health_checks,
            command,
            settle: settle?,
            timeout: timeout?,
        })
        .filter(|_| ok)
    }

    fn span(&mut self, key: &str, text: &str) -> Option<Span> {
        text.parse::<Span>()
            .map_err(|e| self.push(key, e.to_string()))
            .ok()
    }

    /// The policy's `spread`, which must be shorter than its period.
    fn spread(&mut self, policy: &str, p: &RawPolicy, rotate_every: Option<Span>) -> Option<Span> {
        let key = format!("{policy}.spread");
        match p.spread.as_deref()?.parse::<Span>() {
            Ok(s) => {
                if let Some(every) = rotate_every.filter(|every| s >= *every) {
                    self.push(
                        &key,
                        format!("spread {s} is not shorter than rotate_every {every}; rotations are spread over the span before a key falls due, so it must be shorter"),
                    );
                }
                Some(s)
            }
            Err(e) => {
                self.push(&key, e.to_string().replace("a rotation period", "a spread"));
                None
            }
        }
    }

    /// The policy's `deliver` command with its `deliver_timeout`, which
    /// means nothing without it.
    fn deliver(&mut self, policy: &str, p: &RawPolicy) -> Option<Deliver> {
        let timeout_key = format!("{policy}.deliver_timeout");
        let timeout = match p.deliver_timeout.as_deref() {
            None => Span::from_seconds(DEFAULT_DELIVER_TIMEOUT_SECONDS),
            Some(text) => self.span(&timeout_key, text),
        };
        if p.deliver_timeout.is_some() && p.deliver.is_none() {
            self.push(
                &timeout_key,
                "`deliver_timeout` without `deliver`: add the delivery command or remove the timeout".into(),
            );
        }
        match &p.deliver {
            None => None,
            Some(argv) if argv.is_empty() || argv[0].trim().is_empty() => {
                self.push(
                    &format!("{policy}.deliver"),
                    "`deliver` needs a command: a list whose first item is the program, e.g. [\"/usr/local/bin/push-psk\", \"--router\", \"fra\"]".into(),
                );
                None
            }
            Some(argv) => timeout.map(|timeout| Deliver {
                argv: argv.clone(),
                timeout,
            }),
        }
    }

    fn window(&mut self, key: &str, w: &RawWindow) -> Option<Window> {
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

    /// Reports `name`, written at `key`, unless a policy of that name is
    /// defined; `why` says how the name came about when the file does not.
    fn policy_ref(&mut self, key: &str, name: &str, why: &str) {
        let policies = &self.raw.policies;
        if policies.contains_key(name) {
            return;
        }
        let known: Vec<&str> = policies.keys().map(String::as_str).collect();
        let hint = match did_you_mean(name, known.iter().copied()) {
            Some(hint) => hint,
            None if known.is_empty() => {
                "; no policies are defined: add one under `policies`".into()
            }
            None => format!("; defined: {}", known.join(", ")),
        };
        self.push(key, format!("unknown policy `{name}`{why}{hint}"));
    }

    /// What tunnels inherit: the accounts by name and the defaults.
    fn scope(&mut self) -> Scope<'r> {
        let accounts = self.accounts();
        let default_account = self.default_account(&accounts);
        let default_policy = self.raw.defaults.as_ref().and_then(|d| d.policy.as_deref());
        if let Some(p) = default_policy {
            self.policy_ref("defaults.policy", p, "");
        }
        Scope {
            accounts,
            default_account,
            default_policy,
        }
    }

    /// The blocks under `accounts`: each name, id (once across them) and
    /// policy.
    fn accounts(&mut self) -> Accounts<'r> {
        let raw = self.raw;
        let mut ids = Accounts::new();
        let mut seen: HashMap<String, String> = HashMap::new();
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
                if let Some(first) = seen.insert(id.clone(), key.clone()) {
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
                self.policy_ref(&format!("{key}.policy"), p, "");
            }
            ids.insert(alias.as_str(), id);
        }
        ids
    }

    /// The default account: `account_id` or `defaults.account`, not both.
    fn default_account(&mut self, accounts: &Accounts) -> Option<Option<String>> {
        let raw = self.raw;
        match (
            raw.account_id.as_deref(),
            raw.defaults.as_ref().and_then(|d| d.account.as_deref()),
        ) {
            (Some(_), Some(_)) => {
                self.push(
                    "defaults.account",
                    "both `account_id` and `defaults.account` set the default account; keep one"
                        .into(),
                );
                Some(None)
            }
            (Some(a), None) => Some(self.account_ref(a, accounts, "account_id", true)),
            (None, Some(a)) => Some(self.account_ref(a, accounts, "defaults.account", false)),
            (None, None) => None,
        }
    }

    /// An account named by its short name under `accounts` or by its id.
    fn account_ref(
        &mut self,
        text: &str,
        accounts: &Accounts,
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
            match did_you_mean(text, names.iter().copied()) {
                Some(hint) => format!("unknown account `{text}`{hint}"),
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

    /// Every tunnel entry, at the top or under an account, in file order.
    fn entries(&self, accounts: &Accounts<'r>) -> Vec<Entry<'r>> {
        let raw = self.raw;
        let mut entries: Vec<Entry> = raw
            .tunnels
            .iter()
            .enumerate()
            .map(|(i, t)| Entry {
                raw: t,
                path: format!("tunnels[{i}]"),
                block: None,
                block_policy: None,
            })
            .collect();
        for (alias, a) in &raw.accounts {
            for (i, t) in a.tunnels.iter().enumerate() {
                entries.push(Entry {
                    raw: t,
                    path: format!("accounts.{alias}.tunnels[{i}]"),
                    block: Some((
                        alias.as_str(),
                        accounts.get(alias.as_str()).cloned().flatten(),
                    )),
                    block_policy: a.policy.as_deref(),
                });
            }
        }
        entries.sort_by_cached_key(|e| self.loc.get(&e.path));
        entries
    }

    fn tunnels(&mut self, entries: &[Entry<'r>], scope: &Scope<'r>) -> Fleet<'r> {
        let mut fleet = Fleet::default();
        for index in 0..entries.len() {
            self.tunnel(index, entries, scope, &mut fleet);
        }
        fleet
    }

    /// Checks one entry and adds it to `fleet`: as a tunnel when its id is
    /// known, as unresolved when it has none.
    fn tunnel(
        &mut self,
        index: usize,
        entries: &[Entry<'r>],
        scope: &Scope<'r>,
        fleet: &mut Fleet<'r>,
    ) {
        let e = &entries[index];
        let name = self.tunnel_name(index, entries, &mut fleet.by_name);
        let id = self.tunnel_id(e);
        let account = self.tunnel_account(e, scope);
        let policy = self.tunnel_policy(e, scope.default_policy);
        fleet.used_policies.insert(policy);
        let site = e
            .raw
            .site
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let (Some(name), Some(id), Some(account)) = (name, id, account) else {
            return;
        };
        fleet.order.insert(name.clone(), index);
        match id {
            Some(id) => {
                let tunnel = Tunnel {
                    name,
                    id,
                    account_id: account,
                    policy: policy.to_string(),
                    site: site.map(str::to_string),
                };
                self.add_identified(index, entries, tunnel, fleet);
            }
            None => fleet.unresolved.push(Unresolved {
                name,
                account_id: account,
                policy: policy.to_string(),
                site: site.map(str::to_string),
                line: self.line_of(&e.path),
                key_path: e.path.clone(),
            }),
        }
    }

    /// The entry's name, or `None` when it is not one. A name used before
    /// is reported, and kept so the entry's other keys are still checked.
    fn tunnel_name(
        &mut self,
        index: usize,
        entries: &[Entry],
        by_name: &mut HashMap<String, usize>,
    ) -> Option<String> {
        let e = &entries[index];
        let name = e.raw.name.trim().to_string();
        if name.is_empty() || name.chars().any(char::is_control) {
            self.push(
                &e.at("name"),
                "a tunnel name must be non-empty printable text".into(),
            );
            return None;
        }
        if let Some(&first) = by_name.get(&name) {
            let first = self.first_used(&entries[first].at("name"));
            self.push(
                &e.at("name"),
                format!("duplicate tunnel name `{name}` ({first})"),
            );
        } else {
            by_name.insert(name.clone(), index);
        }
        Some(name)
    }

    /// The entry's id in lowercase, `Some(None)` when it has none, or
    /// `None` when it is not a Cloudflare id.
    fn tunnel_id(&mut self, e: &Entry) -> Option<Option<String>> {
        let Some(raw_id) = e.raw.id.as_deref() else {
            return Some(None);
        };
        let id = raw_id.trim().to_ascii_lowercase();
        if is_cloudflare_id(&id) {
            return Some(Some(id));
        }
        self.push(&e.at("id"), bad_id("tunnel id", raw_id));
        None
    }

    /// The entry's account: its block's, its own, or the default; one of
    /// these only.
    fn tunnel_account(&mut self, e: &Entry, scope: &Scope) -> Option<String> {
        let t = e.raw;
        match (
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
                    &e.at(k),
                    format!("this tunnel is listed under `accounts.{alias}`, which sets its account; remove `{k}`"),
                );
                None
            }
            (Some((_, id)), None, None) => id.clone(),
            (None, Some(_), Some(_)) => {
                self.push(
                    &e.at("account"),
                    "both `account` and `account_id` are set; keep one".into(),
                );
                None
            }
            (None, Some(a), None) => self.account_ref(a, &scope.accounts, &e.at("account"), false),
            (None, None, Some(a)) => {
                self.account_ref(a, &scope.accounts, &e.at("account_id"), true)
            }
            (None, None, None) => match &scope.default_account {
                Some(a) => a.clone(),
                None => {
                    self.push(
                        &e.path,
                        "no account: set `account_id` at the top of the file or on the tunnel, `defaults.account`, or list the tunnel under `accounts`".into(),
                    );
                    None
                }
            },
        }
    }

    /// The entry's policy: its own, its account's, `defaults.policy`, or
    /// the one named `default`.
    fn tunnel_policy(&mut self, e: &Entry<'r>, default_policy: Option<&'r str>) -> &'r str {
        let (policy, source) = match (e.raw.policy.as_deref(), e.block_policy, default_policy) {
            (Some(p), _, _) => (p, PolicySource::Tunnel),
            (None, Some(p), _) | (None, None, Some(p)) => (p, PolicySource::Inherited),
            (None, None, None) => ("default", PolicySource::Implicit),
        };
        match source {
            PolicySource::Tunnel => self.policy_ref(&e.at("policy"), policy, ""),
            // Reported once, where the account or defaults name it.
            PolicySource::Inherited => {}
            PolicySource::Implicit => self.policy_ref(
                &e.path,
                policy,
                " (the default when neither the tunnel, its account nor `defaults` names a policy)",
            ),
        }
        policy
    }

    /// Adds a tunnel whose id is known, unless an earlier entry has that
    /// id in the same account.
    fn add_identified(
        &mut self,
        index: usize,
        entries: &[Entry],
        tunnel: Tunnel,
        fleet: &mut Fleet,
    ) {
        let key = tunnel.key();
        if let Some(&first) = fleet.by_id.get(&key) {
            let first = self.first_used(&entries[first].at("id"));
            self.push(
                &entries[index].at("id"),
                format!(
                    "duplicate tunnel id {} in account {} ({first})",
                    tunnel.id, tunnel.account_id
                ),
            );
            return;
        }
        fleet.by_id.insert(key, index);
        fleet.tunnels.push(tunnel);
    }

    /// A policy no tunnel uses is likely a mistake, but breaks nothing.
    /// `ignore:`: ids or Cloudflare names, each once, and no tunnel both
    /// managed here and ignored.
    fn ignore(&mut self, tunnels: &[Tunnel]) -> Vec<Ignored> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, raw) in self.raw.ignore.iter().enumerate() {
            let key = format!("ignore[{i}]");
            let text = raw.trim();
            if text.is_empty() || text.chars().any(char::is_control) {
                self.push(
                    &key,
                    "an ignored tunnel is its Cloudflare id (32 hexadecimal characters) or its name at Cloudflare, as non-empty printable text".into(),
                );
                continue;
            }
            let entry = if is_cloudflare_id(&text.to_ascii_lowercase()) {
                Ignored::Id(text.to_ascii_lowercase())
            } else {
                Ignored::Name(text.to_string())
            };
            let norm = match &entry {
                Ignored::Id(id) => id.clone(),
                Ignored::Name(n) => n.clone(),
            };
            if let Some(&first) = seen.get(&norm) {
                let first = self.first_used(&format!("ignore[{first}]"));
                self.push(&key, format!("`{text}` is ignored twice ({first})"));
                continue;
            }
            seen.insert(norm, i);
            if let Ignored::Id(id) = &entry {
                if let Some(t) = tunnels.iter().find(|t| &t.id == id) {
                    self.push(
                        &key,
                        format!(
                            "tunnel `{}` of psk.yaml has this id: a tunnel is either managed by psk or ignored; remove one of them",
                            t.name
                        ),
                    );
                    continue;
                }
            }
            out.push(entry);
        }
        out
    }

    fn unused_policies(&mut self, used: &HashSet<&str>) {
        let raw = self.raw;
        for name in raw.policies.keys() {
            if !used.contains(name.as_str()) {
                self.warn(
                    &format!("policies.{name}"),
                    format!("policy `{name}` is not used by any tunnel"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{errors, parse, FLEET, GOOD};
    use crate::policy::{Generator, Span};

    fn with_verify(verify: &str) -> String {
        GOOD.replace(
            "    rotate_every: 90d\n",
            &format!("    rotate_every: 90d\n{verify}"),
        )
    }

    #[test]
    fn verify_defaults_and_settings() {
        let c = parse(&with_verify("    verify: {}\n")).unwrap();
        let v = c.policies["default"].verify.clone().unwrap();
        assert!(v.health_checks);
        assert_eq!(v.command, None);
        assert_eq!((v.settle.seconds(), v.timeout.seconds()), (120, 900));
        let c = parse(&with_verify(
            "    verify:\n      health_checks: false\n      command: [probe, fra]\n      command_timeout: 5s\n      settle: 30s\n      timeout: 10m\n",
        ))
        .unwrap();
        let v = c.policies["default"].verify.clone().unwrap();
        assert!(!v.health_checks);
        let probe = v.command.unwrap();
        assert_eq!(
            (probe.argv, probe.timeout.seconds()),
            (vec!["probe".to_string(), "fra".to_string()], 5)
        );
        assert_eq!((v.settle.seconds(), v.timeout.seconds()), (30, 600));
        assert_eq!(parse(GOOD).unwrap().policies["default"].verify, None);
    }

    #[test]
    fn verify_mistakes_are_named_with_their_lines() {
        let e = errors(&with_verify(
            "    site_parallel: true\n    verify:\n      health_checks: false\n      settle: 20m\n      timeout: 10m\n      command_timeout: 5s\n",
        ));
        let text: Vec<&str> = e.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(
            text.iter()
                .any(|m| m.contains("`site_parallel: true` with `verify`")),
            "{e:?}"
        );
        assert!(
            text.iter().any(|m| m.contains("nothing to verify with")),
            "{e:?}"
        );
        assert!(
            text.iter()
                .any(|m| m.contains("settle 20m is not shorter than timeout 10m")),
            "{e:?}"
        );
        assert!(
            text.iter()
                .any(|m| m.contains("`command_timeout` without `command`")),
            "{e:?}"
        );
        let e = errors(&with_verify("    verify: {command: [], settle: soon}\n"));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().all(|(line, _)| *line == 8), "{e:?}");
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
    fn an_unused_policy_is_a_warning() {
        let c = parse(&GOOD.replace("tunnels:", "  spare: {rotate_every: 1d}\ntunnels:")).unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].key, "policies.spare");
        assert_eq!(c.warnings[0].position.line, 8);
    }
}
