//! Properties of the planner over random fleets: psk.yaml (policies with
//! spread, windows in UTC and in a fixed-offset zone, site_parallel,
//! `deliver` and `generator: local`; tunnels with and without sites),
//! state (sealed, interrupted, pending and forgotten records; failed and
//! good deliveries; keys sealed to the state's recipients, to psk.yaml's or
//! to old ones), what Cloudflare reports (drift) and
//! --replace/--target.
//!
//! The expectations come from an oracle written from the README's rules
//! (period, spread slot, window, reasons, reseal and redelivery), not from
//! psk's policy code, so a bug there shows as a disagreement.
//!
//! `PROPTEST_CASES` raises the number of cases (256 by default).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Datelike, NaiveDateTime, TimeDelta, Utc};
use proptest::prelude::*;
use psk::config::Config;
use psk::reconcile::{
    reconcile_with, Action, ActionKind, Deferral, Deferred, Plan, PlanOptions, Reason, Remote,
};
use psk::state::{Delivery, Intent, Pending, State};
use psk::tunnel::TunnelKey;
use sha2::{Digest, Sha256};

const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
/// A recipient psk.yaml no longer lists.
const OLD: &str = "sha256:00000000000000000000000000000000";
const DAY: i64 = 86_400;

fn id(i: usize) -> String {
    format!("{:032x}", 0xfeed_0000_u64 + i as u64)
}

fn key(i: usize) -> TunnelKey {
    TunnelKey::new(ACCOUNT, &id(i))
}

#[derive(Debug, Clone)]
struct WindowSpec {
    /// Opening hour, local.
    start: u32,
    /// Hours open, 1..24; crosses midnight when start + hours > 24.
    hours: u32,
    /// The days it opens, bit 0 = Monday.
    days: u8,
    /// The zone's offset from UTC in hours (a zone without DST).
    east: i64,
}

#[derive(Debug, Clone)]
struct PolicySpec {
    every_days: u32,
    spread_days: Option<u32>,
    site_parallel: bool,
    window: Option<WindowSpec>,
    deliver: bool,
    local: bool,
}

/// Whom a key in the state is sealed to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SealedTo {
    /// The state's header list (the record names none).
    Header,
    /// psk.yaml's recipients, named on the record.
    Current,
    /// A recipient psk.yaml dropped, named on the record.
    Old,
}

#[derive(Debug, Clone)]
struct TunnelSpec {
    policy: usize,
    site: Option<u8>,
    /// Days before now the sealed PSK was made, if psk holds one.
    sealed_days_ago: Option<u32>,
    interrupted: bool,
    pending: bool,
    /// Cloudflare reports a change this many hours after the sealed one.
    drift_hours: Option<u32>,
    replace: bool,
    targeted: bool,
    /// How the last delivery of the sealed PSK went, if one ran.
    delivered: Option<bool>,
    sealed_to: SealedTo,
    pending_sealed_to: SealedTo,
}

#[derive(Debug, Clone, Copy)]
enum Boundary {
    FirstDue,
    WindowOpens,
    WindowCloses,
}

#[derive(Debug, Clone)]
struct Fleet {
    policies: Vec<PolicySpec>,
    tunnels: Vec<TunnelSpec>,
    /// Records in the state for tunnels psk.yaml no longer lists.
    gone: usize,
    online: bool,
    use_target: bool,
    now_offset_minutes: u32,
    /// Plan at a boundary instead: when the first tunnel falls due, or
    /// when the first window opens or closes.
    now_at: Option<Boundary>,
    /// The state's header still names the old recipients.
    header_old: bool,
}

fn window() -> impl Strategy<Value = WindowSpec> {
    (
        0u32..24,
        1u32..24,
        1u8..128,
        prop::sample::select(vec![0i64, 3, -5]),
    )
        .prop_map(|(start, hours, days, east)| WindowSpec {
            start,
            hours,
            days,
            east,
        })
}

fn policy() -> impl Strategy<Value = PolicySpec> {
    (
        1u32..120,
        prop::option::of(1u32..30),
        any::<bool>(),
        prop::option::weighted(0.3, window()),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(every_days, spread, site_parallel, window, deliver, local)| PolicySpec {
                every_days,
                // Spread must be shorter than rotate_every.
                spread_days: spread.filter(|s| *s < every_days),
                site_parallel,
                window,
                deliver,
                local,
            },
        )
}

fn sealed_to() -> impl Strategy<Value = SealedTo> {
    prop::sample::select(vec![SealedTo::Header, SealedTo::Current, SealedTo::Old])
}

