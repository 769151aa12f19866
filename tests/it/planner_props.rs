//! Properties of the planner over random fleets: psk.yaml (policies with
//! spread, windows and site_parallel; tunnels with and without sites),
//! state (sealed, interrupted, pending and forgotten records), what
//! Cloudflare reports (drift) and --replace/--target.
//!
//! `PROPTEST_CASES` raises the number of cases (256 by default).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use psk::config::Config;
use psk::reconcile::{reconcile_with, ActionKind, PlanOptions, Reason, Remote};
use psk::state::{Intent, Pending, State};
use psk::tunnel::TunnelKey;

const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

fn id(i: usize) -> String {
    format!("{:032x}", 0xfeed_0000_u64 + i as u64)
}

#[derive(Debug, Clone)]
struct PolicySpec {
    every_days: u32,
    spread_days: Option<u32>,
    site_parallel: bool,
    window: Option<(u32, u32)>,
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
    /// Plan at the very instant the first tunnel falls due: the boundary.
    now_at_first_due: bool,
}

fn policy() -> impl Strategy<Value = PolicySpec> {
    (
        1u32..120,
        prop::option::of(1u32..30),
        any::<bool>(),
        prop::option::weighted(0.3, (0u32..24, 1u32..24)),
    )
        .prop_map(|(every_days, spread, site_parallel, window)| PolicySpec {
            every_days,
            // Spread must be shorter than rotate_every.
            spread_days: spread.filter(|s| *s < every_days),
            site_parallel,
            window,
        })
}

fn tunnel(n_policies: usize) -> impl Strategy<Value = TunnelSpec> {
    (
        0..n_policies,
        prop::option::of(0u8..4),
        prop::option::weighted(0.8, 0u32..400),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.15, 1u32..1000),
        prop::bool::weighted(0.1),
        any::<bool>(),
    )
        .prop_map(
            |(
                policy,
                site,
                sealed_days_ago,
                interrupted,
                pending,
                drift_hours,
                replace,
                targeted,
            )| {
                TunnelSpec {
                    policy,
                    site,
                    sealed_days_ago,
                    interrupted,
                    pending,
                    drift_hours,
                    replace,
                    targeted,
                }
            },
        )
}

fn fleet() -> impl Strategy<Value = Fleet> {
    prop::collection::vec(policy(), 1..4).prop_flat_map(|policies| {
        let n = policies.len();
        (
            Just(policies),
            prop::collection::vec(tunnel(n), 0..14),
            0usize..3,
            any::<bool>(),
            prop::bool::weighted(0.2),
            0u32..(60 * 24 * 7),
            prop::bool::weighted(0.3),
        )
            .prop_map(
                |(policies, tunnels, gone, online, use_target, now_offset_minutes, at_due)| Fleet {
                    policies,
                    tunnels,
                    gone,
                    online,
                    use_target,
                    now_offset_minutes,
                    now_at_first_due: at_due,
                },
            )
    })
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
        if let Some((start, len)) = p.window {
            // Closing at midnight is written 24:00; a window may cross it.
            let end = (start + len) % 24;
            let end = if end == 0 { 24 } else { end };
            s.push_str(&format!(
                "    window: {{start: \"{start:02}:00\", end: \"{end:02}:00\"}}\n"
            ));
        }
    }
    s.push_str("tunnels:\n");
    if f.tunnels.is_empty() {
        s = s.replace("tunnels:\n", "tunnels: []\n");
    }
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

struct World {
    config: Config,
    state: State,
    remote: Option<Remote>,
    now: DateTime<Utc>,
    options: PlanOptions,
}

fn world(f: &Fleet) -> World {
    let config = Config::parse(Path::new("psk.yaml"), &config_text(f))
        .unwrap_or_else(|e| panic!("generated psk.yaml is invalid: {e}\n{}", config_text(f)));
    let base: DateTime<Utc> = "2026-11-26T00:00:00Z".parse().unwrap();
    let sealed_at =
        |i: usize, days: u32| base - TimeDelta::days(days as i64) - TimeDelta::seconds(i as i64);
    let mut now = base + TimeDelta::minutes(f.now_offset_minutes as i64);
    if let (true, Some(first)) = (f.now_at_first_due, config.tunnels.first()) {
        if let Some(days) = f.tunnels[0].sealed_days_ago {
            now = config
                .policy_of(first)
                .due_for(&first.key(), sealed_at(0, days));
        }
    }
    let mut state = State::new(config.recipient_fingerprints());
    state.lineage = "fixed".into();
    let mut remote = Remote::default();
    for (i, t) in f.tunnels.iter().enumerate() {
        let key = TunnelKey::new(ACCOUNT, &id(i));
        let mut last = None;
        if t.sealed_days_ago.is_some() || t.interrupted || t.pending {
            let rec = state.entry(&key, &format!("t{i}"));
            if let Some(d) = t.sealed_days_ago {
                let at = sealed_at(i, d);
                rec.psk = Some(format!("sealed-{i}"));
                rec.last_rotated = Some(at);
                last = Some(at);
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
                    sealed_to: None,
                });
            }
        }
        let on = match (last, t.drift_hours) {
            (Some(l), Some(h)) => Some(l + TimeDelta::hours(h as i64)),
            (l, _) => l,
        };
        remote.tunnels.insert(
            key,
            psk::cloudflare::RemoteTunnel {
                id: id(i),
                name: format!("t{i}"),
                last_generated_on: on,
            },
        );
    }
    for g in 0..f.gone {
        let key = TunnelKey::new(ACCOUNT, &id(1000 + g));
        let rec = state.entry(&key, &format!("gone{g}"));
        rec.psk = Some("sealed".into());
        rec.last_rotated = Some(now - TimeDelta::days(3));
    }
    let replace: BTreeSet<String> = f
        .tunnels
        .iter()
        .enumerate()
        .filter(|(_, t)| t.replace)
        .map(|(i, _)| format!("t{i}"))
        .collect();
    let target = f.use_target.then(|| {
        f.tunnels
            .iter()
            .enumerate()
            .filter(|(_, t)| t.targeted)
            .map(|(i, _)| format!("t{i}"))
            .collect::<BTreeSet<String>>()
    });
    World {
        config,
        state,
        remote: f.online.then_some(remote),
        now,
        options: PlanOptions {
            replace,
            target,
            ..PlanOptions::default()
        },
    }
}

