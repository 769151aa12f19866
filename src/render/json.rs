//! The JSON plan's wire types: what `psk plan --format json` and the first
//! line of `apply --json` promise to scripts, kept apart from the planner's
//! [`Plan`] so the planner can change without changing them, and apart from
//! the printers. Versioned by [`JSON_FORMAT_VERSION`]; docs/formats.md "JSON plan
//! format" is their description.

use serde::Serialize;

use crate::reconcile::{Action, ActionKind, Deferral, Deferred, DryRun, Plan, Reason};
use crate::reconcile::{PathStatus, Unchanged, Upcoming};
use crate::state::format_time;
use crate::tunnel::TunnelKey;

/// The JSON plan format's version; only additive changes within a major.
/// 1.1 added `dry_run.status` `no_verdict` and `summary.no_verdict`; 1.2
/// the reason code `unknown_live_key`; 1.3 the deferral code `unhealthy`
/// and `health`, the paths' health with `verify`; 1.4 the deferral codes
/// `undelivered` (with `delivery_failed_at`) and `uncertain` (with
/// `uncertain_since`): a sibling that may be down holds its site; 1.5 `unmanaged`, the
/// tunnels psk.yaml leaves out, and `summary.unmanaged`, `summary.ignored`.
pub const JSON_FORMAT_VERSION: &str = "1.5";

#[derive(Serialize)]
pub(super) struct JsonPlan<'a> {
    format_version: &'static str,
    evaluated_at: String,
    offline: bool,
    targeted: bool,
    applyable: bool,
    actions: Vec<JsonAction<'a>>,
    unchanged: Vec<JsonUnchanged<'a>>,
    deferred: Vec<JsonDeferred<'a>>,
    forecast_horizon: Option<String>,
    upcoming: Vec<JsonUpcoming<'a>>,
    /// With `verify`: the health now of the paths of each site the plan
    /// changes, and of paths not shown back up (since 1.3).
    health: Vec<JsonPathHealth<'a>>,
    /// Tunnels Cloudflare lists for psk.yaml's accounts that psk.yaml
    /// neither lists nor ignores (since 1.5).
    unmanaged: Vec<JsonUnmanaged<'a>>,
    summary: JsonSummary,
}

#[derive(Serialize)]
struct JsonUnmanaged<'a> {
    #[serde(flatten)]
    tunnel: JsonTunnel<'a>,
    /// The entry that adds it under `tunnels:` in psk.yaml.
    add: &'a str,
}

#[derive(Serialize)]
struct JsonPathHealth<'a> {
    #[serde(flatten)]
    tunnel: JsonTunnel<'a>,
    site: &'a str,
    code: &'a str,
    health: &'a str,
    /// The path got a new PSK and was not shown back up: down since.
    unverified_since: Option<String>,
    /// When psk gave up waiting (absent: it was stopped while waiting).
    gave_up: Option<String>,
}

impl<'a> JsonPathHealth<'a> {
    fn new(p: &'a PathStatus) -> Self {
        JsonPathHealth {
            tunnel: JsonTunnel::new(&p.name, &p.key),
            site: &p.site,
            code: &p.code,
            health: &p.health,
            unverified_since: p.unverified_since.as_ref().map(format_time),
            gave_up: p.gave_up.as_ref().map(format_time),
        }
    }
}

impl<'a> JsonPlan<'a> {
    pub(super) fn new(plan: &'a Plan) -> Self {
        JsonPlan {
            format_version: JSON_FORMAT_VERSION,
            evaluated_at: format_time(&plan.now),
            offline: plan.offline,
            targeted: plan.targeted,
            applyable: !plan.has_refusals(),
            actions: plan.actions.iter().map(JsonAction::new).collect(),
            unchanged: plan.unchanged.iter().map(JsonUnchanged::new).collect(),
            deferred: plan.deferred.iter().map(JsonDeferred::new).collect(),
            forecast_horizon: plan.horizon.map(|h| h.to_string()),
            upcoming: plan.upcoming.iter().map(JsonUpcoming::new).collect(),
            health: plan.health.iter().map(JsonPathHealth::new).collect(),
            unmanaged: (plan.unmanaged.iter())
                .map(|u| JsonUnmanaged {
                    tunnel: JsonTunnel::new(&u.name, &u.key),
                    add: &u.add,
                })
                .collect(),
            summary: JsonSummary {
                counts: JsonCounts::new(plan),
                unchanged: plan.unchanged.len(),
                deferred: plan.deferred.len(),
                upcoming: plan.upcoming.len(),
                no_verdict: plan.no_verdicts(),
                unmanaged: plan.unmanaged.len(),
                ignored: plan.ignored,
            },
        }
    }
}

