//! The saved plan's file format, as serde structs of its own.
//!
//! A saved plan outlives the psk that wrote it (it waits in a CI artifact
//! or a pull request for review), so its format is a promise like the JSON
//! plan's: these structs mirror the file, field for field and in the
//! order written, and the planner's types convert to and from them. The
//! planner can then change its types without changing what a plan file
//! says. Any change here is a new format version (see
//! [`super::PLAN_FORMAT_VERSION`]).
//!
//! One set of structs reads every version: version 2 only added the
//! dry-run status `no_verdict`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::Span;
use crate::reconcile as model;
use crate::tunnel::TunnelKey;

// Each struct keeps the name it had when the planner's types were the
// format, so serde's messages about a damaged file read as before.
#[derive(Serialize, Deserialize)]
#[serde(rename = "PlanFile", deny_unknown_fields)]
pub(super) struct File {
    pub format: String,
    pub format_version: u64,
    pub psk_version: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub config_digest: String,
    pub state_lineage: Option<String>,
    pub state_serial: Option<u64>,
    pub state_diff: String,
    pub plan: Plan,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Plan {
    now: DateTime<Utc>,
    offline: bool,
    #[serde(default)]
    targeted: bool,
    actions: Vec<Action>,
    unchanged: Vec<Unchanged>,
    /// These last four are absent from older files of format 1: none.
    #[serde(default)]
    deferred: Vec<Deferred>,
    #[serde(default)]
    upcoming: Vec<Upcoming>,
    #[serde(default)]
    horizon: Option<Span>,
    /// Since format 4; absent when no path's health was shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    health: Vec<PathStatus>,
    /// Since format 6; absent when the refresh found none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unmanaged: Vec<Unmanaged>,
    /// Since format 6; absent when `ignore:` left none out.
    #[serde(default, skip_serializing_if = "is_zero")]
    ignored: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unmanaged {
    name: String,
    key: Key,
    add: String,
}

impl From<&model::unmanaged::UnmanagedTunnel> for Unmanaged {
    fn from(u: &model::unmanaged::UnmanagedTunnel) -> Self {
        Unmanaged {
            name: u.name.clone(),
            key: Key::from(&u.key),
            add: u.add.clone(),
        }
    }
}

impl From<Unmanaged> for model::unmanaged::UnmanagedTunnel {
    fn from(u: Unmanaged) -> Self {
        model::unmanaged::UnmanagedTunnel {
            name: u.name,
            key: u.key.into(),
            add: u.add,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathStatus {
    name: String,
    key: Key,
    site: String,
    code: String,
    health: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unverified_since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gave_up: Option<DateTime<Utc>>,
}

impl From<&model::PathStatus> for PathStatus {
    fn from(p: &model::PathStatus) -> Self {
        PathStatus {
            name: p.name.clone(),
            key: Key::from(&p.key),
            site: p.site.clone(),
            code: p.code.clone(),
            health: p.health.clone(),
            unverified_since: p.unverified_since,
            gave_up: p.gave_up,
        }
    }
}

impl From<PathStatus> for model::PathStatus {
    fn from(p: PathStatus) -> Self {
        model::PathStatus {
            name: p.name,
            key: p.key.into(),
            site: p.site,
            code: p.code,
            health: p.health,
            unverified_since: p.unverified_since,
            gave_up: p.gave_up,
        }
    }
}

/// A tunnel, as every entry names it.
#[derive(Serialize, Deserialize)]
#[serde(rename = "TunnelKey")]
struct Key {
    account_id: String,
    tunnel_id: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Action {
    name: String,
    key: Key,
    kind: ActionKind,
    reasons: Vec<Reason>,
    policy: Option<String>,
    last_rotated: Option<DateTime<Utc>>,
    next_due: Option<DateTime<Utc>>,
    dry_run: DryRun,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ActionKind {
    Generate,
    Rotate,
    Forget,
    Reseal,
    Redeliver,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case", deny_unknown_fields)]
enum Reason {
    NeverRotated,
    UnknownLiveKey {
        since: DateTime<Utc>,
    },
    Due {
        last_rotated: DateTime<Utc>,
        days_ago: i64,
        policy: String,
        every: Span,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spread: Option<Span>,
    },
    Interrupted {
        started: DateTime<Utc>,
    },
    #[serde(rename = "drift")]
    ChangedOutside {
        on: DateTime<Utc>,
    },
    NotInConfig,
    NotListed,
    Forced,
    Pending {
        generated: DateTime<Utc>,
        remote_changed: Option<DateTime<Utc>>,
    },
    DeliveryFailed {
        at: DateTime<Utc>,
        error: Option<String>,
    },
    RecipientsChanged {
        added: Vec<String>,
        removed: Vec<String>,
        /// What people call the fingerprints; older plans have none.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        names: BTreeMap<String, String>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "status", content = "message", rename_all = "snake_case")]
enum DryRun {
    NotRun,
    Accepted,
    Refused(String),
    /// Since format 2.
    NoVerdict(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unchanged {
    name: String,
    key: Key,
    next_due: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Deferred {
    name: String,
    key: Key,
    kind: ActionKind,
    reasons: Vec<Reason>,
    policy: String,
    why: Deferral,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case", deny_unknown_fields)]
enum Deferral {
    Window {
        opens: DateTime<Utc>,
        opens_local: String,
        window: String,
    },
    Site {
        site: String,
        rotating: String,
    },
    StillListed,
    NotAsked,
    SiblingDown {
        site: String,
        sibling: String,
        health: String,
    },
    Unhealthy {
        site: String,
        sibling: String,
        since: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<DateTime<Utc>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health: Option<String>,
    },
    Undelivered {
        site: String,
        sibling: String,
        at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Uncertain {
        site: String,
        sibling: String,
        since: DateTime<Utc>,
        pending: bool,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Upcoming {
    name: String,
    key: Key,
    policy: String,
    due: DateTime<Utc>,
    starts: DateTime<Utc>,
}

// From the planner's types to the file's, for writing.

impl From<&model::Plan> for Plan {
    fn from(p: &model::Plan) -> Self {
        Plan {
            now: p.now,
            offline: p.offline,
            targeted: p.targeted,
            actions: p.actions.iter().map(Action::from).collect(),
            unchanged: p.unchanged.iter().map(Unchanged::from).collect(),
            deferred: p.deferred.iter().map(Deferred::from).collect(),
            upcoming: p.upcoming.iter().map(Upcoming::from).collect(),
            horizon: p.horizon,
            health: p.health.iter().map(PathStatus::from).collect(),
            unmanaged: p.unmanaged.iter().map(Unmanaged::from).collect(),
            ignored: p.ignored,
        }
    }
}

impl From<&TunnelKey> for Key {
    fn from(k: &TunnelKey) -> Self {
        Key {
            account_id: k.account_id.clone(),
            tunnel_id: k.tunnel_id.clone(),
        }
    }
}

impl From<&model::Action> for Action {
    fn from(a: &model::Action) -> Self {
        Action {
            name: a.name.clone(),
            key: Key::from(&a.key),
            kind: a.kind.into(),
            reasons: a.reasons.iter().map(Reason::from).collect(),
            policy: a.policy.clone(),
            last_rotated: a.last_rotated,
            next_due: a.next_due,
            dry_run: DryRun::from(&a.dry_run),
        }
    }
}

impl From<model::ActionKind> for ActionKind {
    fn from(k: model::ActionKind) -> Self {
        match k {
            model::ActionKind::Generate => ActionKind::Generate,
            model::ActionKind::Rotate => ActionKind::Rotate,
            model::ActionKind::Forget => ActionKind::Forget,
            model::ActionKind::Reseal => ActionKind::Reseal,
            model::ActionKind::Redeliver => ActionKind::Redeliver,
        }
    }
}

impl From<&model::Reason> for Reason {
    fn from(r: &model::Reason) -> Self {
        use model::Reason as M;
        match r.clone() {
            M::NeverRotated => Reason::NeverRotated,
            M::UnknownLiveKey { since } => Reason::UnknownLiveKey { since },
            M::Due {
                last_rotated,
                days_ago,
                policy,
                every,
                spread,
            } => Reason::Due {
                last_rotated,
                days_ago,
                policy,
                every,
                spread,
            },
            M::Interrupted { started } => Reason::Interrupted { started },
            M::ChangedOutside { on } => Reason::ChangedOutside { on },
            M::NotInConfig => Reason::NotInConfig,
            M::NotListed => Reason::NotListed,
            M::Forced => Reason::Forced,
            M::Pending {
                generated,
                remote_changed,
            } => Reason::Pending {
                generated,
                remote_changed,
            },
            M::DeliveryFailed { at, error } => Reason::DeliveryFailed { at, error },
            M::RecipientsChanged {
                added,
                removed,
                names,
            } => Reason::RecipientsChanged {
                added,
                removed,
                names,
            },
        }
    }
}

impl From<&model::DryRun> for DryRun {
    fn from(d: &model::DryRun) -> Self {
        match d.clone() {
            model::DryRun::NotRun => DryRun::NotRun,
            model::DryRun::Accepted => DryRun::Accepted,
            model::DryRun::Refused(m) => DryRun::Refused(m),
            model::DryRun::NoVerdict(m) => DryRun::NoVerdict(m),
        }
    }
}

impl From<&model::Unchanged> for Unchanged {
    fn from(u: &model::Unchanged) -> Self {
        Unchanged {
            name: u.name.clone(),
            key: Key::from(&u.key),
            next_due: u.next_due,
        }
    }
}

impl From<&model::Deferred> for Deferred {
    fn from(d: &model::Deferred) -> Self {
        let why = match d.why.clone() {
            model::Deferral::Window {
                opens,
                opens_local,
                window,
            } => Deferral::Window {
                opens,
                opens_local,
                window,
            },
            model::Deferral::Site { site, rotating } => Deferral::Site { site, rotating },
            model::Deferral::StillListed => Deferral::StillListed,
            model::Deferral::NotAsked => Deferral::NotAsked,
            model::Deferral::SiblingDown {
                site,
                sibling,
                health,
            } => Deferral::SiblingDown {
                site,
                sibling,
                health,
            },
            model::Deferral::Unhealthy {
                site,
                sibling,
                since,
                failed,
                health,
            } => Deferral::Unhealthy {
                site,
                sibling,
                since,
                failed,
                health,
            },
            model::Deferral::Undelivered {
                site,
                sibling,
                at,
                error,
            } => Deferral::Undelivered {
                site,
                sibling,
                at,
                error,
            },
            model::Deferral::Uncertain {
                site,
                sibling,
                since,
                pending,
            } => Deferral::Uncertain {
                site,
                sibling,
                since,
                pending,
            },
        };
        Deferred {
            name: d.name.clone(),
            key: Key::from(&d.key),
            kind: d.kind.into(),
            reasons: d.reasons.iter().map(Reason::from).collect(),
            policy: d.policy.clone(),
            why,
        }
    }
}

impl From<&model::Upcoming> for Upcoming {
    fn from(u: &model::Upcoming) -> Self {
        Upcoming {
            name: u.name.clone(),
            key: Key::from(&u.key),
            policy: u.policy.clone(),
            due: u.due,
            starts: u.starts,
        }
    }
}

// From the file's types to the planner's, for reading.

impl From<Plan> for model::Plan {
    fn from(p: Plan) -> Self {
        model::Plan {
            now: p.now,
            offline: p.offline,
            targeted: p.targeted,
            actions: p.actions.into_iter().map(Into::into).collect(),
            unchanged: p.unchanged.into_iter().map(Into::into).collect(),
            deferred: p.deferred.into_iter().map(Into::into).collect(),
            upcoming: p.upcoming.into_iter().map(Into::into).collect(),
            horizon: p.horizon,
            health: p.health.into_iter().map(Into::into).collect(),
            unmanaged: p.unmanaged.into_iter().map(Into::into).collect(),
            ignored: p.ignored,
        }
    }
}

impl From<Key> for TunnelKey {
    fn from(k: Key) -> Self {
        TunnelKey {
            account_id: k.account_id,
            tunnel_id: k.tunnel_id,
        }
    }
}

impl From<Action> for model::Action {
    fn from(a: Action) -> Self {
        model::Action {
            name: a.name,
            key: a.key.into(),
            kind: a.kind.into(),
            reasons: a.reasons.into_iter().map(Into::into).collect(),
            policy: a.policy,
            last_rotated: a.last_rotated,
            next_due: a.next_due,
            dry_run: a.dry_run.into(),
        }
    }
}

impl From<ActionKind> for model::ActionKind {
    fn from(k: ActionKind) -> Self {
        match k {
            ActionKind::Generate => model::ActionKind::Generate,
            ActionKind::Rotate => model::ActionKind::Rotate,
            ActionKind::Forget => model::ActionKind::Forget,
            ActionKind::Reseal => model::ActionKind::Reseal,
            ActionKind::Redeliver => model::ActionKind::Redeliver,
        }
    }
}

impl From<Reason> for model::Reason {
    fn from(r: Reason) -> Self {
        use model::Reason as M;
        match r {
            Reason::NeverRotated => M::NeverRotated,
            Reason::UnknownLiveKey { since } => M::UnknownLiveKey { since },
            Reason::Due {
                last_rotated,
                days_ago,
                policy,
                every,
                spread,
            } => M::Due {
                last_rotated,
                days_ago,
                policy,
                every,
                spread,
            },
            Reason::Interrupted { started } => M::Interrupted { started },
            Reason::ChangedOutside { on } => M::ChangedOutside { on },
            Reason::NotInConfig => M::NotInConfig,
            Reason::NotListed => M::NotListed,
            Reason::Forced => M::Forced,
            Reason::Pending {
                generated,
                remote_changed,
            } => M::Pending {
                generated,
                remote_changed,
            },
            Reason::DeliveryFailed { at, error } => M::DeliveryFailed { at, error },
            Reason::RecipientsChanged {
                added,
                removed,
                names,
            } => M::RecipientsChanged {
                added,
                removed,
                names,
            },
        }
    }
}

impl From<DryRun> for model::DryRun {
    fn from(d: DryRun) -> Self {
        match d {
            DryRun::NotRun => model::DryRun::NotRun,
            DryRun::Accepted => model::DryRun::Accepted,
            DryRun::Refused(m) => model::DryRun::Refused(m),
            DryRun::NoVerdict(m) => model::DryRun::NoVerdict(m),
        }
    }
}

impl From<Unchanged> for model::Unchanged {
    fn from(u: Unchanged) -> Self {
        model::Unchanged {
            name: u.name,
            key: u.key.into(),
            next_due: u.next_due,
        }
    }
}

impl From<Deferred> for model::Deferred {
    fn from(d: Deferred) -> Self {
        let why = match d.why {
            Deferral::Window {
                opens,
                opens_local,
                window,
            } => model::Deferral::Window {
                opens,
                opens_local,
                window,
            },
            Deferral::Site { site, rotating } => model::Deferral::Site { site, rotating },
            Deferral::StillListed => model::Deferral::StillListed,
            Deferral::NotAsked => model::Deferral::NotAsked,
            Deferral::SiblingDown {
                site,
                sibling,
                health,
            } => model::Deferral::SiblingDown {
                site,
                sibling,
                health,
            },
            Deferral::Unhealthy {
                site,
                sibling,
                since,
                failed,
                health,
            } => model::Deferral::Unhealthy {
                site,
                sibling,
                since,
                failed,
                health,
            },
            Deferral::Undelivered {
                site,
                sibling,
                at,
                error,
            } => model::Deferral::Undelivered {
                site,
                sibling,
                at,
                error,
            },
            Deferral::Uncertain {
                site,
                sibling,
                since,
                pending,
            } => model::Deferral::Uncertain {
                site,
                sibling,
                since,
                pending,
            },
        };
        model::Deferred {
            name: d.name,
            key: d.key.into(),
            kind: d.kind.into(),
            reasons: d.reasons.into_iter().map(Into::into).collect(),
            policy: d.policy,
            why,
        }
    }
}

impl From<Upcoming> for model::Upcoming {
    fn from(u: Upcoming) -> Self {
        model::Upcoming {
            name: u.name,
            key: u.key.into(),
            policy: u.policy,
            due: u.due,
            starts: u.starts,
        }
    }
}