prop_compose! {
    fn tunnel(n_policies: usize)(
        policy in 0..n_policies,
        site in prop::option::of(0u8..4),
        sealed_days_ago in prop::option::weighted(0.8, 0u32..400),
        interrupted in prop::bool::weighted(0.1),
        pending in prop::bool::weighted(0.1),
        drift_hours in prop::option::weighted(0.15, 1u32..1000),
        replace in prop::bool::weighted(0.1),
        targeted in any::<bool>(),
        delivered in prop::option::weighted(0.3, prop::bool::weighted(0.4)),
        sealed_to in sealed_to(),
        pending_sealed_to in sealed_to(),
    ) -> TunnelSpec {
        TunnelSpec {
            policy,
            site,
            sealed_days_ago,
            interrupted,
            pending,
            drift_hours,
            replace,
            targeted,
            delivered,
            sealed_to,
            pending_sealed_to,
        }
    }
}

prop_compose! {
    fn fleet_of(policies: Vec<PolicySpec>)(
        tunnels in prop::collection::vec(tunnel(policies.len()), 0..14),
        gone in 0usize..3,
        online in any::<bool>(),
        use_target in prop::bool::weighted(0.2),
        now_offset_minutes in 0u32..(60 * 24 * 7),
        now_at in prop::option::weighted(
            0.4,
            prop::sample::select(vec![
                Boundary::FirstDue,
                Boundary::WindowOpens,
                Boundary::WindowCloses,
            ]),
        ),
        header_old in prop::bool::weighted(0.3),
    ) -> Fleet {
        Fleet {
            policies: policies.clone(),
            tunnels,
            gone,
            online,
            use_target,
            now_offset_minutes,
            now_at,
            header_old,
        }
    }
}

fn fleet() -> impl Strategy<Value = Fleet> {
    prop::collection::vec(policy(), 1..4).prop_flat_map(fleet_of)
}

fn window_text(w: &WindowSpec) -> String {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let days: Vec<&str> = (0..7)
        .filter(|d| w.days & (1 << d) != 0)
        .map(|d| NAMES[d])
        .collect();
    // Closing at midnight is written 24:00; a window may cross it.
    let end = (w.start + w.hours) % 24;
    let end = if end == 0 { 24 } else { end };
    // Etc/GMT-3 is three hours east of UTC; no zone means UTC.
    let zone = match w.east {
        0 => String::new(),
        e if e > 0 => format!(", timezone: Etc/GMT-{e}"),
        e => format!(", timezone: Etc/GMT+{}", -e),
    };
    format!(
        "{{days: [{}], start: \"{:02}:00\", end: \"{end:02}:00\"{zone}}}",
        days.join(", "),
        w.start
    )
}

fn config_text(f: &Fleet) -> String {
    let mut s =
        format!("version: 1\naccount_id: {ACCOUNT}\nrecipients: [{RECIPIENT}]\npolicies:\n");
    for (i, p) in f.policies.iter().enumerate() {
        s.push_str(&format!("  p{i}:\n    rotate_every: {}d\n", p.every_days));
        if let Some(d) = p.spread_days {
            s.push_str(&format!("    spread: {d}d\n"));
        }
        if p.site_parallel {
            s.push_str("    site_parallel: true\n");
        }
        if let Some(w) = &p.window {
            s.push_str(&format!("    window: {}\n", window_text(w)));
        }
        if p.deliver {
            s.push_str("    deliver: [\"/usr/local/bin/push-psk\", \"--router\", \"edge\"]\n");
        }
        if p.local {
            s.push_str("    generator: local\n");
        }
    }
    if f.tunnels.is_empty() {
        s.push_str("tunnels: []\n");
        return s;
    }
    s.push_str("tunnels:\n");
    for (i, t) in f.tunnels.iter().enumerate() {
        s.push_str(&format!(
            "  - name: t{i}\n    id: {}\n    policy: p{}\n",
            id(i),
            t.policy
        ));
        if let Some(site) = t.site {
            s.push_str(&format!("    site: s{site}\n"));
        }
    }
    s
}

// ---------------------------------------------------------------------
// The oracle: the README's rules, computed without psk's policy code.

/// The tunnel's offset inside each spread period: the first 8 bytes of
/// SHA-256("psk-spread-v1\0<account>/<tunnel id>"), big-endian, modulo the
/// spread in seconds.
fn spread_offset(key: &TunnelKey, spread_seconds: i64) -> i64 {
    let text = format!("psk-spread-v1\0{}/{}", key.account_id, key.tunnel_id);
    let digest = Sha256::digest(text.as_bytes());
    let first = u64::from_be_bytes(digest[..8].try_into().unwrap());
    (first % spread_seconds as u64) as i64
}

