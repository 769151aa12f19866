//! The planner: `reconcile(desired, state, remote, now) -> Plan`.
//!
//! A pure function, no I/O and no clock, so every rule below is tested
//! exhaustively with fixed instants. Every action carries the reasons that
//! caused it, because a reviewer approves reasons, not just actions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cloudflare::RemoteTunnel;
use crate::config::Config;
use crate::policy::Span;
use crate::state::{canonical, State};
use crate::tunnel::TunnelKey;

/// What Cloudflare reported, per tunnel. `None` in [`reconcile`] means the
/// plan is offline and Cloudflare was not asked.
#[derive(Debug, Default, Clone)]
pub struct Remote {
    pub tunnels: BTreeMap<TunnelKey, RemoteTunnel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// First PSK made by psk for this tunnel.
    Generate,
    /// Replace the PSK psk made before.
    Rotate,
    /// Drop the tunnel from the state only; the tunnel is never touched.
    Forget,
    /// Re-encrypt the sealed PSK to psk.yaml's recipients (`psk reseal`);
    /// no API call, the PSK itself does not change.
    Reseal,
    /// Hand the sealed PSK to its router again (`psk deliver NAME`): the
    /// last `deliver` command failed. No API call.
    Redeliver,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Generate => "generate",
            ActionKind::Rotate => "rotate",
            ActionKind::Forget => "forget",
            ActionKind::Reseal => "reseal",
            ActionKind::Redeliver => "redeliver",
        }
    }

    /// Whether the action changes the PSK on Cloudflare's edge. (Reseal
    /// only re-encrypts the state.)
    pub fn changes_psk(self) -> bool {
        matches!(self, ActionKind::Generate | ActionKind::Rotate)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reason {
    /// psk has no sealed PSK for the tunnel.
    NeverRotated,
    /// The policy's period has passed.
    Due {
        last_rotated: DateTime<Utc>,
        days_ago: i64,
        policy: String,
        every: Span,
        /// The policy spreads rotations over this span before they fall due.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spread: Option<Span>,
    },
    /// A rotation was started and its answer never recorded.
    Interrupted { started: DateTime<Utc> },
    /// Cloudflare's PSK changed after the one psk sealed.
    #[serde(rename = "drift")]
    ChangedOutside { on: DateTime<Utc> },
    /// In the state but no longer in psk.yaml.
    NotInConfig,
    /// Asked for with `--replace`.
    Forced,
    /// A PSK psk generated itself is sealed in the state as pending, and
    /// Cloudflare has not confirmed it: it must be sent (again).
    Pending {
        generated: DateTime<Utc>,
        /// Cloudflare's PSK changed after it was generated (the answer to
        /// an earlier send may have been lost).
        remote_changed: Option<DateTime<Utc>>,
    },
    /// The policy's `deliver` command failed for the sealed PSK.
    DeliveryFailed {
        at: DateTime<Utc>,
        error: Option<String>,
    },
    /// psk.yaml's recipients differ from those the state is sealed to.
    RecipientsChanged {
        added: Vec<String>,
        removed: Vec<String>,
    },
}

impl Reason {
    /// A short machine name, for JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::NeverRotated => "never_rotated",
            Reason::Due { .. } => "due",
            Reason::Interrupted { .. } => "interrupted",
            Reason::ChangedOutside { .. } => "drift",
            Reason::NotInConfig => "not_in_config",
            Reason::Forced => "forced",
            Reason::Pending { .. } => "pending",
            Reason::RecipientsChanged { .. } => "recipients_changed",
            Reason::DeliveryFailed { .. } => "delivery_failed",
        }
    }

    /// The sentence shown to people.
    pub fn describe(&self) -> String {
        match self {
            Reason::NeverRotated => "psk holds no sealed PSK for it yet".to_string(),
            Reason::Due {
                last_rotated,
                days_ago,
                policy,
                every,
                spread,
            } => format!(
                "last rotated {}, {} day{} ago; policy \"{policy}\" rotates every {every}{}",
                last_rotated.format("%Y-%m-%d"),
                days_ago,
                if *days_ago == 1 { "" } else { "s" },
                match spread {
                    Some(s) => format!(", spread over {s} (this tunnel's turn has come)"),
                    None => String::new(),
                }
            ),
            Reason::Interrupted { started } => format!(
                "interrupted: a rotation started {} never recorded its answer, so the PSK on Cloudflare's edge is unknown",
                crate::state::format_time(started)
            ),
            Reason::ChangedOutside { on } => format!(
                "changed outside psk on {}: the sealed PSK is stale",
                on.format("%Y-%m-%d")
            ),
            Reason::NotInConfig => {
                "no longer in psk.yaml; only the state record is dropped, the tunnel is not touched"
                    .to_string()
            }
            Reason::Forced => "replacement requested with --replace".to_string(),
            Reason::Pending {
                generated,
                remote_changed,
            } => {
                let mut m = format!(
                    "pending: a PSK psk generated {} is sealed in the state but Cloudflare never confirmed it; apply sends a new one",
                    crate::state::format_time(generated)
                );
                if let Some(on) = remote_changed {
                    m.push_str(&format!(
                        " (Cloudflare's PSK changed {}, so the earlier send may have landed; the new key replaces it)",
                        crate::state::format_time(on)
                    ));
                }
                m
            }
            Reason::DeliveryFailed { at, error } => format!(
                "delivering the PSK to its router failed {}{}; `psk deliver NAME` tries again (needs an identity)",
                crate::state::format_time(at),
                error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
            ),
            Reason::RecipientsChanged { added, removed } => {
                let mut parts = Vec::new();
                if !added.is_empty() {
                    parts.push(format!("added {}", added.join(", ")));
                }
                if !removed.is_empty() {
                    parts.push(format!("removed {}", removed.join(", ")));
                }
                format!(
                    "the recipients in psk.yaml changed: {}. `psk reseal` re-encrypts the sealed PSK to them (needs an identity, no API call)",
                    parts.join("; ")
                )
            }
        }
    }
}