/// The first line of `apply --json`: the plan it is about to apply, in
/// counts.
#[derive(Serialize)]
pub(super) struct JsonApplyHeader {
    /// Always `plan`: tells this line from the progress events after it.
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    counts: JsonCounts,
    no_verdict: usize,
    applyable: bool,
}

impl JsonApplyHeader {
    pub(super) fn new(plan: &Plan) -> Self {
        JsonApplyHeader {
            kind: "plan",
            counts: JsonCounts::new(plan),
            no_verdict: plan.no_verdicts(),
            applyable: !plan.has_refusals(),
        }
    }
}

/// Actions per kind, every kind counted: the plan's `summary` and
/// `apply --json`'s first line share it, so neither can leave one out.
#[derive(Serialize)]
struct JsonCounts {
    rotate: usize,
    generate: usize,
    forget: usize,
    reseal: usize,
    redeliver: usize,
}

impl JsonCounts {
    fn new(plan: &Plan) -> Self {
        JsonCounts {
            rotate: plan.count(ActionKind::Rotate),
            generate: plan.count(ActionKind::Generate),
            forget: plan.count(ActionKind::Forget),
            reseal: plan.count(ActionKind::Reseal),
            redeliver: plan.count(ActionKind::Redeliver),
        }
    }
}

#[derive(Serialize)]
struct JsonSummary {
    #[serde(flatten)]
    counts: JsonCounts,
    unchanged: usize,
    deferred: usize,
    upcoming: usize,
    /// Dry runs that failed in passing (since 1.1).
    no_verdict: usize,
    /// Tunnels psk.yaml leaves out, and those of them `ignore:` names
    /// (since 1.5).
    unmanaged: usize,
    ignored: usize,
}

/// The fields that open every tunnel's entry, whichever list it is in.
#[derive(Serialize)]
struct JsonTunnel<'a> {
    name: &'a str,
    tunnel_id: &'a str,
    account_id: &'a str,
}

impl<'a> JsonTunnel<'a> {
    fn new(name: &'a str, key: &'a TunnelKey) -> Self {
        JsonTunnel {
            name,
            tunnel_id: &key.tunnel_id,
            account_id: &key.account_id,
        }
    }
}

#[derive(Serialize)]
struct JsonAction<'a> {
    #[serde(flatten)]
    tunnel: JsonTunnel<'a>,
    action: &'static str,
    reasons: Vec<JsonReason>,
    policy: Option<&'a str>,
    last_rotated: Option<String>,
    next_due: Option<String>,
    dry_run: JsonDryRun<'a>,
}

impl<'a> JsonAction<'a> {
    fn new(a: &'a Action) -> Self {
        JsonAction {
            tunnel: JsonTunnel::new(&a.name, &a.key),
            action: a.kind.as_str(),
            reasons: JsonReason::all(&a.reasons),
            policy: a.policy.as_deref(),
            last_rotated: a.last_rotated.as_ref().map(format_time),
            next_due: a.next_due.as_ref().map(format_time),
            dry_run: JsonDryRun::new(&a.dry_run),
        }
    }
}

#[derive(Serialize)]
struct JsonReason {
    code: &'static str,
    message: String,
}

impl JsonReason {
    /// Reasons as JSON, the same for actions and for deferred tunnels.
    fn all(reasons: &[Reason]) -> Vec<JsonReason> {
        reasons
            .iter()
            .map(|r| JsonReason {
                code: r.code(),
                message: r.describe(),
            })
            .collect()
    }
}

#[derive(Serialize)]
struct JsonDryRun<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

impl<'a> JsonDryRun<'a> {
    fn new(d: &'a DryRun) -> Self {
        let (status, message) = match d {
            DryRun::NotRun => ("not_run", None),
            DryRun::Accepted => ("accepted", None),
            DryRun::Refused(m) => ("refused", Some(m.as_str())),
            DryRun::NoVerdict(m) => ("no_verdict", Some(m.as_str())),
        };
        JsonDryRun { status, message }
    }
}

