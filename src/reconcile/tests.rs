//! The planner's rules, one instant and one small fleet at a time.

use super::*;
use crate::cloudflare::RemoteTunnel;
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

/// No sealed PSK, but Cloudflare reports one: replacing it is said aloud,
/// with its own code, and `psk import` is offered instead.
#[test]
fn a_live_key_psk_does_not_hold_has_its_own_reason() {
    let mut remote = listed(&[(A, "a"), (B, "b")]);
    let since = t("2026-08-01T09:00:00Z");
    let a = TunnelKey::new(ACCOUNT, A);
    remote.tunnels.get_mut(&a).unwrap().last_generated_on = Some(since);
    let plan = reconcile(&config(), None, Some(&remote), t("2026-11-26T00:00:00Z"));
    assert_eq!(plan.count(ActionKind::Generate), 2);
    let r = &plan.actions[0].reasons;
    assert_eq!(r, &vec![Reason::UnknownLiveKey { since }]);
    assert_eq!(r[0].code(), "unknown_live_key");
    assert!(plan.actions[0].replaces_unknown_key());
    assert_eq!(
        r[0].describe(),
        "Cloudflare has held a PSK since 2026-08-01 that psk does not hold: apply replaces it \
         and the router needs the new key; `psk import NAME` adopts the current one instead"
    );
    // Cloudflare reports no date for b: nothing says a key is live.
    assert_eq!(plan.actions[1].reasons, vec![Reason::NeverRotated]);
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
            customer_endpoint: None,
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
    const GONE: &str = "99999999999999999999999999999999";
    let s = state_with("gone", GONE, "2026-11-01T00:00:00Z");
    let now = t("2026-11-02T00:00:00Z");
    let forgets = |plan: &Plan| -> Vec<String> {
        (plan.actions.iter())
            .filter(|a| a.kind == ActionKind::Forget)
            .map(|a| a.name.clone())
            .collect()
    };
    let kept = |plan: &Plan| -> Vec<(String, Deferral)> {
        (plan.deferred.iter())
            .filter(|d| d.kind == ActionKind::Forget)
            .map(|d| (d.name.clone(), d.why.clone()))
            .collect()
    };
    // Cloudflare no longer lists it: the key is live nowhere, so it goes.
    let plan = reconcile(&config(), Some(&s), Some(&listed(&[(A, "a")])), now);
    assert_eq!(forgets(&plan), vec!["gone"]);
    assert!(!plan
        .actions
        .iter()
        .any(|a| a.kind.changes_psk() && a.name == "gone"));
    let reasons = &plan
        .actions
        .iter()
        .find(|a| a.name == "gone")
        .unwrap()
        .reasons;
    assert_eq!(reasons, &vec![Reason::NotInConfig, Reason::NotListed]);
    assert!(reasons[1]
        .describe()
        .contains("Cloudflare no longer lists the tunnel"));
    // Cloudflare still lists it: its key may be live, the record stays.
    let plan = reconcile(&config(), Some(&s), Some(&listed(&[(GONE, "gone")])), now);
    assert!(forgets(&plan).is_empty());
    assert_eq!(kept(&plan), vec![("gone".into(), Deferral::StillListed)]);
    assert!(Deferral::StillListed
        .describe()
        .contains("`psk show NAME` opens it"));
    // Offline, Cloudflare was not asked: kept too.
    let plan = reconcile(&config(), Some(&s), None, now);
    assert!(forgets(&plan).is_empty());
    assert_eq!(kept(&plan), vec![("gone".into(), Deferral::NotAsked)]);
    // Its account is no longer in psk.yaml, so Cloudflare was not asked.
    let mut other = State::new(vec![]);
    let r = other.entry(
        &TunnelKey::new("11111111111111111111111111111111", GONE),
        "gone",
    );
    r.psk = Some("sealed".into());
    let plan = reconcile(&config(), Some(&other), Some(&listed(&[(A, "a")])), now);
    assert_eq!(kept(&plan), vec![("gone".into(), Deferral::NotAsked)]);
    // Unless the token could list that account anyway: not listed there,
    // the tunnel is gone and its record is forgotten; listed, it stays.
    let mut asked = listed(&[(A, "a")]);
    asked
        .departed
        .insert("11111111111111111111111111111111".into());
    let plan = reconcile(&config(), Some(&other), Some(&asked), now);
    assert!(kept(&plan).is_empty());
    assert_eq!(forgets(&plan).len(), 1);
    asked.tunnels.insert(
        TunnelKey::new("11111111111111111111111111111111", GONE),
        RemoteTunnel {
            id: GONE.into(),
            name: "gone".into(),
            last_generated_on: None,
            customer_endpoint: None,
        },
    );
    let plan = reconcile(&config(), Some(&other), Some(&asked), now);
    assert_eq!(kept(&plan), vec![("gone".into(), Deferral::StillListed)]);
}

