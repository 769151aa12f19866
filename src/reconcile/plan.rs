//! The plan as one value: what psk will do, to which tunnel, and why.
//!
//! These types are what the planner hands to everything downstream: the
//! renderers (human, markdown, JSON), the saved plan and the executor. They
//! live apart from the planning rules so a reader of either need not wade
//! through the other. Every action and deferral carries its reasons,
//! because a reviewer approves reasons, not just actions. [`Remote`] and
//! [`PlanOptions`], the planner's inputs beside psk.yaml and the state,
//! are here too, so every module of the planner reads its types from one
//! place and none imports another back.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cloudflare::RemoteTunnel;
use crate::health::PathHealth;
use crate::policy::Span;
use crate::tunnel::TunnelKey;

/// What Cloudflare reported, per tunnel. `None` in
/// [`reconcile`](super::reconcile) means the plan is offline and Cloudflare
/// was not asked.
#[derive(Debug, Default, Clone)]
pub struct Remote {
    pub tunnels: BTreeMap<TunnelKey, RemoteTunnel>,
    /// The health now of every tunnel of a site whose policy verifies with
    /// Cloudflare's health checks (see [`crate::remote::refresh`]).
    pub health: BTreeMap<TunnelKey, PathHealth>,
    /// Accounts no longer in psk.yaml that still hold records in the state,
    /// and that Cloudflare listed for this token anyway (see
    /// [`crate::remote::list_departed`]): a record there whose tunnel is not
    /// listed is gone for good.
    pub departed: std::collections::BTreeSet<String>,
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
    /// psk has no sealed PSK for the tunnel (and Cloudflare was not asked,
    /// or reports no PSK).
    NeverRotated,
    /// psk has no sealed PSK for the tunnel, but Cloudflare has held one
    /// since `since`: a key the router uses now, which apply would replace.
    UnknownLiveKey { since: DateTime<Utc> },
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
    /// Cloudflare no longer lists the tunnel: its key is live nowhere, so
    /// the record may go (with [`Reason::NotInConfig`]).
    NotListed,
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
        /// What people call a fingerprint of `added` or `removed` that
        /// psk.yaml lists (see [`crate::config::Config::recipient_name`]).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        names: BTreeMap<String, String>,
    },
}

impl Reason {
    /// A short machine name, for JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::NeverRotated => "never_rotated",
            Reason::UnknownLiveKey { .. } => "unknown_live_key",
            Reason::Due { .. } => "due",
            Reason::Interrupted { .. } => "interrupted",
            Reason::ChangedOutside { .. } => "drift",
            Reason::NotInConfig => "not_in_config",
            Reason::NotListed => "not_listed",
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
            Reason::UnknownLiveKey { since } => format!(
                "Cloudflare has held a PSK since {} that psk does not hold: apply replaces it and \
                 the router needs the new key; `psk import NAME` adopts the current one instead",
                since.format("%Y-%m-%d")
            ),
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
                "no longer in psk.yaml; the tunnel on Cloudflare is never touched".to_string()
            }
            Reason::NotListed => "Cloudflare no longer lists the tunnel, so its key is live \
                 nowhere: the record and its sealed PSK leave the state"
                .to_string(),
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
            Reason::RecipientsChanged {
                added,
                removed,
                names,
            } => {
                // By name where psk.yaml gives one; a key gone from
                // psk.yaml is known only by its fingerprint.
                let named = |fps: &[String], gone: &str| -> String {
                    let shown: Vec<String> = (fps.iter())
                        .map(|f| match names.get(f) {
                            Some(n) => n.clone(),
                            None => format!("{f}{gone}"),
                        })
                        .collect();
                    shown.join(", ")
                };
                let mut parts = Vec::new();
                if !added.is_empty() {
                    parts.push(format!("added {}", named(added, "")));
                }
                if !removed.is_empty() {
                    let removed = named(removed, " (no longer in psk.yaml)");
                    parts.push(format!("removed {removed}"));
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

impl Action {
    /// Whether this action replaces a PSK Cloudflare holds and psk does not.
    pub fn replaces_unknown_key(&self) -> bool {
        (self.reasons.iter()).any(|r| matches!(r, Reason::UnknownLiveKey { .. }))
    }

    /// Whether the next plan proposes this action again by itself: true
    /// unless `--replace` is its only reason, which lives only on the
    /// command line (or saved plan) that asked for it.
    pub fn proposed_again(&self) -> bool {
        self.reasons.iter().any(|r| !matches!(r, Reason::Forced))
    }

    /// An action as the planner makes it: no policy, dates or dry run yet.
    /// Callers fill in what they know with struct update syntax; the dry
    /// run is the CLI's, online, after planning.
    pub fn new(name: &str, key: TunnelKey, kind: ActionKind, reasons: Vec<Reason>) -> Action {
        Action {
            name: name.to_string(),
            key,
            kind,
            reasons,
            policy: None,
            last_rotated: None,
            next_due: None,
            dry_run: DryRun::NotRun,
        }
    }
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
    /// With `verify`: the health now of every path of each site the plan
    /// would change (or holds back), and of every path not shown back up
    /// after its last new PSK; psk.yaml order.
    #[serde(default)]
    pub health: Vec<PathStatus>,
    /// Tunnels Cloudflare lists for psk.yaml's accounts that psk.yaml
    /// neither lists nor ignores (empty offline); see [`super::unmanaged`].
    #[serde(default)]
    pub unmanaged: Vec<UnmanagedTunnel>,
    /// How many more psk.yaml's `ignore:` left out.
    #[serde(default)]
    pub ignored: usize,
}

/// A tunnel psk.yaml does not list and does not ignore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmanagedTunnel {
    /// Its name at Cloudflare.
    pub name: String,
    pub key: TunnelKey,
    /// The entry that adds it to psk.yaml (a YAML flow mapping, one
    /// line), under a name valid and unused there.
    pub add: String,
}

impl UnmanagedTunnel {
    /// Its line for psk.yaml, with its Cloudflare name in a comment when
    /// psk.yaml could not take it as it is.
    pub fn line(&self) -> String {
        let plain = crate::config::write::scalar(&self.name);
        if self.add.starts_with(&format!("- {{ name: {plain}, ")) {
            self.add.clone()
        } else {
            format!(
                "{}  # {} at Cloudflare",
                self.add,
                crate::config::write::quoted(&self.name)
            )
        }
    }
}

/// One path's health as the plan saw it, for `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathStatus {
    pub name: String,
    pub key: TunnelKey,
    pub site: String,
    /// `healthy`, `degraded`, `down`, `no_data`, `unknown`, or `not_read`
    /// (offline, or a policy that verifies by its probe only).
    pub code: String,
    /// The health in words, e.g. `down in AMS, FRA`.
    pub health: String,
    /// The path got a new PSK and was not shown back up: down since.
    pub unverified_since: Option<DateTime<Utc>>,
    /// ... and psk gave up waiting then (`None`: stopped while waiting).
    pub gave_up: Option<DateTime<Utc>>,
}