/// The outcome of a `validate_only` dry run of an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "message", rename_all = "snake_case")]
pub enum DryRun {
    /// Not attempted: offline, or an action that makes no API call.
    NotRun,
    Accepted,
    /// Cloudflare answered that it would not do it (a 4xx with its error,
    /// or the tunnel listed as unapplied): apply would fail, so the plan
    /// may not be applied.
    Refused(String),
    /// The dry run itself failed for a reason that says nothing about the
    /// action (no answer or an unknown outcome, a 5xx after every retry,
    /// the rate limit): a warning, not a refusal. Apply still tries it and
    /// reports what Cloudflare says then.
    NoVerdict(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub name: String,
    pub key: TunnelKey,
    pub kind: ActionKind,
    pub reasons: Vec<Reason>,
    pub policy: Option<String>,
    pub last_rotated: Option<DateTime<Utc>>,
    pub next_due: Option<DateTime<Utc>>,
    pub dry_run: DryRun,
}

/// A tunnel that needs nothing now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unchanged {
    pub name: String,
    pub key: TunnelKey,
    pub next_due: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The instant policies were evaluated at.
    pub now: DateTime<Utc>,
    /// Cloudflare was not consulted.
    pub offline: bool,
    /// Limited to some tunnels with `--target`: the plan may be incomplete.
    #[serde(default)]
    pub targeted: bool,
    pub actions: Vec<Action>,
    pub unchanged: Vec<Unchanged>,
    /// Needed but held back, by a window or a site, in psk.yaml order.
    #[serde(default)]
    pub deferred: Vec<Deferred>,
    /// Falling due within the forecast horizon, soonest first.
    #[serde(default)]
    pub upcoming: Vec<Upcoming>,
    /// How far ahead `upcoming` looks; `None` for no forecast.
    #[serde(default)]
    pub horizon: Option<Span>,
}

/// A tunnel that needs a new PSK but does not get it in this apply: the
/// plan says which and why, so nothing waits silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deferred {
    pub name: String,
    pub key: TunnelKey,
    /// What it would be, were it not deferred.
    pub kind: ActionKind,
    pub reasons: Vec<Reason>,
    pub policy: String,
    pub why: Deferral,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case", deny_unknown_fields)]
pub enum Deferral {
    /// The policy's change window is shut now.
    Window {
        /// When it opens next.
        opens: DateTime<Utc>,
        /// `opens` in the window's own time zone.
        opens_local: String,
        /// The window, e.g. `sat, sun 02:00–06:00 Europe/Berlin`.
        window: String,
    },
    /// Another tunnel of the same site changes its PSK in this apply.
    Site { site: String, rotating: String },
}

impl Deferral {
    /// A short machine name, for JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Deferral::Window { .. } => "window",
            Deferral::Site { .. } => "site",
        }
    }

    /// The sentence shown to people.
    pub fn describe(&self) -> String {
        match self {
            Deferral::Window {
                opens_local,
                window,
                ..
            } => format!("waiting for window (opens {opens_local}; window {window})"),
            Deferral::Site { site, rotating } => format!(
                "waiting for a later apply: {rotating} of site \"{site}\" changes in this one, and tunnels of one site change one per apply (`site_parallel: true` on their policies allows more)"
            ),
        }
    }
}

/// A tunnel falling due soon: information, not an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upcoming {
    pub name: String,
    pub key: TunnelKey,
    pub policy: String,
    /// When its PSK falls due (spread included).
    pub due: DateTime<Utc>,
    /// When a rotation may start: `due`, or when the window opens after it.
    pub starts: DateTime<Utc>,
}

/// The default forecast: two weeks, long enough to see the next weekend
/// window coming.
pub const DEFAULT_HORIZON_DAYS: i64 = 14;

impl Plan {
    pub fn count(&self, kind: ActionKind) -> usize {
        self.actions.iter().filter(|a| a.kind == kind).count()
    }