/// When a PSK sealed at `last` falls due: `rotate_every` after it, moved
/// with spread to the tunnel's last slot at or before then. Slots are at
/// `offset + k * spread` seconds after the Unix epoch.
fn oracle_due(p: &PolicySpec, key: &TunnelKey, last: DateTime<Utc>) -> DateTime<Utc> {
    let deadline = last.timestamp() + p.every_days as i64 * DAY;
    let due = match p.spread_days {
        None => deadline,
        Some(days) => {
            let spread = days as i64 * DAY;
            let offset = spread_offset(key, spread);
            let k = (deadline - offset).div_euclid(spread);
            offset + k * spread
        }
    };
    DateTime::from_timestamp(due, 0).unwrap()
}

fn local(w: &WindowSpec, t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc() + TimeDelta::hours(w.east)
}

fn opens_on(w: &WindowSpec, day: chrono::NaiveDate) -> bool {
    w.days & (1 << day.weekday().num_days_from_monday()) != 0
}

/// Whether the window is open at `t`: it opened on today's or yesterday's
/// local date (one of its days) and has not closed yet.
fn oracle_open(w: &WindowSpec, t: DateTime<Utc>) -> bool {
    let now = local(w, t);
    (0..=1).any(|back| {
        let day = now.date() - TimeDelta::days(back);
        let open = day.and_hms_opt(w.start, 0, 0).unwrap();
        opens_on(w, day) && open <= now && now < open + TimeDelta::hours(w.hours as i64)
    })
}

/// The first instant at or after `t` when the window is open.
fn oracle_next_open(w: &WindowSpec, t: DateTime<Utc>) -> DateTime<Utc> {
    if oracle_open(w, t) {
        t
    } else {
        next_opening(w, t)
    }
}

/// The first instant after `t` at which the window opens.
fn next_opening(w: &WindowSpec, t: DateTime<Utc>) -> DateTime<Utc> {
    let now = local(w, t);
    (0..=8)
        .map(|ahead| now.date() + TimeDelta::days(ahead))
        .filter(|day| opens_on(w, *day))
        .map(|day| day.and_hms_opt(w.start, 0, 0).unwrap())
        .find(|open| *open > now)
        .map(|open| (open - TimeDelta::hours(w.east)).and_utc())
        .unwrap()
}

/// What the README says the planner must decide for one listed tunnel.
#[derive(Debug)]
struct Expected {
    /// Reason codes, in the order the plan gives them; empty: unchanged.
    codes: Vec<&'static str>,
    kind: ActionKind,
    last_rotated: Option<DateTime<Utc>>,
    next_due: Option<DateTime<Utc>>,
    /// When the window opens, if the change must wait for it.
    waits_until: Option<DateTime<Utc>>,
}

impl Expected {
    /// Interrupted and pending first, then --replace, then drift, then the
    /// rest: the order in which a site's changes take their turn.
    fn rank(&self) -> u8 {
        let has = |c| self.codes.contains(&c);
        if has("interrupted") || has("pending") {
            0
        } else if has("forced") {
            1
        } else if has("drift") {
            2
        } else {
            3
        }
    }
}

fn expected(w: &World, f: &Fleet, i: usize) -> Expected {
    let t = &f.tunnels[i];
    let p = &f.policies[t.policy];
    let last = t.sealed_days_ago.map(|d| sealed_at(i, d));
    let next_due = last.map(|l| oracle_due(p, &key(i), l));
    let mut codes = Vec::new();
    if t.interrupted {
        codes.push("interrupted");
    }
    if t.pending {
        codes.push("pending");
    } else if let Some(due) = next_due {
        if f.online && t.drift_hours.is_some() && !t.interrupted {
            codes.push("drift");
        }
        if due <= w.now {
            codes.push("due");
        }
    } else {
        codes.push("never_rotated");
    }
    if t.replace {
        codes.push("forced");
    }
    let may_wait = !codes
        .iter()
        .any(|c| matches!(*c, "interrupted" | "pending" | "forced"));
    let waits_until = p
        .window
        .as_ref()
        .filter(|win| may_wait && !codes.is_empty() && !oracle_open(win, w.now))
        .map(|win| oracle_next_open(win, w.now));
    Expected {
        codes,
        kind: if last.is_some() {
            ActionKind::Rotate
        } else {
            ActionKind::Generate
        },
        last_rotated: last,
        next_due,
        waits_until,
    }
}

/// The recipients a key sealed `to` is sealed to.
fn recipients(f: &Fleet, current: &[String], to: SealedTo) -> Vec<String> {
    match to {
        SealedTo::Header if !f.header_old => current.to_vec(),
        SealedTo::Current => current.to_vec(),
        SealedTo::Header | SealedTo::Old => vec![OLD.to_string()],
    }
}