fn plan(w: &World) -> psk::reconcile::Plan {
    reconcile_with(
        &w.config,
        Some(&w.state),
        w.remote.as_ref(),
        w.now,
        &w.options,
    )
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
    /// only), and only such a tunnel is.
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
            prop_assert!(listed.contains(&d.key), "defers outside psk.yaml: {:?}", d);
        }
        // Every forgotten record is forgotten once, untargeted.
        if w.options.target.is_none() {
            let forgets = p.actions.iter().filter(|a| a.kind == ActionKind::Forget).count();
            prop_assert_eq!(forgets, f.gone);
        }
    }

    /// A sealed, dated PSK is due exactly when its policy says: it carries
    /// the `due` reason (acted on or deferred) iff its due time has come.
    #[test]
    fn due_exactly_when_the_policy_says(f in fleet()) {
        let w = world(&f);
        let p = plan(&w);
        let mut reasons: HashMap<&TunnelKey, &Vec<Reason>> = HashMap::new();
        for a in &p.actions {
            if a.kind.changes_psk() {
                reasons.insert(&a.key, &a.reasons);
            }
        }
        for d in &p.deferred {
            reasons.insert(&d.key, &d.reasons);
        }
        let unchanged: BTreeSet<&TunnelKey> = p.unchanged.iter().map(|u| &u.key).collect();
        for t in &w.config.tunnels {
            if !w.options.target.as_ref().is_none_or(|s| s.contains(&t.name)) {
                continue;
            }
            let key = t.key();
            let rec = w.state.get(&key);
            let Some(last) = rec.filter(|r| r.psk.is_some()).and_then(|r| r.last_rotated) else {
                continue;
            };
            if rec.is_some_and(|r| r.pending.is_some()) {
                continue;
            }
            let due = w.config.policy_of(t).due_for(&key, last) <= w.now;
            let has_due = reasons
                .get(&key)
                .is_some_and(|rs| rs.iter().any(|r| matches!(r, Reason::Due { .. })));
            prop_assert_eq!(due, has_due, "{} last rotated {}, now {}", t.name, last, w.now);
            if due {
                prop_assert!(!unchanged.contains(&key));
            }
            let quiet = rec.is_some_and(|r| r.intent.is_none())
                && !w.options.replace.contains(&t.name)
                && reasons.get(&key).is_none_or(|rs| rs.is_empty());
            if !due && quiet {
                prop_assert!(unchanged.contains(&key), "{} is neither due nor unchanged", t.name);
            }
        }
    }

    /// Tunnels of one site never change their PSKs in the same plan,
    /// unless every policy involved sets `site_parallel`.
    #[test]
    fn one_change_per_site_unless_allowed(f in fleet()) {
        let w = world(&f);
        let p = plan(&w);
        let by_name: BTreeMap<&str, &psk::config::Tunnel> =
            w.config.tunnels.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut per_site: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for a in p.actions.iter().filter(|a| a.kind.changes_psk()) {
            if let Some(site) = by_name[a.name.as_str()].site.as_deref() {
                per_site.entry(site).or_default().push(&a.name);
            }
        }
        for (site, names) in per_site {
            if names.len() > 1 {
                let all_parallel = names
                    .iter()
                    .all(|n| w.config.policy_of(by_name[n]).site_parallel);
                prop_assert!(all_parallel, "site {} changes {:?} at once", site, names);
            }
        }
        // Nothing is lost by holding back: every tunnel held for its site
        // is in `deferred`, not silently dropped.
        for t in &w.config.tunnels {
            if !w.options.target.as_ref().is_none_or(|s| s.contains(&t.name)) {
                continue;
            }
            let key = t.key();
            let seen = p.actions.iter().any(|a| a.key == key)
                || p.deferred.iter().any(|d| d.key == key)
                || p.unchanged.iter().any(|u| u.key == key);
            prop_assert!(seen, "{} is in no part of the plan", t.name);
        }
    }
}
