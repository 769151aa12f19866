//! Waiting for a rotated tunnel to come back (a policy's `verify`), the
//! way `kubectl rollout status` waits for readiness: one pure "is it back,
//! and if not why" judgement per poll (`health::PathHealth`), the waiting
//! loop apart from it, and a deadline that names what is still wrong.
//!
//! Back up means: with `health_checks`, healthy in every data center that
//! reports it for the whole `settle` window, a window that starts after the
//! new key (an average reaching back before the rotation proves nothing);
//! with a `command`, the probe exits 0. Both, when both are set. Every
//! tunnel being verified shares one [`Watcher`], which asks Cloudflare
//! about all of them in one query per account per poll.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

use crate::cloudflare::Client;
use crate::config::Tunnel;
use crate::health::PathHealth;
use crate::policy::{Deliver, Verify};

/// The longest pause between two polls. Polls are paced by GraphQL's own
/// budget too (the client's GraphQL limiter), whatever this says.
const MAX_POLL: Duration = Duration::from_secs(30);

/// The shortest pause between two polls.
const MIN_POLL: Duration = Duration::from_millis(200);

/// Waits until `tunnel`, whose new key is on the edge since `since`
/// (Cloudflare's date), is back up, or `Err` with why not once
/// `verify.timeout` has passed since `arrived`, when the answer that
/// brought the new key arrived, on the runner's monotonic clock: a runner
/// whose clock is off never gives up at once, nor later than `timeout`.
///
/// A stop request (Ctrl-C) ends the wait at once: the tunnel is then not
/// shown back up, and its site stops like for a tunnel that did not come
/// back, rather than holding the apply for up to `timeout`.
pub(super) async fn until_back_up(
    watcher: &Watcher,
    verify: &Verify,
    tunnel: &Tunnel,
    since: DateTime<Utc>,
    arrived: Instant,
    stop: &super::Stop,
) -> Result<(), String> {
    tokio::select! {
        r = wait(watcher, verify, tunnel, since, arrived) => r,
        _ = stop.wait() => Err(format!(
            "the apply was stopped before {} was shown back up after its new key",
            tunnel.name
        )),
    }
}

async fn wait(
    watcher: &Watcher,
    verify: &Verify,
    tunnel: &Tunnel,
    since: DateTime<Utc>,
    arrived: Instant,
) -> Result<(), String> {
    let deadline = arrived + verify.timeout.as_delta().to_std().unwrap_or_default();
    let gave_up = |last: &str| {
        format!(
            "did not come back within {} of its new key (down since {}): {last}",
            verify.timeout,
            crate::state::format_time(&since)
        )
    };
    if !verify.health_checks {
        return probe_until(verify, tunnel, deadline)
            .await
            .map_err(|e| gave_up(&e));
    }
    let mut last = format!("not yet healthy for {} since its new key", verify.settle);
    let mut verdicts = watcher.watch(tunnel, since, verify.settle.as_delta());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, verdicts.next()).await {
            Err(_) => return Err(gave_up(&last)),
            Ok(verdict) => {
                tracing::debug!(tunnel = %tunnel.name, health = %verdict.health.describe(), "verify: health");
                if verdict.health.is_healthy() {
                    match &verify.command {
                        None => return Ok(()),
                        Some(probe) => match probe_once(probe, tunnel).await {
                            Ok(()) => return Ok(()),
                            Err(e) => last = e,
                        },
                    }
                } else {
                    last = format!(
                        "Cloudflare's health checks: {} over the last {}",
                        verdict.health.describe(),
                        crate::policy::Span::from_seconds(verdict.window.num_seconds())
                            .map_or_else(|| verify.settle.to_string(), |s| s.to_string())
                    );
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(gave_up(&last));
        }
    }
}