/// The recipient list of the tunnel's first key (sealed, then pending)
/// that is not psk.yaml's: what a reseal would change.
fn expected_stale(f: &Fleet, current: &[String], i: usize) -> Option<Vec<String>> {
    let t = &f.tunnels[i];
    let sealed = t.sealed_days_ago.map(|_| t.sealed_to);
    let pending = t.pending.then_some(t.pending_sealed_to);
    sealed
        .into_iter()
        .chain(pending)
        .map(|to| recipients(f, current, to))
        .find(|list| list != current)
}

// ---------------------------------------------------------------------
// The world a fleet describes.

struct World {
    config: Config,
    state: State,
    remote: Option<Remote>,
    now: DateTime<Utc>,
    options: PlanOptions,
}

fn base() -> DateTime<Utc> {
    "2026-11-26T00:00:00Z".parse().unwrap()
}

fn sealed_at(i: usize, days_ago: u32) -> DateTime<Utc> {
    base() - TimeDelta::days(days_ago as i64) - TimeDelta::seconds(i as i64)
}

/// The instant to plan at: a random one in the week after `base`, or a
/// boundary where an off-by-one would show.
fn now(f: &Fleet) -> DateTime<Utc> {
    let t = base() + TimeDelta::minutes(f.now_offset_minutes as i64);
    let first_due = f.tunnels.first().and_then(|first| {
        let last = sealed_at(0, first.sealed_days_ago?);
        Some(oracle_due(&f.policies[first.policy], &key(0), last))
    });
    let window = f.policies.iter().find_map(|p| p.window.as_ref());
    let open = window.map(|w| next_opening(w, t));
    let edge = match f.now_at {
        None => None,
        Some(Boundary::FirstDue) => first_due,
        Some(Boundary::WindowOpens) => open,
        Some(Boundary::WindowCloses) => open
            .zip(window)
            .map(|(o, w)| o + TimeDelta::hours(w.hours as i64)),
    };
    edge.unwrap_or(t)
}

fn world(f: &Fleet) -> World {
    let config = Config::parse(Path::new("psk.yaml"), &config_text(f))
        .unwrap_or_else(|e| panic!("generated psk.yaml is invalid: {e}\n{}", config_text(f)));
    let now = now(f);
    let current = config.recipient_fingerprints();
    let header = if f.header_old {
        vec![OLD.to_string()]
    } else {
        current.clone()
    };
    let named = |to: SealedTo| match to {
        SealedTo::Header => None,
        _ => Some(recipients(f, &current, to)),
    };
    let mut state = State::new(header);
    state.lineage = "fixed".into();
    let mut remote = Remote::default();
    for (i, t) in f.tunnels.iter().enumerate() {
        let last = t.sealed_days_ago.map(|d| sealed_at(i, d));
        if last.is_some() || t.interrupted || t.pending {
            let rec = state.entry(&key(i), &format!("t{i}"));
            if let Some(at) = last {
                rec.psk = Some(format!("sealed-{i}"));
                rec.last_rotated = Some(at);
                rec.sealed_to = named(t.sealed_to);
                rec.delivery = t.delivered.map(|ok| Delivery {
                    at: at + TimeDelta::minutes(1),
                    error: (!ok).then(|| "exit status 1".to_string()),
                    ok,
                });
            }
            if t.interrupted {
                rec.intent = Some(Intent {
                    operation: "psk_generate".into(),
                    started: now - TimeDelta::hours(1),
                });
            }
            if t.pending {
                rec.pending = Some(Pending {
                    generated: now - TimeDelta::hours(2),
                    psk: format!("pending-{i}"),
                    sealed_to: named(t.pending_sealed_to),
                });
            }
        }
        let on = match (last, t.drift_hours) {
            (Some(l), Some(h)) => Some(l + TimeDelta::hours(h as i64)),
            (l, _) => l,
        };
        remote.tunnels.insert(
            key(i),
            psk::cloudflare::RemoteTunnel {
                id: id(i),
                name: format!("t{i}"),
                last_generated_on: on,
                customer_endpoint: None,
            },
        );
    }
    for g in 0..f.gone {
        let rec = state.entry(&key(1000 + g), &format!("gone{g}"));
        rec.psk = Some("sealed".into());
        rec.last_rotated = Some(now - TimeDelta::days(3));
    }
    let names = |pick: fn(&TunnelSpec) -> bool| {
        (f.tunnels.iter().enumerate())
            .filter(|(_, t)| pick(t))
            .map(|(i, _)| format!("t{i}"))
            .collect::<BTreeSet<String>>()
    };
    World {
        config,
        state,
        remote: f.online.then_some(remote),
        now,
        options: PlanOptions {
            replace: names(|t| t.replace),
            target: f.use_target.then(|| names(|t| t.targeted)),
            ..PlanOptions::default()
        },
    }
}

fn plan(w: &World) -> Plan {
    reconcile_with(
        &w.config,
        Some(&w.state),
        w.remote.as_ref(),
        w.now,
        &w.options,
    )
}