    pub fn has_changes(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Whether any dry run was refused: such a plan must not be applied.
    pub fn has_refusals(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a.dry_run, DryRun::Refused(_)))
    }

    /// How many dry runs gave no verdict: a warning to show, not a reason
    /// to refuse the plan.
    pub fn no_verdicts(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a.dry_run, DryRun::NoVerdict(_)))
            .count()
    }
}

/// What the operator asked of this plan beyond psk.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Tunnel names to rotate now whatever their policy says (`--replace`).
    pub replace: BTreeSet<String>,
    /// When set, only these tunnel names are planned (`--target`).
    pub target: Option<BTreeSet<String>>,
    /// List tunnels falling due within this span as upcoming (`--forecast`).
    pub horizon: Option<Span>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            replace: BTreeSet::new(),
            target: None,
            horizon: Span::from_seconds(DEFAULT_HORIZON_DAYS * 86_400),
        }
    }
}

impl PlanOptions {
    fn includes(&self, name: &str) -> bool {
        self.target.as_ref().is_none_or(|t| t.contains(name))
    }
}

/// Decides what to do for every tunnel in `desired` and in `state`.
///
/// `remote` holds what Cloudflare reported (absent when offline). Actions
/// come in psk.yaml order, then reseals (psk.yaml order), then forgets in
/// state order.
pub fn reconcile(
    desired: &Config,
    state: Option<&State>,
    remote: Option<&Remote>,
    now: DateTime<Utc>,
) -> Plan {
    reconcile_with(desired, state, remote, now, &PlanOptions::default())
}