impl PathStatus {
    /// `tunnel-00 (site fra): down in AMS, FRA; did not come back ...`.
    pub fn describe(&self) -> String {
        let mut line = format!("{} (site \"{}\"): {}", self.name, self.site, self.health);
        if let Some(since) = &self.unverified_since {
            let how = match &self.gave_up {
                Some(at) => format!(
                    "did not come back after its new PSK of {} (psk gave up at {})",
                    crate::state::format_time(since),
                    crate::state::format_time(at)
                ),
                None => format!(
                    "not shown back up after its new PSK of {} (psk was stopped while waiting)",
                    crate::state::format_time(since)
                ),
            };
            line.push_str(&format!(
                "; {how}; `psk verify {}` checks it and clears the record",
                self.name
            ));
        }
        line
    }
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
    /// Gone from psk.yaml, but Cloudflare still lists the tunnel: its key
    /// may still be live, so the record and its sealed PSK stay.
    StillListed,
    /// Gone from psk.yaml, and Cloudflare was not asked whether it still
    /// lists the tunnel (offline), or could not be: its account is no longer
    /// in psk.yaml and this token cannot list it.
    NotAsked,
    /// `verify`'s preflight: another path of the site is not healthy now,
    /// so rotating this one could cut the site off.
    SiblingDown {
        site: String,
        sibling: String,
        /// The sibling's health in words, e.g. `down in AMS, FRA`.
        health: String,
    },
    /// Another path of the site got a new PSK and was not shown back up
    /// (its `verify` failed, or psk stopped while waiting): until it is
    /// healthy again or the operator clears it (`psk verify`), rotating this
    /// path could cut the site off.
    Unhealthy {
        site: String,
        sibling: String,
        /// When the sibling's new key reached the edge (down since).
        since: DateTime<Utc>,
        /// When psk gave up waiting; `None`: it was stopped while waiting.
        failed: Option<DateTime<Utc>>,
        /// The sibling's health now in words, when it was read.
        health: Option<String>,
    },
    /// Another path of the site got a new PSK its router may not hold:
    /// the policy's `deliver` command failed for it (at `at`). Until a
    /// delivery succeeds, rotating this path could cut the site off.
    Undelivered {
        site: String,
        sibling: String,
        at: DateTime<Utc>,
        error: Option<String>,
    },
    /// Another path of the site has a rotation whose outcome is unknown
    /// (an interrupted call, or with `pending` a key psk made that
    /// Cloudflare never confirmed): the key on its edge may be one no
    /// router holds.
    Uncertain {
        site: String,
        sibling: String,
        /// When the rotation started (or the pending key was made).
        since: DateTime<Utc>,
        pending: bool,
    },
}