/// The listed tunnels the plan covers (all, or those --target names).
fn planned(w: &World, f: &Fleet) -> Vec<usize> {
    (0..f.tunnels.len())
        .filter(|i| (w.options.target.as_ref()).is_none_or(|s| s.contains(&format!("t{i}"))))
        .collect()
}

/// Each tunnel's PSK change, acted on or deferred.
fn changes(p: &Plan) -> HashMap<&TunnelKey, (Option<&Action>, Option<&Deferred>)> {
    let mut out: HashMap<&TunnelKey, (Option<&Action>, Option<&Deferred>)> = HashMap::new();
    for a in p.actions.iter().filter(|a| a.kind.changes_psk()) {
        out.entry(&a.key).or_default().0 = Some(a);
    }
    for d in &p.deferred {
        out.entry(&d.key).or_default().1 = Some(d);
    }
    out
}

fn codes(reasons: &[Reason]) -> Vec<&'static str> {
    reasons.iter().map(Reason::code).collect()
}

fn parallel(f: &Fleet, i: usize) -> bool {
    let p = &f.policies[f.tunnels[i].policy];
    p.site_parallel || p.deliver
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Same inputs, same plan, same bytes.
    #[test]
    fn deterministic(f in fleet()) {
        let w = world(&f);
        let a = plan(&w);
        let b = plan(&world(&f));
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(serde_json::to_vec(&a).unwrap(), serde_json::to_vec(&b).unwrap());
    }

    /// A tunnel psk.yaml does not list is only ever forgotten (state
    /// only) or kept, and only such a tunnel is.
    #[test]
    fn nothing_outside_psk_yaml_but_forget(f in fleet()) {
        let w = world(&f);
        let p = plan(&w);
        let listed: BTreeSet<TunnelKey> = w.config.tunnels.iter().map(|t| t.key()).collect();
        for a in &p.actions {
            if a.kind == ActionKind::Forget {
                prop_assert!(!listed.contains(&a.key), "forgets a listed tunnel: {:?}", a);
                prop_assert!(w.state.get(&a.key).is_some());
            } else {
                prop_assert!(listed.contains(&a.key), "acts outside psk.yaml: {:?}", a);
            }
        }
        for d in &p.deferred {
            if d.kind == ActionKind::Forget {
                prop_assert!(!listed.contains(&d.key), "keeps a listed tunnel: {:?}", d);
            } else {
                prop_assert!(listed.contains(&d.key), "defers outside psk.yaml: {:?}", d);
            }
        }
        // Every record gone from psk.yaml (and from Cloudflare's list) is
        // forgotten once, untargeted; offline (or with no tunnel of its
        // account left to list), Cloudflare was not asked whether its key
        // is still live, so each is kept instead.
        if w.options.target.is_none() {
            let forgets = p.actions.iter().filter(|a| a.kind == ActionKind::Forget).count();
            let kept: Vec<&Deferral> = (p.deferred.iter())
                .filter(|d| d.kind == ActionKind::Forget)
                .map(|d| &d.why)
                .collect();
            if w.remote.is_some() && !w.config.tunnels.is_empty() {
                prop_assert_eq!(forgets, f.gone);
                prop_assert!(kept.is_empty());
            } else {
                prop_assert_eq!(forgets, 0);
                prop_assert_eq!(kept.len(), f.gone);
                prop_assert!(kept.iter().all(|w| **w == Deferral::NotAsked));
            }
        }
    }

    /// A sealed, dated PSK is due exactly when the oracle says: it carries
    /// the `due` reason (acted on or deferred) iff its due time has come,
    /// and the plan gives the oracle's due date wherever it shows one.
    #[test]
    fn due_exactly_when_the_policy_says(f in fleet()) {
        let w = world(&f);
        let p = plan(&w);
        let changes = changes(&p);
        let unchanged: HashMap<&TunnelKey, DateTime<Utc>> =
            p.unchanged.iter().map(|u| (&u.key, u.next_due)).collect();
        for i in planned(&w, &f) {
            let t = &f.tunnels[i];
            let (Some(days), false) = (t.sealed_days_ago, t.pending) else {
                continue;
            };
            let last = sealed_at(i, days);
            let due = oracle_due(&f.policies[t.policy], &key(i), last);
            let reasons = match changes.get(&key(i)) {
                Some((Some(a), _)) => {
                    prop_assert_eq!(a.next_due, Some(due), "t{}", i);
                    codes(&a.reasons)
                }
                Some((None, Some(d))) => codes(&d.reasons),
                _ => Vec::new(),
            };
            prop_assert_eq!(
                due <= w.now,
                reasons.contains(&"due"),
                "t{} last rotated {}, due {}, now {}", i, last, due, w.now
            );
            if let Some(next) = unchanged.get(&key(i)) {
                prop_assert_eq!(*next, due, "t{}", i);
            }
        }
    }

    /// Every listed tunnel gets the reasons, kind and dates the README's
    /// rules give it; a change waits for a shut window (until the instant
    /// the oracle says it opens) unless it is interrupted, pending or
    /// forced; and the forecast starts where the window lets it.
    #[test]
    fn reasons_and_windows_as_documented(f in fleet()) {
        let w = world(&f);
        let p = plan(&w);
        let changes = changes(&p);
        let horizon_end = w.now + TimeDelta::days(psk::reconcile::DEFAULT_HORIZON_DAYS);
        for i in planned(&w, &f) {
            let e = expected(&w, &f, i);
            let k = key(i);
            let upcoming = p.upcoming.iter().find(|u| u.key == k);
            if e.codes.is_empty() {
                let u = p.unchanged.iter().find(|u| u.key == k);
                prop_assert!(u.is_some(), "t{} should be unchanged: {:?}", i, e);
                prop_assert!(!changes.contains_key(&k), "t{} changes: {:?}", i, e);
                let due = e.next_due.unwrap();
                prop_assert_eq!(upcoming.is_some(), due <= horizon_end, "t{}", i);
                if let Some(u) = upcoming {
                    let window = f.policies[f.tunnels[i].policy].window.as_ref();
                    let starts = window.map_or(due, |win| oracle_next_open(win, due));
                    prop_assert_eq!((u.due, u.starts), (due, starts), "t{}", i);
                }
                continue;
            }
            prop_assert!(upcoming.is_none(), "t{} changes, yet is upcoming", i);
            let (action, deferred) = changes.get(&k).copied().unwrap_or_default();
            let (kind, reasons) = match (action, deferred) {
                (Some(a), None) => {
                    prop_assert_eq!(a.last_rotated, e.last_rotated, "t{}", i);
                    prop_assert_eq!(a.next_due, e.next_due, "t{}", i);
                    (a.kind, &a.reasons)
                }
                (None, Some(d)) => (d.kind, &d.reasons),
                other => {
                    let why = format!("t{i}: {other:?} for {e:?}");
                    return Err(TestCaseError::fail(why));
                }
            };
            prop_assert_eq!(kind, e.kind, "t{}", i);
            prop_assert_eq!(codes(reasons), e.codes.clone(), "t{}", i);
            let window_opens = deferred.and_then(|d| match d.why {
                Deferral::Window { opens, .. } => Some(opens),
                // Offline plans: no health, no preflight.
                Deferral::Site { .. }
                | Deferral::SiblingDown { .. }
                | Deferral::Unhealthy { .. }
                | Deferral::Undelivered { .. }
                | Deferral::Uncertain { .. }
                | Deferral::StillListed
                | Deferral::NotAsked => None,
            });
            prop_assert_eq!(window_opens, e.waits_until, "t{} now {}", i, w.now);
        }
    }

    /// Tunnels of one site never change their PSKs in the same plan,
    /// unless every policy involved sets `site_parallel` or `deliver`
    /// (apply then changes them one after another). The most urgent change
    /// of a site goes first, what waits names it, and nothing waits for
    /// its site when every change there may go together.
    #[test]
    fn one_change_per_site_unless_allowed(f in fleet()) {
        let w = world(&f);
        let p = plan(&w);
        let index = |k: &TunnelKey| (0..f.tunnels.len()).find(|i| key(*i) == *k).unwrap();
        let site = |i: usize| f.tunnels[i].site;
        let mut going: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for a in p.actions.iter().filter(|a| a.kind.changes_psk()) {
            let i = index(&a.key);
            if let Some(s) = site(i) {
                going.entry(s).or_default().push(i);
            }
        }
        let mut waiting: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for d in &p.deferred {
            let Deferral::Site { site: s, rotating } = &d.why else {
                continue;
            };
            let i = index(&d.key);
            prop_assert_eq!(Some(s.clone()), site(i).map(|s| format!("s{s}")));
            let first = (0..f.tunnels.len()).find(|j| format!("t{j}") == *rotating);
            let first = first.filter(|j| going.get(&site(i).unwrap()).is_some_and(|g| g.contains(j)));
            prop_assert!(first.is_some(), "t{} waits for {}, which does not go", i, rotating);
            let rank = |j: usize| expected(&w, &f, j).rank();
            prop_assert!(rank(first.unwrap()) <= rank(i), "t{} is more urgent than {}", i, rotating);
            waiting.entry(site(i).unwrap()).or_default().push(i);
        }
        for (s, names) in &going {
            if names.len() > 1 {
                prop_assert!(
                    names.iter().all(|i| parallel(&f, *i)),
                    "site s{} changes {:?} at once", s, names
                );
            }
        }
        for (s, held) in &waiting {
            let all = going[s].iter().chain(held);
            prop_assert!(
                !all.clone().all(|i| parallel(&f, *i)),
                "site s{} holds back {:?} though all may go together", s, held
            );
        }
        // Nothing is lost by holding back: every tunnel is in one part of
        // the plan.
        for i in planned(&w, &f) {
            let k = key(i);
            let seen = p.actions.iter().any(|a| a.key == k)
                || p.deferred.iter().any(|d| d.key == k)
                || p.unchanged.iter().any(|u| u.key == k);
            prop_assert!(seen, "t{} is in no part of the plan", i);
        }
    }

    /// A reseal comes exactly for a tunnel whose sealed or pending key is
    /// sealed to other recipients than psk.yaml's, naming what changed; a
    /// redelivery exactly for a sealed key whose delivery failed, under a
    /// policy that delivers, when no new key is coming in this plan.
    #[test]
    fn reseals_and_redeliveries_as_the_state_says(f in fleet()) {
        let w = world(&f);
        let p = plan(&w);
        let current = w.config.recipient_fingerprints();
        let changing: HashSet<&TunnelKey> = (p.actions.iter())
            .filter(|a| a.kind.changes_psk())
            .map(|a| &a.key)
            .collect();
        let of_kind = |kind: ActionKind, k: &TunnelKey| {
            p.actions.iter().filter(|a| a.kind == kind && a.key == *k).collect::<Vec<_>>()
        };
        for i in planned(&w, &f) {
            let k = key(i);
            let t = &f.tunnels[i];
            let reseal = of_kind(ActionKind::Reseal, &k);
            match expected_stale(&f, &current, i) {
                None => prop_assert!(reseal.is_empty(), "t{} resealed: {:?}", i, reseal),
                Some(stale) => {
                    prop_assert_eq!(reseal.len(), 1, "t{} sealed to {:?}", i, stale);
                    let added: Vec<String> =
                        current.iter().filter(|r| !stale.contains(r)).cloned().collect();
                    let removed: Vec<String> =
                        stale.iter().filter(|r| !current.contains(r)).cloned().collect();
                    let Reason::RecipientsChanged {
                        added: a,
                        removed: r,
                        ..
                    } = &reseal[0].reasons[0]
                    else {
                        panic!("t{} reseal reasons: {:?}", i, reseal[0].reasons);
                    };
                    prop_assert_eq!(reseal[0].reasons.len(), 1);
                    prop_assert_eq!((a, r), (&added, &removed));
                }
            }
            let failed = t.sealed_days_ago.is_some() && t.delivered == Some(false);
            let wanted = f.policies[t.policy].deliver && failed && !changing.contains(&k);
            let redeliver = of_kind(ActionKind::Redeliver, &k);
            prop_assert_eq!(redeliver.len(), usize::from(wanted), "t{}: {:?}", i, redeliver);
        }
        for a in p.actions.iter().filter(|a| !a.kind.changes_psk()) {
            prop_assert!(
                a.kind != ActionKind::Redeliver || !changing.contains(&a.key),
                "{} is redelivered and changes", a.name
            );
        }
    }

    /// `generator` says how apply makes a key, never whether or when.
    #[test]
    fn the_generator_does_not_change_the_plan(f in fleet()) {
        let mut flipped = f.clone();
        for p in &mut flipped.policies {
            p.local = !p.local;
        }
        prop_assert_eq!(plan(&world(&f)), plan(&world(&flipped)));
    }
}