#[test]
fn a_pending_key_is_sent_again_whatever_else_is_due() {
    let mut s = state_with("a", A, "2026-01-01T00:00:00Z");
    let generated = t("2026-11-10T00:00:00Z");
    s.entry(&TunnelKey::new(ACCOUNT, A), "a")
        .stage_pending("sealed-new".into(), None, generated);
    let mut remote = Remote::default();
    remote.tunnels.insert(
        TunnelKey::new(ACCOUNT, A),
        RemoteTunnel {
            id: A.into(),
            name: "a".into(),
            last_generated_on: Some(t("2026-11-10T00:00:01Z")),
            customer_endpoint: None,
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
    // Named as psk.yaml knows them (here a shortened key: no comment); a
    // key gone from psk.yaml only by its fingerprint.
    assert!(
        text.contains("removed sha256:0000000000000000 (no longer in psk.yaml)"),
        "{text}"
    );
    assert!(text.contains("added age1ql3z7h…mcac8p;"), "{text}");
    assert!(
        !text.contains(&config().recipient_fingerprints()[0]),
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

/// A state with one sealed PSK, sealed to `c`'s recipients (no reseal).
fn sealed_under(c: &Config, name: &str, id: &str, last: &str) -> State {
    let mut s = state_with(name, id, last);
    s.recipients = c.recipient_fingerprints();
    s
}

fn pair(site_a: &str, site_b: &str) -> String {
    format!("  - {{name: a, id: {A}, site: {site_a}}}\n  - {{name: b, id: {B}, site: {site_b}}}\n")
}

#[test]
fn a_due_tunnel_waits_for_its_window() {
    // Saturdays 02:00-06:00 in Berlin (01:00-05:00 UTC in winter).
    let c = config_with(
        "{rotate_every: 30d, window: {days: [sat], start: \"02:00\", end: \"06:00\", timezone: Europe/Berlin}}",
        &format!("  - {{name: a, id: {A}}}\n"),
    );
    let s = sealed_under(&c, "a", A, "2026-10-01T00:00:00Z");
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
    let mut s = sealed_under(&c, "a", A, "2026-11-20T00:00:00Z");
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
    let mut s = sealed_under(&c, "a", A, "2026-10-01T00:00:00Z");
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
    let mut s = sealed_under(&c, "a", A, "2026-11-01T00:00:00Z");
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
    let mut s = sealed_under(&c, "a", A, "2026-11-01T00:00:00Z");
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

fn listed(tunnels: &[(&str, &str)]) -> Remote {
    let mut remote = Remote::default();
    for (id, name) in tunnels {
        remote.tunnels.insert(
            TunnelKey::new(ACCOUNT, id),
            RemoteTunnel {
                id: id.to_string(),
                name: name.to_string(),
                last_generated_on: None,
                customer_endpoint: None,
            },
        );
    }
    remote
}

#[test]
fn tunnels_named_by_name_are_found_in_the_remote_list() {
    let mut c = config_with("{rotate_every: 30d}", "  - {name: edge-1}\n");
    assert_eq!(c.unresolved.len(), 1);
    let offline = reconcile(&c, None, None, t("2026-11-26T00:00:00Z"));
    assert!(offline.actions.is_empty(), "unknown id: nothing to plan");
    resolve_names(&mut c, None, None).unwrap();
    assert_eq!(c.unresolved.len(), 1, "nothing to look it up in");

    let remote = listed(&[(B, "edge-1"), (A, "edge-2")]);
    resolve_names(&mut c, None, Some(&remote)).unwrap();
    assert!(c.unresolved.is_empty());
    let plan = reconcile(&c, None, Some(&remote), t("2026-11-26T00:00:00Z"));
    assert_eq!(plan.actions.len(), 1);
    assert_eq!(plan.actions[0].key, TunnelKey::new(ACCOUNT, B));
    assert_eq!(plan.actions[0].name, "edge-1");
}

#[test]
fn the_state_names_a_tunnel_before_cloudflare_does() {
    let text = format!("  - {{name: a, id: {A}}}\n  - {{name: edge-1, site: fra}}\n");
    let mut c = config_with("{rotate_every: 30d}", &text);
    let s = state_with("edge-1", B, "2026-11-01T00:00:00Z");
    // Cloudflare lists another tunnel of that name now; the state's id,
    // the one psk rotated, is what psk.yaml meant.
    let remote = listed(&[("99999999999999999999999999999999", "edge-1")]);
    resolve_names(&mut c, Some(&s), Some(&remote)).unwrap();
    let names: Vec<(&str, String)> = c
        .tunnels
        .iter()
        .map(|t| (t.name.as_str(), t.id.clone()))
        .collect();
    assert_eq!(names, vec![("a", A.to_string()), ("edge-1", B.to_string())]);
    // Resolved, it is a tunnel like any other: its site and policy apply.
    assert_eq!(c.tunnels[1].site.as_deref(), Some("fra"));
}

#[test]
fn a_name_that_means_several_tunnels_or_a_listed_one_is_refused() {
    let mut c = config_with("{rotate_every: 30d}", "  - {name: edge-1}\n");
    let remote = listed(&[(A, "edge-1"), (B, "edge-1")]);
    let e = resolve_names(&mut c, None, Some(&remote)).unwrap_err();
    assert!(matches!(*e, NameError::Ambiguous { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("psk.yaml:7: 2 tunnels in account {ACCOUNT} are named `edge-1` ({A}, {B}); psk cannot tell which one `edge-1` means. Add its `id` to psk.yaml")
    );
    assert_eq!(c.unresolved.len(), 1, "nothing resolved on error");

    let text = format!("  - {{name: edge-1}}\n  - {{name: again, id: {A}}}\n");
    let mut c = config_with("{rotate_every: 30d}", &text);
    let e = resolve_names(&mut c, None, Some(&listed(&[(A, "edge-1")]))).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("psk.yaml:7: tunnel `edge-1` is Cloudflare's tunnel {A} in account {ACCOUNT}, which psk.yaml also lists as `again`; list each tunnel once")
    );
}

#[test]
fn verify_holds_a_path_while_its_sibling_is_not_healthy() {
    use crate::health::PathHealth;
    let c = config_with("{rotate_every: 30d, verify: {}}", &pair("fra", "fra"));
    let now = t("2026-11-26T00:00:00Z");
    let mut remote = listed(&[(A, "a"), (B, "b")]);
    remote.health.insert(
        TunnelKey::new(ACCOUNT, B),
        PathHealth::Down {
            colos: vec!["FRA".into()],
        },
    );
    remote
        .health
        .insert(TunnelKey::new(ACCOUNT, A), PathHealth::Healthy);
    let plan = reconcile(&c, None, Some(&remote), now);
    // a waits for b; b (already down) may change.
    assert_eq!(plan.actions.len(), 1);
    assert_eq!(plan.actions[0].name, "b");
    assert_eq!(
        plan.deferred[0].why,
        Deferral::SiblingDown {
            site: "fra".into(),
            sibling: "b".into(),
            health: "down in FRA".into()
        }
    );
    // Unread health holds too; healthy siblings hold nothing back but the
    // one-per-site rule.
    remote.health.remove(&TunnelKey::new(ACCOUNT, B));
    let plan = reconcile(&c, None, Some(&remote), now);
    assert_eq!(plan.deferred[0].why.code(), "sibling_down");
    remote
        .health
        .insert(TunnelKey::new(ACCOUNT, B), PathHealth::Healthy);
    let plan = reconcile(&c, None, Some(&remote), now);
    assert!(plan.deferred.iter().all(|d| d.why.code() != "sibling_down"));
    // Without verify, health is not consulted.
    let c = config_with("{rotate_every: 30d}", &pair("fra", "fra"));
    remote.health.clear();
    let plan = reconcile(&c, None, Some(&remote), now);
    assert!(plan.deferred.iter().all(|d| d.why.code() == "site"));
}

/// A path whose last new PSK was not shown back up (its record's
/// `verification`) holds its siblings, even offline and whatever their
/// policy, until health checks show it healthy (for a policy that reads
/// only them) or the record is cleared; `--replace` of the path itself is
/// not held. The plan lists the site's paths with their health.
#[test]
fn a_path_not_shown_back_up_holds_its_siblings() {
    use crate::health::PathHealth;
    let c = config_with("{rotate_every: 30d, verify: {}}", &pair("fra", "fra"));
    let now = t("2026-11-26T00:00:00Z");
    let mut state = State::new(c.recipient_fingerprints());
    for (id, name) in [(A, "a"), (B, "b")] {
        let r = state.entry(&TunnelKey::new(ACCOUNT, id), name);
        r.psk = Some("sealed".into());
        r.last_rotated = Some(t("2026-09-01T00:00:00Z"));
    }
    let b = TunnelKey::new(ACCOUNT, B);
    let rec = state.entry(&b, "b");
    rec.last_rotated = Some(t("2026-11-25T10:42:00Z"));
    rec.begin_verification(t("2026-11-25T10:42:00Z"));
    rec.end_verification(Err("did not come back".into()), t("2026-11-25T10:52:00Z"));

    // Offline: a is due and held; b is not due.
    let plan = reconcile(&c, Some(&state), None, now);
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    let why = &plan.deferred[0].why;
    assert_eq!(why.code(), "unhealthy");
    assert_eq!(
        why,
        &Deferral::Unhealthy {
            site: "fra".into(),
            sibling: "b".into(),
            since: t("2026-11-25T10:42:00Z"),
            failed: Some(t("2026-11-25T10:52:00Z")),
            health: None,
        }
    );
    assert!(
        why.describe().contains("`psk verify b`"),
        "{}",
        why.describe()
    );
    let health: Vec<(&str, &str)> = (plan.health.iter())
        .map(|h| (h.name.as_str(), h.code.as_str()))
        .collect();
    assert_eq!(health, [("a", "not_read"), ("b", "not_read")]);
    assert_eq!(plan.health[1].gave_up, Some(t("2026-11-25T10:52:00Z")));

    // Online, b still down: held, with b's health now.
    let mut remote = listed(&[(A, "a"), (B, "b")]);
    remote
        .health
        .insert(TunnelKey::new(ACCOUNT, A), PathHealth::Healthy);
    remote.health.insert(
        b.clone(),
        PathHealth::Down {
            colos: vec!["FRA".into()],
        },
    );
    let plan = reconcile(&c, Some(&state), Some(&remote), now);
    assert_eq!(plan.deferred.len(), 1);
    assert!(
        matches!(&plan.deferred[0].why, Deferral::Unhealthy { health: Some(h), .. } if h == "down in FRA")
    );
    assert_eq!(plan.health[1].code, "down");

    // `--replace b`: b itself may rotate again (a stays held).
    let options = PlanOptions {
        replace: ["b".to_string()].into(),
        ..PlanOptions::default()
    };
    let plan = reconcile_with(&c, Some(&state), Some(&remote), now, &options);
    assert_eq!(plan.actions.len(), 1);
    assert_eq!(plan.actions[0].name, "b");

    // b healthy now, and its policy reads only health checks: the hold lifts.
    remote.health.insert(b.clone(), PathHealth::Healthy);
    let plan = reconcile(&c, Some(&state), Some(&remote), now);
    assert_eq!(plan.actions.len(), 1, "{:?}", plan.deferred);
    assert_eq!(plan.actions[0].name, "a");

    // A probe is part of b's verify: only `psk verify` (which runs it) lifts it.
    let probed = config_with(
        "{rotate_every: 30d, verify: {command: [\"true\"]}}",
        &pair("fra", "fra"),
    );
    let plan = reconcile(&probed, Some(&state), Some(&remote), now);
    assert_eq!(plan.deferred[0].why.code(), "unhealthy");

    // A wait that never finished (psk killed) holds just the same.
    state
        .entry(&b, "b")
        .begin_verification(t("2026-11-25T10:42:00Z"));
    let plan = reconcile(&probed, Some(&state), None, now);
    let why = &plan.deferred[0].why;
    assert!(
        matches!(why, Deferral::Unhealthy { failed: None, .. }),
        "{why:?}"
    );
    assert!(why
        .describe()
        .contains("psk was stopped while waiting for b"));
    // Cleared: nothing held but the site rule's turn.
    state.entry(&b, "b").end_verification(Ok(()), now);
    let plan = reconcile(&probed, Some(&state), None, now);
    assert!(plan.deferred.is_empty() && !plan.health.is_empty());
    assert_eq!(plan.actions.len(), 1);
}

/// Every way a path may be down holds the site's other path, whatever the
/// policy (no `verify`, no `deliver`, `site_parallel`), with a code of its
/// own, and the path itself still changes (its change is what settles it).
#[test]
fn every_way_a_path_may_be_down_holds_its_site() {
    let now = t("2026-11-26T00:00:00Z");
    for policy in [
        "{rotate_every: 30d}",
        "{rotate_every: 30d, site_parallel: true}",
        "{rotate_every: 30d, deliver: [\"true\"]}",
        "{rotate_every: 30d, verify: {command: [\"true\"]}}",
    ] {
        let c = config_with(policy, &pair("fra", "fra"));
        let sealed = |b_last: &str| {
            let mut s = State::new(c.recipient_fingerprints());
            for (id, name, last) in [(A, "a", "2026-09-01T00:00:00Z"), (B, "b", b_last)] {
                let r = s.entry(&TunnelKey::new(ACCOUNT, id), name);
                r.psk = Some("sealed".into());
                r.last_rotated = Some(t(last));
            }
            s
        };
        let b = TunnelKey::new(ACCOUNT, B);
        // b rotated yesterday, not due; a is due.
        let fresh = "2026-11-25T10:00:00Z";

        let mut s = sealed(fresh);
        (s.entry(&b, "b")).record_delivery(Err("exit 3".into()), t(fresh));
        let plan = reconcile(&c, Some(&s), None, now);
        let why = &plan.deferred[0].why;
        assert_eq!(
            (plan.deferred[0].name.as_str(), why.code()),
            ("a", "undelivered"),
            "{policy}"
        );
        assert!(why
            .describe()
            .contains("`psk deliver b` succeeding lifts the hold"));
        assert!(
            plan.actions.iter().all(|a| !a.kind.changes_psk()),
            "{policy}"
        );
        // A successful delivery lifts it.
        (s.entry(&b, "b")).record_delivery(Ok(()), now);
        let plan = reconcile(&c, Some(&s), None, now);
        assert_eq!(plan.actions[0].name, "a", "{policy}");

        // Interrupted: b rotates again first, a waits for a later apply.
        let mut s = sealed(fresh);
        (s.entry(&b, "b")).begin_rotation("psk_generate", t(fresh));
        let plan = reconcile(&c, Some(&s), None, now);
        let names: Vec<&str> = plan.actions.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["b"], "{policy}");
        let why = &plan.deferred[0].why;
        assert_eq!(why.code(), "uncertain");
        assert!(why.describe().contains("`psk apply --target b`"));
        // ... and under `--target a`, a is held all the same.
        let options = PlanOptions {
            target: Some(["a".to_string()].into()),
            ..PlanOptions::default()
        };
        let plan = reconcile_with(&c, Some(&s), None, now, &options);
        assert!(plan.actions.is_empty(), "{policy}");
        assert_eq!(plan.deferred[0].why.code(), "uncertain");

        // A pending key Cloudflare never confirmed: the same.
        let mut s = sealed(fresh);
        (s.entry(&b, "b")).stage_pending("sealed-2".into(), None, t(fresh));
        let plan = reconcile_with(&c, Some(&s), None, now, &options);
        assert!(matches!(
            plan.deferred[0].why,
            Deferral::Uncertain { pending: true, .. }
        ));
    }
}