/// [`reconcile`] with `--replace` and `--target`.
pub fn reconcile_with(
    desired: &Config,
    state: Option<&State>,
    remote: Option<&Remote>,
    now: DateTime<Utc>,
    options: &PlanOptions,
) -> Plan {
    let mut actions = Vec::new();
    let mut unchanged = Vec::new();
    let mut deferred = Vec::new();
    let mut upcoming = Vec::new();
    let mut wanted = HashSet::new();
    let horizon_end = options
        .horizon
        .and_then(|h| now.checked_add_signed(h.as_delta()))
        .unwrap_or(now);

    // Tunnels named only by name get their id from Cloudflare's list here
    // (from the state already, when it recorded them: see the CLI).
    let tunnels = desired.tunnels_resolved_by(|account, name| {
        let mut found = remote?
            .tunnels
            .iter()
            .filter(|(k, t)| k.account_id == account && t.name == name);
        let (key, _) = found.next()?;
        // Two tunnels of one name: refresh refuses that before planning.
        found.next().is_none().then(|| key.tunnel_id.clone())
    });
    for tunnel in &tunnels {
        let key = tunnel.key();
        wanted.insert(key.clone());
        if !options.includes(&tunnel.name) {
            continue;
        }
        let policy = desired.policy_of(tunnel);
        let record = state.and_then(|s| s.get(&key));
        let sealed = record.filter(|r| r.psk.is_some());
        let last_rotated = sealed.and_then(|r| r.last_rotated);
        let next_due = last_rotated.map(|t| policy.due_for(&key, t));

        let mut reasons = Vec::new();
        if let Some(intent) = record.and_then(|r| r.intent.as_ref()) {
            reasons.push(Reason::Interrupted {
                started: intent.started,
            });
        }
        let remote_on = remote
            .and_then(|r| r.tunnels.get(&key))
            .and_then(|t| t.last_generated_on);
        if let Some(p) = record.and_then(|r| r.pending.as_ref()) {
            // Sending the pending key settles the tunnel, whatever else is due.
            reasons.push(Reason::Pending {
                generated: p.generated,
                remote_changed: remote_on.filter(|on| *on >= p.generated),
            });
        }
        match (sealed, last_rotated) {
            _ if record.is_some_and(|r| r.pending.is_some()) => {}
            (Some(_), Some(last)) => {
                let remote_change = remote
                    .and_then(|r| r.tunnels.get(&key))
                    .and_then(|t| t.last_generated_on)
                    .filter(|on| *on > last);
                if let Some(on) = remote_change {
                    if reasons.is_empty() {
                        reasons.push(Reason::ChangedOutside { on });
                    }
                }
                if policy.due_for(&key, last) <= now {
                    reasons.push(Reason::Due {
                        last_rotated: last,
                        days_ago: crate::policy::days_between(last, now),
                        policy: policy.name.clone(),
                        every: policy.rotate_every,
                        spread: policy.spread,
                    });
                }
            }
            _ => reasons.push(Reason::NeverRotated),
        }
        if options.replace.contains(&tunnel.name) {
            reasons.push(Reason::Forced);
        }

        if reasons.is_empty() {
            let due = next_due.expect("a sealed, dated PSK has a due date");
            if options.horizon.is_some() && due <= horizon_end {
                upcoming.push(Upcoming {
                    name: tunnel.name.clone(),
                    key: key.clone(),
                    policy: policy.name.clone(),
                    due,
                    starts: policy.may_start_at(due),
                });
            }
            unchanged.push(Unchanged {
                name: tunnel.name.clone(),
                key,
                next_due: due,
            });
            continue;
        }
        let kind = if sealed.is_some() {
            ActionKind::Rotate
        } else {
            ActionKind::Generate
        };
        // Waiting would only prolong an outage (the key on the edge is
        // unknown) or ignore an explicit `--replace`.
        let urgent = reasons.iter().any(|r| {
            matches!(
                r,
                Reason::Interrupted { .. } | Reason::Pending { .. } | Reason::Forced
            )
        });
        if let Some(window) = policy
            .window
            .as_ref()
            .filter(|w| !urgent && !w.contains(now))
        {
            let opens = window.next_open(now).unwrap_or(DateTime::<Utc>::MAX_UTC);
            deferred.push(Deferred {
                name: tunnel.name.clone(),
                key,
                kind,
                reasons,
                policy: policy.name.clone(),
                why: Deferral::Window {
                    opens,
                    opens_local: window.local(opens),
                    window: window.to_string(),
                },
            });
            continue;
        }
        actions.push(Action {
            name: tunnel.name.clone(),
            key,
            kind,
            reasons,
            policy: Some(policy.name.clone()),
            last_rotated,
            next_due,
            dry_run: DryRun::NotRun,
        });
    }

    let site_deferred = hold_back_sites(desired, &tunnels, &mut actions);
    deferred.extend(site_deferred);
    let order: HashMap<&str, usize> = tunnels
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    deferred.sort_by_key(|d| order.get(d.name.as_str()).copied());
    upcoming.sort_by(|a, b| a.due.cmp(&b.due).then_with(|| a.name.cmp(&b.name)));

    if let Some(state) = state {
        // Each sealed key (and pending key) against psk.yaml's recipients:
        // keys an apply sealed after they changed are already right.
        let desired_fps = desired.recipient_fingerprints();
        let mut header: Option<Vec<String>> = None;
        for tunnel in &tunnels {
            let key = tunnel.key();
            let Some(rec) = state.get(&key) else {
                continue;
            };
            // `None` inside: sealed to the state's own list.
            let psk = rec.psk.as_ref().map(|_| rec.sealed_to.as_deref());
            let pending = rec.pending.as_ref().map(|p| p.sealed_to.as_deref());
            let lists = psk.into_iter().chain(pending);
            let mut stale = None;
            for list in lists {
                let list = match list {
                    Some(l) => canonical(l),
                    None => header
                        .get_or_insert_with(|| canonical(&state.recipients))
                        .clone(),
                };
                if list != desired_fps {
                    stale = Some(list);
                    break;
                }
            }
            let Some(sealed_to) = stale else {
                continue;
            };
            let added: Vec<String> = desired_fps
                .iter()
                .filter(|f| !sealed_to.contains(f))
                .cloned()
                .collect();
            let removed: Vec<String> = sealed_to
                .iter()
                .filter(|f| !desired_fps.contains(f))
                .cloned()
                .collect();
            {
                actions.push(Action {
                    name: tunnel.name.clone(),
                    key,
                    kind: ActionKind::Reseal,
                    reasons: vec![Reason::RecipientsChanged {
                        added: added.clone(),
                        removed: removed.clone(),
                    }],
                    policy: Some(desired.policy_of(tunnel).name.clone()),
                    last_rotated: rec.last_rotated,
                    next_due: None,
                    dry_run: DryRun::NotRun,
                });
            }
        }
        // A failed delivery, where no new key is coming anyway.
        for tunnel in &tunnels {
            let key = tunnel.key();
            if desired.policy_of(tunnel).deliver.is_none()
                || actions.iter().any(|a| a.key == key && a.kind.changes_psk())
            {
                continue;
            }
            let Some(rec) = state.get(&key).filter(|r| r.psk.is_some()) else {
                continue;
            };
            if let Some(d) = rec.delivery.as_ref().filter(|d| !d.ok) {
                actions.push(Action {
                    name: tunnel.name.clone(),
                    key,
                    kind: ActionKind::Redeliver,
                    reasons: vec![Reason::DeliveryFailed {
                        at: d.at,
                        error: d.error.clone(),
                    }],
                    policy: Some(desired.policy_of(tunnel).name.clone()),
                    last_rotated: rec.last_rotated,
                    next_due: None,
                    dry_run: DryRun::NotRun,
                });
            }
        }
        for (k, rec) in &state.tunnels {
            if wanted.contains(k) || !options.includes(&rec.name) {
                continue;
            }
            actions.push(Action {
                name: rec.name.clone(),
                key: rec.key(),
                kind: ActionKind::Forget,
                reasons: vec![Reason::NotInConfig],
                policy: None,
                last_rotated: rec.last_rotated,
                next_due: None,
                dry_run: DryRun::NotRun,
            });
        }
    }

    Plan {
        now,
        offline: remote.is_none(),
        targeted: options.target.is_some(),
        actions,
        unchanged,
        deferred,
        upcoming,
        horizon: options.horizon,
    }
}