/// What happened to one path's new key in a simulated apply.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Recorded, delivered and (with `verify`) shown back up.
    Fine,
    /// Recorded, but the `deliver` command failed.
    Undelivered,
    /// Recorded (and delivered), but it did not come back.
    Unverified,
    /// The answer was lost: the intent stays.
    Lost,
    /// A local key was sent and never confirmed: it stays pending.
    Pending,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        4 => Just(Fate::Fine),
        1 => Just(Fate::Undelivered),
        1 => Just(Fate::Unverified),
        1 => Just(Fate::Lost),
        1 => Just(Fate::Pending),
    ]
}

/// A fleet of sites of two or three paths under one of four policies
/// (`deliver`, `verify`, both, or neither with `site_parallel`), all due.
fn down_fleet(sites: usize, paths: usize, policy: usize) -> Config {
    let policies = [
        "{rotate_every: 30d, deliver: [\"true\"]}",
        "{rotate_every: 30d, verify: {command: [\"true\"]}}",
        "{rotate_every: 30d, deliver: [\"true\"], verify: {}}",
        "{rotate_every: 30d, site_parallel: true}",
    ];
    let mut text = format!(
        "version: 1\naccount_id: {ACCOUNT}\nrecipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]\npolicies:\n  default: {}\ntunnels:\n",
        policies[policy]
    );
    for s in 0..sites {
        for p in 0..paths {
            text.push_str(&format!(
                "  - {{name: s{s}p{p}, id: {:032x}, site: site{s}}}\n",
                0xd00d_0000_u64 + (s * 8 + p) as u64
            ));
        }
    }
    Config::parse(Path::new("psk.yaml"), &text).unwrap()
}