/// A probe-only `verify`: the probe, again and again, until it passes.
async fn probe_until(verify: &Verify, tunnel: &Tunnel, deadline: Instant) -> Result<(), String> {
    let Some(probe) = &verify.command else {
        return Ok(());
    };
    let poll = poll_interval(verify.settle.as_delta());
    loop {
        let last = match probe_once(probe, tunnel).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(poll).await;
    }
}

/// How often to poll for a path that must be healthy for `settle`.
fn poll_interval(settle: TimeDelta) -> Duration {
    (settle.to_std().unwrap_or_default() / 4).clamp(MIN_POLL, MAX_POLL)
}

/// One poll's judgement of one tunnel: its health over the `window` that
/// ends at the poll.
#[derive(Debug, Clone)]
pub(super) struct Verdict {
    pub health: PathHealth,
    pub window: TimeDelta,
}

/// Reads Cloudflare's health checks for every tunnel being verified at
/// once: one GraphQL query per account per poll, however many sites are
/// rolling out side by side, so GraphQL's budget (320 queries per 5
/// minutes) holds with any number of sites. Each tunnel waits on its own
/// channel for the verdicts that concern it.
///
/// A poll's window reaches back the longest `settle` among the tunnels it
/// judges, and judges only tunnels whose new key is older than the window:
/// an average reaching back before a rotation would count the old key's
/// health. A path whose own `settle` is shorter is judged over a longer
/// window (stricter, never laxer: healthy over a window means healthy over
/// every part of it) once its new key is that old.
#[derive(Clone)]
pub(super) struct Watcher {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    waiting: Mutex<Waiting>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Waiting {
    tunnels: BTreeMap<u64, Waiter>,
    /// A polling task is running.
    polling: bool,
}

struct Waiter {
    account: String,
    name: String,
    since: DateTime<Utc>,
    settle: TimeDelta,
    tx: watch::Sender<Option<Verdict>>,
}

/// The verdicts for one tunnel; it stops being polled when dropped.
pub(super) struct Verdicts {
    id: u64,
    inner: Arc<Inner>,
    rx: watch::Receiver<Option<Verdict>>,
}

impl Verdicts {
    /// The next verdict (waits for the next poll that judges the tunnel).
    async fn next(&mut self) -> Verdict {
        loop {
            if self.rx.changed().await.is_err() {
                // Cannot happen: the sender lives until this is dropped.
                std::future::pending::<()>().await;
            }
            if let Some(v) = self.rx.borrow_and_update().clone() {
                return v;
            }
        }
    }
}

impl Drop for Verdicts {
    fn drop(&mut self) {
        let mut w = self.inner.waiting.lock().expect("watcher lock");
        w.tunnels.remove(&self.id);
    }
}

impl Watcher {
    pub(super) fn new(client: &Client) -> Watcher {
        Watcher {
            inner: Arc::new(Inner {
                client: client.clone(),
                waiting: Mutex::new(Waiting::default()),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Starts judging `tunnel` (new key since `since`, healthy for
    /// `settle` to be back) at every poll, from now until the returned
    /// [`Verdicts`] is dropped.
    pub(super) fn watch(
        &self,
        tunnel: &Tunnel,
        since: DateTime<Utc>,
        settle: TimeDelta,
    ) -> Verdicts {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let start = {
            let mut w = self.inner.waiting.lock().expect("watcher lock");
            w.tunnels.insert(
                id,
                Waiter {
                    account: tunnel.account_id.clone(),
                    name: tunnel.name.clone(),
                    since,
                    settle,
                    tx,
                },
            );
            !std::mem::replace(&mut w.polling, true)
        };
        if start {
            tokio::spawn(poll(self.inner.clone()));
        }
        Verdicts {
            id,
            inner: self.inner.clone(),
            rx,
        }
    }
}

/// The polling task: runs while any tunnel is watched.
async fn poll(inner: Arc<Inner>) {
    loop {
        let interval = {
            let mut w = inner.waiting.lock().expect("watcher lock");
            let Some(settle) = w.tunnels.values().map(|t| t.settle).min() else {
                w.polling = false;
                return;
            };
            poll_interval(settle)
        };
        tokio::time::sleep(interval).await;
        // Windows in Cloudflare's time, as the new keys' dates are.
        let now = inner.client.cloudflare_now();
        let asks = {
            let w = inner.waiting.lock().expect("watcher lock");
            rounds(w.tunnels.values(), now)
        };
        for (account, window, names) in asks {
            let start = now - window;
            let answer = inner
                .client
                .tunnel_health(&account, &names, start, now)
                .await;
            let w = inner.waiting.lock().expect("watcher lock");
            for t in w.tunnels.values() {
                if t.account != account || !names.contains(&t.name) || t.since >= start {
                    continue;
                }
                let health = match &answer {
                    Ok(h) => PathHealth::judge(h.get(&t.name)),
                    Err(e) => PathHealth::Unknown(e.to_string()),
                };
                t.tx.send_replace(Some(Verdict { health, window }));
            }
        }
    }
}

/// What one poll asks, per account: the window (the longest `settle` of the
/// tunnels ready to be judged) and the tunnels whose new key predates it.
fn rounds<'w>(
    waiting: impl Iterator<Item = &'w Waiter>,
    now: DateTime<Utc>,
) -> Vec<(String, TimeDelta, Vec<String>)> {
    let mut by_account: BTreeMap<&str, Vec<&Waiter>> = BTreeMap::new();
    for t in waiting.filter(|t| now - t.settle >= t.since) {
        by_account.entry(&t.account).or_default().push(t);
    }
    by_account
        .into_iter()
        .filter_map(|(account, ready)| {
            let window = ready.iter().map(|t| t.settle).max()?;
            let mut names: Vec<String> = (ready.iter())
                .filter(|t| t.since < now - window)
                .map(|t| t.name.clone())
                .collect();
            names.sort();
            names.dedup();
            (!names.is_empty()).then(|| (account.to_string(), window, names))
        })
        .collect()
}

/// Runs the user's probe once, with the tunnel (never its PSK) in its
/// environment and no credentials; its output is discarded.
async fn probe_once(probe: &Deliver, tunnel: &Tunnel) -> Result<(), String> {
    let program = &probe.argv[0];
    let mut cmd = crate::deliver::tunnel_command(probe, tunnel, Stdio::null());
    let timeout = Duration::from_secs(probe.timeout.seconds().max(1) as u64);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the probe `{program}`: {e}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Err(_) => Err(format!(
            "the probe `{program}` did not finish within {}",
            probe.timeout
        )),
        Ok(Err(e)) => Err(format!(
            "the probe `{program}` could not be waited for: {e}"
        )),
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(match s.code() {
            Some(c) => format!("the probe `{program}` exited with status {c}"),
            None => format!("the probe `{program}` was killed by a signal"),
        }),
    }
}

/// `verify`'s preflight again, at the moment apply starts: a saved plan may
/// be hours old, and a sibling that went down since must still hold its
/// path. For every path whose policy reads health checks, its site's other
/// paths are read over the last minute, one GraphQL query per account (as
/// the plan does); a path with a sibling not healthy now is not started.
/// Returns the outcomes of the paths held, by action index.
pub(super) async fn preflight_health(
    client: &Client,
    config: &crate::config::Config,
    plan: &crate::reconcile::Plan,
) -> BTreeMap<usize, super::Outcome> {
    // (action index, the siblings to read)
    let mut checks: Vec<(usize, Vec<&Tunnel>)> = Vec::new();
    let mut asked: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (idx, a) in plan.actions.iter().enumerate() {
        let Some(t) = config.tunnels.iter().find(|t| t.key() == a.key) else {
            continue;
        };
        let checks_health = (config.policy_of(t).verify.as_ref()).is_some_and(|v| v.health_checks);
        let Some(site) = t
            .site
            .as_deref()
            .filter(|_| checks_health && a.kind.changes_psk())
        else {
            continue;
        };
        let siblings: Vec<&Tunnel> = (config.tunnels.iter())
            .filter(|s| s.site.as_deref() == Some(site) && s.key() != t.key())
            .collect();
        for s in &siblings {
            asked.entry(&s.account_id).or_default().push(s.name.clone());
        }
        checks.push((idx, siblings));
    }
    // "Healthy now": the window reaches the latest moment Cloudflare knows.
    let now = client.cloudflare_latest();
    let start = now - TimeDelta::seconds(crate::health::NOW_WINDOW_SECONDS);
    let mut health: BTreeMap<(&str, String), PathHealth> = BTreeMap::new();
    for (account, mut names) in asked {
        names.sort();
        names.dedup();
        let answer = client.tunnel_health(account, &names, start, now).await;
        for name in names {
            let h = match &answer {
                Ok(h) => PathHealth::judge(h.get(&name)),
                Err(e) => PathHealth::Unknown(e.to_string()),
            };
            health.insert((account, name), h);
        }
    }
    let mut held = BTreeMap::new();
    for (idx, siblings) in checks {
        let down = siblings.iter().find_map(|s| {
            let h = &health[&(s.account_id.as_str(), s.name.clone())];
            (!h.is_healthy()).then_some((s, h))
        });
        if let Some((s, h)) = down {
            let name = &plan.actions[idx].name;
            tracing::info!(tunnel = %name, sibling = %s.name, "preflight: a sibling is not healthy");
            held.insert(
                idx,
                super::Outcome::Held {
                    message: format!(
                        "not started: verify's preflight: {}, on the same site, is {} now; rotating {name} could cut site \"{}\" off. psk waits until every other path of the site is healthy; apply again then",
                        s.name,
                        h.describe(),
                        s.site.as_deref().unwrap_or_default()
                    ),
                },
            );
        }
    }
    held
}

/// `verify`'s preflight for a policy that verifies by its probe alone
/// (no `health_checks`, so the plan could not read the site's health):
/// before a path is rotated, the policy's probe runs for every other path
/// of its site, with that path in its environment. A path whose sibling's
/// probe fails is not started, with why. Runs once, before any rotation;
/// a sibling rotated earlier in the same apply is verified before the
/// next path starts anyway. Returns the outcomes of the paths held, by
/// action index.
pub(super) async fn preflight_probes(
    config: &crate::config::Config,
    plan: &crate::reconcile::Plan,
    parallelism: usize,
) -> BTreeMap<usize, super::Outcome> {
    // (action index, its probe, the sibling to probe)
    let mut checks: Vec<(usize, Deliver, Tunnel)> = Vec::new();
    for (idx, a) in plan.actions.iter().enumerate() {
        let Some(t) = config.tunnels.iter().find(|t| t.key() == a.key) else {
            continue;
        };
        let probe = (config.policy_of(t).verify.as_ref())
            .filter(|v| !v.health_checks && a.kind.changes_psk())
            .and_then(|v| v.command.clone());
        let (Some(probe), Some(site)) = (probe, t.site.as_deref()) else {
            continue;
        };
        for sibling in (config.tunnels.iter())
            .filter(|s| s.site.as_deref() == Some(site) && s.key() != t.key())
        {
            checks.push((idx, probe.clone(), sibling.clone()));
        }
    }
    let results =
        crate::cloudflare::concurrently(parallelism, checks, |(idx, probe, sibling)| async move {
            let r = probe_once(&probe, &sibling).await;
            (idx, sibling, r)
        })
        .await;
    let mut held = BTreeMap::new();
    for (idx, sibling, r) in results {
        let Err(why) = r else { continue };
        let name = &plan.actions[idx].name;
        tracing::info!(tunnel = %name, sibling = %sibling.name, "preflight probe failed");
        held.entry(idx).or_insert_with(|| super::Outcome::Held {
            message: format!(
                "not started: verify's preflight ran the probe for {}, on the same site, and {why}; rotating {name} now could cut site \"{}\" off. Bring {} up, then apply again",
                sibling.name,
                sibling.site.as_deref().unwrap_or_default(),
                sibling.name
            ),
        });
    }
    held
}

/// `psk verify`: checks once, now, whether `tunnel` (new key since
/// `since`) is back up by every check of `verify`, the way one poll of
/// apply's wait does. `Ok` says what showed it; `Err` why it is not.
pub async fn check_once(
    client: &Client,
    verify: &Verify,
    tunnel: &Tunnel,
    since: DateTime<Utc>,
) -> Result<String, String> {
    let mut shown = Vec::new();
    if verify.health_checks {
        let names = [tunnel.name.clone()];
        let query = |start, end| client.tunnel_health(&tunnel.account_id, &names, start, end);
        let mut now = client.cloudflare_now();
        let mut answer = None;
        if !client.clock_known() {
            // Nothing has shown Cloudflare's clock yet: its first answer
            // does, and is kept only if the window it was asked for holds.
            let first = query(now - verify.settle.as_delta(), now).await;
            let learned = client.cloudflare_now();
            if (learned - now).abs() < TimeDelta::seconds(2) {
                answer = Some(first);
            }
            now = learned;
        }
        let start = now - verify.settle.as_delta();
        if start <= since {
            return Err(format!(
                "its new key is not yet {} old, the time it must be healthy for",
                verify.settle
            ));
        }
        let answer = match answer {
            Some(a) => a,
            None => query(start, now).await,
        };
        let health = match answer {
            Ok(h) => PathHealth::judge(h.get(&tunnel.name)),
            Err(e) => PathHealth::Unknown(e.to_string()),
        };
        if !health.is_healthy() {
            return Err(format!(
                "Cloudflare's health checks: {} over the last {}",
                health.describe(),
                verify.settle
            ));
        }
        shown.push(format!(
            "healthy in every data center for the last {}",
            verify.settle
        ));
    }
    if let Some(probe) = &verify.command {
        probe_once(probe, tunnel).await?;
        shown.push(format!("the probe `{}` passed", probe.argv[0]));
    }
    Ok(shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(account: &str, name: &str, since: &str, settle: i64) -> Waiter {
        Waiter {
            account: account.into(),
            name: name.into(),
            since: since.parse().unwrap(),
            settle: TimeDelta::seconds(settle),
            tx: watch::channel(None).0,
        }
    }

    /// One query per account per poll, over every tunnel ready to judge;
    /// a window never reaches back before a judged tunnel's new key.
    #[test]
    fn one_query_per_account_covers_every_ready_tunnel() {
        let now: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap();
        let waiting = [
            waiter("acc-1", "fra-a", "2026-11-26T11:58:00Z", 60),
            waiter("acc-1", "ams-a", "2026-11-26T11:57:00Z", 60),
            // Not yet `settle` old: not asked about.
            waiter("acc-1", "lon-a", "2026-11-26T11:59:30Z", 60),
            // Ready for its own 10s, but younger than the 60s window.
            waiter("acc-1", "par-a", "2026-11-26T11:59:30Z", 10),
            waiter("acc-2", "vie-a", "2026-11-26T11:59:00Z", 30),
        ];
        let asks = rounds(waiting.iter(), now);
        assert_eq!(
            asks,
            vec![
                (
                    "acc-1".to_string(),
                    TimeDelta::seconds(60),
                    vec!["ams-a".to_string(), "fra-a".to_string()]
                ),
                (
                    "acc-2".to_string(),
                    TimeDelta::seconds(30),
                    vec!["vie-a".to_string()]
                ),
            ]
        );
        // Alone, the short-settle path gets its own window.
        let asks = rounds(waiting[3..4].iter(), now);
        assert_eq!(asks[0].1, TimeDelta::seconds(10));
        assert!(rounds(waiting[2..3].iter(), now).is_empty());
    }
}