/// Keeps one PSK change per site (more where every policy involved sets
/// `site_parallel`) and returns the rest as deferred. The most urgent
/// change of a site goes first: an interrupted or pending one (its path
/// may be down already), then `--replace`, then drift, then the rest in
/// psk.yaml order.
fn hold_back_sites(
    desired: &Config,
    tunnels: &[crate::config::Tunnel],
    actions: &mut Vec<Action>,
) -> Vec<Deferred> {
    let site_of: HashMap<&str, (&str, bool)> = tunnels
        .iter()
        .filter_map(|t| {
            let site = t.site.as_deref()?;
            // With a delivery command, apply rotates a site's tunnels one
            // after another, each only once the previous one is delivered.
            let p = desired.policy_of(t);
            Some((
                t.name.as_str(),
                (site, p.site_parallel || p.deliver.is_some()),
            ))
        })
        .collect();
    let urgency = |a: &Action| {
        let has = |f: fn(&Reason) -> bool| a.reasons.iter().any(f);
        if has(|r| matches!(r, Reason::Interrupted { .. } | Reason::Pending { .. })) {
            0
        } else if has(|r| matches!(r, Reason::Forced)) {
            1
        } else if has(|r| matches!(r, Reason::ChangedOutside { .. })) {
            2
        } else {
            3
        }
    };
    let mut candidates: Vec<usize> = (0..actions.len())
        .filter(|i| {
            actions[*i].kind.changes_psk() && site_of.contains_key(actions[*i].name.as_str())
        })
        .collect();
    candidates.sort_by_key(|i| (urgency(&actions[*i]), *i));

    // Per site: the names chosen so far and whether all of them allow company.
    let mut chosen: HashMap<&str, (Vec<String>, bool)> = HashMap::new();
    let mut held: HashMap<usize, (String, String)> = HashMap::new();
    for i in candidates {
        let (site, parallel) = site_of[actions[i].name.as_str()];
        match chosen.get_mut(site) {
            None => {
                chosen.insert(site, (vec![actions[i].name.clone()], parallel));
            }
            Some((names, all_parallel)) if *all_parallel && parallel => {
                names.push(actions[i].name.clone());
            }
            Some((names, _)) => {
                held.insert(i, (site.to_string(), names[0].clone()));
            }
        }
    }
    let mut out = Vec::new();
    let mut kept = Vec::new();
    for (i, a) in std::mem::take(actions).into_iter().enumerate() {
        match held.remove(&i) {
            Some((site, rotating)) => out.push(Deferred {
                name: a.name,
                key: a.key,
                kind: a.kind,
                reasons: a.reasons,
                policy: a.policy.unwrap_or_default(),
                why: Deferral::Site { site, rotating },
            }),
            None => kept.push(a),
        }
    }
    *actions = kept;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Intent;
    use std::path::Path;

    const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    fn config() -> Config {
        let text = format!(
            "version: 1
account_id: {ACCOUNT}
recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
policies:
  default: {{rotate_every: 30d}}
tunnels:
  - {{name: a, id: {A}}}
  - {{name: b, id: {B}}}
"
        );
        Config::parse(Path::new("psk.yaml"), &text).unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn state_with(name: &str, id: &str, last: &str) -> State {
        let mut s = State::new(vec![]);
        let r = s.entry(&TunnelKey::new(ACCOUNT, id), name);
        r.psk = Some("sealed".into());
        r.last_rotated = Some(t(last));
        s
    }

    #[test]
    fn empty_state_generates_everything() {
        let plan = reconcile(&config(), None, None, t("2026-11-26T00:00:00Z"));
        assert_eq!(plan.count(ActionKind::Generate), 2);
        assert!(plan.offline);
        assert_eq!(plan.actions[0].name, "a");
        assert_eq!(plan.actions[0].reasons, vec![Reason::NeverRotated]);
    }

    #[test]
    fn due_exactly_at_the_period() {
        let s = state_with("a", A, "2026-11-01T00:00:00Z");
        let before = reconcile(&config(), Some(&s), None, t("2026-11-30T23:59:59Z"));
        assert_eq!(before.count(ActionKind::Rotate), 0);
        assert_eq!(before.unchanged[0].next_due, t("2026-12-01T00:00:00Z"));
        let at = reconcile(&config(), Some(&s), None, t("2026-12-01T00:00:00Z"));
        assert_eq!(at.count(ActionKind::Rotate), 1);
        assert_eq!(at.actions[0].reasons[0].code(), "due");
        assert!(at.actions[0].reasons[0]
            .describe()
            .contains("30 days ago; policy \"default\" rotates every 30d"));
    }

    #[test]
    fn drift_and_interruption() {
        let mut s = state_with("a", A, "2026-11-01T00:00:00Z");
        let mut remote = Remote::default();
        remote.tunnels.insert(
            TunnelKey::new(ACCOUNT, A),
            RemoteTunnel {
                id: A.into(),
                name: "a".into(),
                last_generated_on: Some(t("2026-11-10T00:00:00Z")),
            },
        );
        let now = t("2026-11-20T00:00:00Z");
        let plan = reconcile(&config(), Some(&s), Some(&remote), now);
        let a = &plan.actions[0];
        assert_eq!(a.kind, ActionKind::Rotate);
        assert_eq!(
            a.reasons,
            vec![Reason::ChangedOutside {
                on: t("2026-11-10T00:00:00Z")
            }]
        );

        s.entry(&TunnelKey::new(ACCOUNT, A), "a").intent = Some(Intent {
            operation: "psk_generate".into(),
            started: t("2026-11-09T00:00:00Z"),
        });
        let plan = reconcile(&config(), Some(&s), Some(&remote), now);
        assert_eq!(plan.actions[0].reasons[0].code(), "interrupted");
        assert_eq!(plan.actions[0].reasons.len(), 1);
    }

    #[test]
    fn removed_tunnels_are_forgotten_not_touched() {
        let s = state_with(
            "gone",
            "99999999999999999999999999999999",
            "2026-11-01T00:00:00Z",
        );
        let plan = reconcile(&config(), Some(&s), None, t("2026-11-02T00:00:00Z"));
        let forget: Vec<_> = plan
            .actions
            .iter()
            .filter(|a| a.kind == ActionKind::Forget)
            .collect();
        assert_eq!(forget.len(), 1);
        assert_eq!(forget[0].name, "gone");
        assert!(!forget[0].kind.changes_psk());
    }

    #[test]
    fn a_pending_key_is_sent_again_whatever_else_is_due() {
        let mut s = state_with("a", A, "2026-01-01T00:00:00Z");
        let generated = t("2026-11-10T00:00:00Z");
        s.entry(&TunnelKey::new(ACCOUNT, A), "a").stage_pending(
            "sealed-new".into(),
            None,
            generated,
        );
        let mut remote = Remote::default();
        remote.tunnels.insert(
            TunnelKey::new(ACCOUNT, A),
            RemoteTunnel {
                id: A.into(),
                name: "a".into(),
                last_generated_on: Some(t("2026-11-10T00:00:01Z")),
            },
        );
        let plan = reconcile(
            &config(),
            Some(&s),
            Some(&remote),
            t("2026-11-20T00:00:00Z"),
        );
        let a = &plan.actions[0];
        assert_eq!(a.kind, ActionKind::Rotate);
        assert_eq!(a.reasons.len(), 1, "{:?}", a.reasons);
        assert_eq!(a.reasons[0].code(), "pending");
        let text = a.reasons[0].describe();
        assert!(text.contains("apply sends a new one"), "{text}");
        assert!(text.contains("the earlier send may have landed"), "{text}");

        // A first key that is still pending.
        let mut s = State::new(vec![]);
        s.entry(&TunnelKey::new(ACCOUNT, B), "b")
            .stage_pending("sealed".into(), None, generated);
        let plan = reconcile(&config(), Some(&s), None, t("2026-11-20T00:00:00Z"));
        let b = plan.actions.iter().find(|x| x.name == "b").unwrap();
        assert_eq!(b.kind, ActionKind::Generate);
        assert_eq!(b.reasons[0].code(), "pending");
        assert!(!b.reasons[0].describe().contains("earlier send"));
    }

    #[test]
    fn changed_recipients_plan_reseals_of_every_sealed_psk() {
        let mut s = state_with("a", A, "2026-11-01T00:00:00Z");
        let now = t("2026-11-02T00:00:00Z");
        s.recipients = config().recipient_fingerprints();
        let plan = reconcile(&config(), Some(&s), None, now);
        assert_eq!(plan.count(ActionKind::Reseal), 0);

        s.recipients = vec!["sha256:0000000000000000".into()];
        let plan = reconcile(&config(), Some(&s), None, now);
        let reseal: Vec<_> = plan
            .actions
            .iter()
            .filter(|a| a.kind == ActionKind::Reseal)
            .collect();
        assert_eq!(reseal.len(), 1, "only tunnels with a sealed PSK");
        assert_eq!(reseal[0].name, "a");
        assert!(!reseal[0].kind.changes_psk());
        let r = &reseal[0].reasons[0];
        assert_eq!(r.code(), "recipients_changed");
        let text = r.describe();
        assert!(text.contains("removed sha256:0000000000000000"), "{text}");
        assert!(
            text.contains(&format!("added {}", config().recipient_fingerprints()[0])),
            "{text}"
        );

        // A key an apply sealed after the change names its recipients.
        let rec = s.tunnels.values_mut().next().unwrap();
        rec.sealed_to = Some(config().recipient_fingerprints());
        let plan = reconcile(&config(), Some(&s), None, now);
        assert_eq!(plan.count(ActionKind::Reseal), 0, "already sealed right");
        // Its pending key, sealed to the header's old list, is not.
        let rec = s.tunnels.values_mut().next().unwrap();
        rec.stage_pending("sealed-new".into(), None, now);
        let plan = reconcile(&config(), Some(&s), None, now);
        assert_eq!(plan.count(ActionKind::Reseal), 1);
    }

    #[test]
    fn deterministic() {
        let s = state_with("a", A, "2026-01-01T00:00:00Z");
        let now = t("2026-11-02T00:00:00Z");
        assert_eq!(
            reconcile(&config(), Some(&s), None, now),
            reconcile(&config(), Some(&s), None, now)
        );
    }

    fn config_with(policy: &str, tunnels: &str) -> Config {
        let text = format!(
            "version: 1
account_id: {ACCOUNT}
recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
policies:
  default: {policy}
tunnels:
{tunnels}"
        );
        Config::parse(Path::new("psk.yaml"), &text).unwrap()
    }

    fn pair(site_a: &str, site_b: &str) -> String {
        format!(
            "  - {{name: a, id: {A}, site: {site_a}}}\n  - {{name: b, id: {B}, site: {site_b}}}\n"
        )
    }

    #[test]
    fn a_due_tunnel_waits_for_its_window() {
        // Saturdays 02:00-06:00 in Berlin (01:00-05:00 UTC in winter).
        let c = config_with(
            "{rotate_every: 30d, window: {days: [sat], start: \"02:00\", end: \"06:00\", timezone: Europe/Berlin}}",
            &format!("  - {{name: a, id: {A}}}\n"),
        );
        let mut s = state_with("a", A, "2026-10-01T00:00:00Z");
        s.recipients = c.recipient_fingerprints();
        // Thursday 2026-11-26: due, window shut.
        let plan = reconcile(&c, Some(&s), None, t("2026-11-26T12:00:00Z"));
        assert!(plan.actions.is_empty());
        assert_eq!(plan.deferred.len(), 1);
        let d = &plan.deferred[0];
        assert_eq!(d.kind, ActionKind::Rotate);
        assert_eq!(d.reasons[0].code(), "due");
        assert_eq!(
            d.why,
            Deferral::Window {
                opens: t("2026-11-28T01:00:00Z"),
                opens_local: "2026-11-28 02:00 CET".into(),
                window: "sat 02:00–06:00 Europe/Berlin".into(),
            }
        );
        assert!(d
            .why
            .describe()
            .starts_with("waiting for window (opens 2026-11-28 02:00 CET"));
        assert!(!plan.has_changes());
        // Inside the window it rotates.
        let plan = reconcile(&c, Some(&s), None, t("2026-11-28T01:30:00Z"));
        assert_eq!(plan.count(ActionKind::Rotate), 1);
        assert!(plan.deferred.is_empty());
    }

    #[test]
    fn an_interrupted_rotation_does_not_wait_for_the_window() {
        let c = config_with(
            "{rotate_every: 30d, window: {days: [sat], start: \"02:00\", end: \"06:00\"}}",
            &format!("  - {{name: a, id: {A}}}\n"),
        );
        let mut s = state_with("a", A, "2026-11-20T00:00:00Z");
        s.recipients = c.recipient_fingerprints();
        s.entry(&TunnelKey::new(ACCOUNT, A), "a").intent = Some(Intent {
            operation: "psk_generate".into(),
            started: t("2026-11-25T00:00:00Z"),
        });
        let plan = reconcile(&c, Some(&s), None, t("2026-11-26T12:00:00Z"));
        assert_eq!(plan.count(ActionKind::Rotate), 1);
        assert!(plan.deferred.is_empty());
    }

    #[test]
    fn one_tunnel_per_site_per_apply() {
        let c = config_with("{rotate_every: 30d}", &pair("fra", "fra"));
        let plan = reconcile(&c, None, None, t("2026-11-26T00:00:00Z"));
        assert_eq!(plan.count(ActionKind::Generate), 1);
        assert_eq!(plan.actions[0].name, "a");
        assert_eq!(plan.deferred.len(), 1);
        assert_eq!(plan.deferred[0].name, "b");
        assert_eq!(
            plan.deferred[0].why,
            Deferral::Site {
                site: "fra".into(),
                rotating: "a".into()
            }
        );
        // Different sites, or a policy that allows it: both go.
        let c = config_with("{rotate_every: 30d}", &pair("fra", "ams"));
        assert_eq!(
            reconcile(&c, None, None, t("2026-11-26T00:00:00Z"))
                .actions
                .len(),
            2
        );
        let c = config_with(
            "{rotate_every: 30d, site_parallel: true}",
            &pair("fra", "fra"),
        );
        let plan = reconcile(&c, None, None, t("2026-11-26T00:00:00Z"));
        assert_eq!(plan.actions.len(), 2);
        assert!(plan.deferred.is_empty());
    }

    #[test]
    fn the_most_urgent_of_a_site_goes_first() {
        let c = config_with("{rotate_every: 30d}", &pair("fra", "fra"));
        let mut s = state_with("a", A, "2026-10-01T00:00:00Z");
        s.recipients = c.recipient_fingerprints();
        let b = s.entry(&TunnelKey::new(ACCOUNT, B), "b");
        b.psk = Some("sealed".into());
        b.last_rotated = Some(t("2026-11-20T00:00:00Z"));
        b.intent = Some(Intent {
            operation: "psk_generate".into(),
            started: t("2026-11-25T00:00:00Z"),
        });
        let plan = reconcile(&c, Some(&s), None, t("2026-11-26T00:00:00Z"));
        assert_eq!(plan.actions.len(), 1);
        assert_eq!(plan.actions[0].name, "b", "the interrupted one");
        assert_eq!(plan.deferred[0].name, "a");
    }

    #[test]
    fn spread_moves_the_due_date_to_the_tunnels_slot() {
        let c = config_with("{rotate_every: 30d, spread: 7d}", &pair("x", "y"));
        let mut s = state_with("a", A, "2026-11-01T00:00:00Z");
        s.recipients = c.recipient_fingerprints();
        let b = s.entry(&TunnelKey::new(ACCOUNT, B), "b");
        b.psk = Some("sealed".into());
        b.last_rotated = Some(t("2026-11-01T00:00:00Z"));
        let plan = reconcile(&c, Some(&s), None, t("2026-11-02T00:00:00Z"));
        let deadline = t("2026-12-01T00:00:00Z");
        let due: Vec<DateTime<Utc>> = plan.unchanged.iter().map(|u| u.next_due).collect();
        for (due, id) in due.iter().zip([A, B]) {
            let key = TunnelKey::new(ACCOUNT, id);
            let offset = crate::policy::spread::offset(&key, "7d".parse().unwrap());
            assert!(*due <= deadline && deadline - *due < chrono::TimeDelta::days(7));
            assert_eq!((due.timestamp() - offset).rem_euclid(7 * 86_400), 0);
        }
        assert_ne!(due[0], due[1], "imported together, due apart");
        // At its slot the tunnel is due, and the reason names the spread.
        let plan = reconcile(&c, Some(&s), None, due[0]);
        let a = plan.actions.iter().find(|a| a.name == "a").unwrap();
        assert!(a.reasons[0].describe().contains("spread over 1w"));
    }

    #[test]
    fn upcoming_lists_what_falls_due_within_the_horizon() {
        let c = config_with(
            "{rotate_every: 30d, window: {days: [sat], start: \"02:00\", end: \"06:00\"}}",
            &pair("x", "y"),
        );
        let mut s = state_with("a", A, "2026-11-01T00:00:00Z");
        s.recipients = c.recipient_fingerprints();
        let b = s.entry(&TunnelKey::new(ACCOUNT, B), "b");
        b.psk = Some("sealed".into());
        b.last_rotated = Some(t("2026-11-20T00:00:00Z"));
        let now = t("2026-11-20T00:00:00Z");
        let plan = reconcile(&c, Some(&s), None, now);
        assert_eq!(plan.upcoming.len(), 1, "{:?}", plan.upcoming);
        let u = &plan.upcoming[0];
        assert_eq!(u.name, "a");
        assert_eq!(u.due, t("2026-12-01T00:00:00Z"));
        // 2026-12-01 is a Tuesday; the window opens on Saturday.
        assert_eq!(u.starts, t("2026-12-05T02:00:00Z"));
        let wide = reconcile_with(
            &c,
            Some(&s),
            None,
            now,
            &PlanOptions {
                horizon: "30d".parse().ok(),
                ..PlanOptions::default()
            },
        );
        assert_eq!(wide.upcoming.len(), 2);
        let none = reconcile_with(
            &c,
            Some(&s),
            None,
            now,
            &PlanOptions {
                horizon: None,
                ..PlanOptions::default()
            },
        );
        assert!(none.upcoming.is_empty());
    }

    #[test]
    fn tunnels_named_by_name_are_found_in_the_remote_list() {
        let c = config_with("{rotate_every: 30d}", "  - {name: edge-1}\n");
        assert_eq!(c.unresolved.len(), 1);
        let offline = reconcile(&c, None, None, t("2026-11-26T00:00:00Z"));
        assert!(offline.actions.is_empty(), "unknown id: nothing to plan");
        let mut remote = Remote::default();
        remote.tunnels.insert(
            TunnelKey::new(ACCOUNT, B),
            RemoteTunnel {
                id: B.into(),
                name: "edge-1".into(),
                last_generated_on: None,
            },
        );
        let plan = reconcile(&c, None, Some(&remote), t("2026-11-26T00:00:00Z"));
        assert_eq!(plan.actions.len(), 1);
        assert_eq!(plan.actions[0].key, TunnelKey::new(ACCOUNT, B));
        assert_eq!(plan.actions[0].name, "edge-1");
    }
}