/// Every path of `site` that may be down by the state.
fn down_in(config: &Config, state: &State, site: &str) -> Vec<String> {
    (config.tunnels.iter())
        .filter(|t| t.site.as_deref() == Some(site))
        .filter(|t| psk::reconcile::may_be_down(config, t, Some(state), None).is_some())
        .map(|t| t.name.clone())
        .collect()
}

/// Applies a plan to the state as the executor would, site by site in
/// plan order, with each rotated path meeting its `fates` in turn: a path
/// that ends possibly down stops its site for the rest of the apply (the
/// executor's site gate). Returns the keys changed, by site, in order.
fn simulate(
    config: &Config,
    plan: &psk::reconcile::Plan,
    state: &mut State,
    fates: &mut impl Iterator<Item = Fate>,
    now: DateTime<Utc>,
) -> BTreeMap<String, Vec<String>> {
    let mut stopped: BTreeSet<String> = BTreeSet::new();
    let mut changed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in plan.actions.iter().filter(|a| a.kind.changes_psk()) {
        let t = config.tunnels.iter().find(|t| t.key() == a.key).unwrap();
        let site = t.site.clone().unwrap();
        if stopped.contains(&site) {
            continue;
        }
        changed
            .entry(site.clone())
            .or_default()
            .push(t.name.clone());
        let policy = config.policy_of(t);
        let rec = state.entry(&a.key, &a.name);
        let fate = fates.next().unwrap_or(Fate::Fine);
        match fate {
            Fate::Lost => rec.begin_rotation("psk_generate", now),
            Fate::Pending => rec.stage_pending("sealed-new".into(), None, now),
            _ => {
                rec.record_key("sealed-new".into(), None, now);
                let undelivered = matches!(fate, Fate::Undelivered) && policy.deliver.is_some();
                if policy.deliver.is_some() {
                    let r = if undelivered {
                        Err("exit 3".into())
                    } else {
                        Ok(())
                    };
                    rec.record_delivery(r, now);
                }
                if policy.verify.is_some() && !undelivered {
                    rec.begin_verification(now);
                    let back = !matches!(fate, Fate::Unverified);
                    let r = if back { Ok(()) } else { Err("down".into()) };
                    rec.end_verification(r, now);
                }
            }
        }
        if psk::reconcile::may_be_down(config, t, Some(state), None).is_some() {
            stopped.insert(site);
        }
    }
    changed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Issue 25: across consecutive applies (the state carried over),
    /// with deliveries that fail, verifications that fail, answers lost and
    /// local keys never confirmed, under every kind of policy: no plan ever
    /// changes a key of a site while another path of that site may be
    /// down, so no site ever has two paths that may be down.
    #[test]
    fn no_site_ever_has_two_paths_that_may_be_down(
        sites in 1usize..4,
        paths in 2usize..4,
        policy in 0usize..4,
        fates in proptest::collection::vec(fate(), 0..40),
        applies in 2usize..6,
    ) {
        let config = down_fleet(sites, paths, policy);
        let mut state = State::new(config.recipient_fingerprints());
        let mut now: DateTime<Utc> = "2026-11-26T00:00:00Z".parse().unwrap();
        let mut fates = fates.into_iter();
        for n in 0..applies {
            let plan = psk::reconcile::reconcile(&config, Some(&state), None, now);
            for a in plan.actions.iter().filter(|a| a.kind.changes_psk()) {
                let t = config.tunnels.iter().find(|t| t.key() == a.key).unwrap();
                let site = t.site.as_deref().unwrap();
                let others: Vec<String> = down_in(&config, &state, site)
                    .into_iter()
                    .filter(|d| *d != t.name)
                    .collect();
                prop_assert!(
                    others.is_empty(),
                    "apply {}: {} changes while {:?} of its site may be down",
                    n, t.name, others
                );
            }
            simulate(&config, &plan, &mut state, &mut fates, now);
            for s in 0..sites {
                let down = down_in(&config, &state, &format!("site{s}"));
                prop_assert!(down.len() <= 1, "apply {}: site{} has {:?} down", n, s, down);
            }
            // The next apply runs 31 days later: every settled key is due.
            now += TimeDelta::days(31);
        }
    }
}