#[derive(Serialize)]
struct JsonUnchanged<'a> {
    #[serde(flatten)]
    tunnel: JsonTunnel<'a>,
    next_due: String,
}

impl<'a> JsonUnchanged<'a> {
    fn new(u: &'a Unchanged) -> Self {
        JsonUnchanged {
            tunnel: JsonTunnel::new(&u.name, &u.key),
            next_due: format_time(&u.next_due),
        }
    }
}

#[derive(Serialize)]
struct JsonDeferred<'a> {
    #[serde(flatten)]
    tunnel: JsonTunnel<'a>,
    action: &'static str,
    reasons: Vec<JsonReason>,
    policy: &'a str,
    deferred: JsonDeferral<'a>,
}

impl<'a> JsonDeferred<'a> {
    fn new(d: &'a Deferred) -> Self {
        JsonDeferred {
            tunnel: JsonTunnel::new(&d.name, &d.key),
            action: d.kind.as_str(),
            reasons: JsonReason::all(&d.reasons),
            policy: &d.policy,
            deferred: JsonDeferral::new(&d.why),
        }
    }
}

#[derive(Serialize)]
struct JsonDeferral<'a> {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    opens: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotating: Option<&'a str>,
    /// The path whose health holds this one (`sibling_down`).
    #[serde(skip_serializing_if = "Option::is_none")]
    sibling: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<&'a str>,
    /// `unhealthy`: when the sibling's new key reached the edge (since 1.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    down_since: Option<String>,
    /// `unhealthy`: when psk gave up waiting for it; absent if psk was
    /// stopped while waiting (since 1.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    gave_up: Option<String>,
    /// `undelivered`: when the sibling's delivery failed (since 1.4).
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_failed_at: Option<String>,
    /// `uncertain`: when the sibling's rotation of unknown outcome started
    /// (since 1.4).
    #[serde(skip_serializing_if = "Option::is_none")]
    uncertain_since: Option<String>,
}

impl<'a> JsonDeferral<'a> {
    fn new(why: &'a Deferral) -> Self {
        let (opens, site, rotating) = match why {
            Deferral::Window { opens, .. } => (Some(format_time(opens)), None, None),
            Deferral::Site { site, rotating } => {
                (None, Some(site.as_str()), Some(rotating.as_str()))
            }
            Deferral::StillListed | Deferral::NotAsked => (None, None, None),
            Deferral::SiblingDown { site, .. }
            | Deferral::Unhealthy { site, .. }
            | Deferral::Undelivered { site, .. }
            | Deferral::Uncertain { site, .. } => (None, Some(site.as_str()), None),
        };
        let (sibling, health) = match why {
            Deferral::SiblingDown {
                sibling, health, ..
            } => (Some(sibling.as_str()), Some(health.as_str())),
            Deferral::Unhealthy {
                sibling, health, ..
            } => (Some(sibling.as_str()), health.as_deref()),
            Deferral::Undelivered { sibling, .. } | Deferral::Uncertain { sibling, .. } => {
                (Some(sibling.as_str()), None)
            }
            _ => (None, None),
        };
        let (down_since, gave_up) = match why {
            Deferral::Unhealthy { since, failed, .. } => {
                (Some(format_time(since)), failed.as_ref().map(format_time))
            }
            _ => (None, None),
        };
        let delivery_failed_at = match why {
            Deferral::Undelivered { at, .. } => Some(format_time(at)),
            _ => None,
        };
        let uncertain_since = match why {
            Deferral::Uncertain { since, .. } => Some(format_time(since)),
            _ => None,
        };
        JsonDeferral {
            code: why.code(),
            message: why.describe(),
            opens,
            site,
            rotating,
            sibling,
            health,
            down_since,
            gave_up,
            delivery_failed_at,
            uncertain_since,
        }
    }
}

#[derive(Serialize)]
struct JsonUpcoming<'a> {
    #[serde(flatten)]
    tunnel: JsonTunnel<'a>,
    policy: &'a str,
    due: String,
    starts: String,
}

impl<'a> JsonUpcoming<'a> {
    fn new(u: &'a Upcoming) -> Self {
        JsonUpcoming {
            tunnel: JsonTunnel::new(&u.name, &u.key),
            policy: &u.policy,
            due: format_time(&u.due),
            starts: format_time(&u.starts),
        }
    }
}