impl Deferral {
    /// A short machine name, for JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Deferral::Window { .. } => "window",
            Deferral::Site { .. } => "site",
            Deferral::StillListed => "still_listed",
            Deferral::NotAsked => "not_asked",
            Deferral::SiblingDown { .. } => "sibling_down",
            Deferral::Unhealthy { .. } => "unhealthy",
            Deferral::Undelivered { .. } => "undelivered",
            Deferral::Uncertain { .. } => "uncertain",
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
            Deferral::StillListed => "kept: Cloudflare still lists the tunnel, so its key may still be live; \
                 the record and its sealed PSK stay in the state (`psk show NAME` opens it) until \
                 the tunnel is deleted on Cloudflare"
                .to_string(),
            Deferral::NotAsked => "kept: psk forgets a record only once Cloudflare no longer lists \
                 its tunnel, and Cloudflare could not be asked (offline, or its account is no longer \
                 in psk.yaml and this token cannot list it); the record and its sealed PSK stay in \
                 the state until a token that can list the account shows the tunnel gone (or \
                 `psk forget NAME` drops it now, if you know the tunnel is gone)"
                .to_string(),
            Deferral::SiblingDown {
                site,
                sibling,
                health,
            } => format!(
                "held by verify's preflight: {sibling} is {health}; rotating this path now would cut site \"{site}\" off (psk waits until every other path of the site is healthy)"
            ),
            Deferral::Unhealthy {
                site,
                sibling,
                since,
                failed,
                health,
            } => {
                let what = match failed {
                    Some(at) => format!(
                        "{sibling} did not come back after its new PSK (down since {}, psk gave up at {})",
                        crate::state::format_time(since),
                        crate::state::format_time(at)
                    ),
                    None => format!(
                        "psk was stopped while waiting for {sibling} to come back after its new PSK (down since {})",
                        crate::state::format_time(since)
                    ),
                };
                let now = health
                    .as_deref()
                    .map(|h| format!("; it is {h} now"))
                    .unwrap_or_default();
                format!(
                    "held: {what}{now}; rotating this path too could cut site \"{site}\" off. Once {sibling} is up, `psk verify {sibling}` checks it and lifts the hold; `psk apply --replace {sibling}` rotates it again"
                )
            }
            Deferral::Undelivered {
                site,
                sibling,
                at,
                error,
            } => format!(
                "held: {}; rotating this path too could cut site \"{site}\" off. {}",
                undelivered_words(sibling, at, error.as_deref()),
                undelivered_lift(sibling)
            ),
            Deferral::Uncertain {
                site,
                sibling,
                since,
                pending,
            } => format!(
                "held: {}; rotating this path too could cut site \"{site}\" off. {}",
                uncertain_words(sibling, since, *pending),
                uncertain_lift(sibling)
            ),
        }
    }
}

/// Why `sibling` may be down, in words, for a hold's sentence.
fn uncertain_words(sibling: &str, since: &DateTime<Utc>, pending: bool) -> String {
    match pending {
        true => format!(
            "a PSK psk made for {sibling} at {} was never confirmed by Cloudflare, so the key on its edge is unknown",
            crate::state::format_time(since)
        ),
        false => format!(
            "a rotation of {sibling} started {} never recorded its answer, so the key on its edge is unknown",
            crate::state::format_time(since)
        ),
    }
}

/// What lifts a hold put by `sibling`, in words.
fn uncertain_lift(sibling: &str) -> String {
    format!(
        "psk rotates {sibling} again (its own change is never held; `psk apply --target {sibling}` does only that), and once it is settled the hold lifts"
    )
}

/// Why `sibling` may be down after a failed delivery, in words.
fn undelivered_words(sibling: &str, at: &DateTime<Utc>, error: Option<&str>) -> String {
    format!(
        "the new PSK of {sibling} did not reach its router (delivery failed {}{}), so {sibling} may be down",
        crate::state::format_time(at),
        error.map(|e| format!(": {e}")).unwrap_or_default()
    )
}

/// What lifts a hold put by a failed delivery of `sibling`, in words.
fn undelivered_lift(sibling: &str) -> String {
    format!(
        "`psk deliver {sibling}` succeeding lifts the hold; `psk apply --replace {sibling}` rotates it again"
    )
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
    /// A plan with nothing in it yet, for the options it is made under.
    pub fn empty(now: DateTime<Utc>, offline: bool, options: &PlanOptions) -> Plan {
        Plan {
            now,
            offline,
            targeted: options.target.is_some(),
            actions: Vec::new(),
            unchanged: Vec::new(),
            deferred: Vec::new(),
            upcoming: Vec::new(),
            horizon: options.horizon,
            health: Vec::new(),
            unmanaged: Vec::new(),
            ignored: 0,
        }
    }

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
    /// Whether `--target` (if given) names this tunnel.
    pub(super) fn includes(&self, name: &str) -> bool {
        self.target.as_ref().is_none_or(|t| t.contains(name))
    }
}
