//! Waiting for a rotated tunnel to come back (a policy's `verify`), the
//! way `kubectl rollout status` waits for readiness: one pure "is it back,
//! and if not why" judgement per poll (`health::PathHealth`), the waiting
//! loop apart from it, and a deadline that names what is still wrong.
//!
//! Back up means: with `health_checks`, healthy in every data center that
//! reports it for the whole `settle` window, a window that starts after the
//! new key (an average reaching back before the rotation proves nothing);
//! with a `command`, the probe exits 0. Both, when both are set.

use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::cloudflare::Client;
use crate::config::Tunnel;
use crate::health::PathHealth;
use crate::policy::{Deliver, Verify};

/// The longest pause between two polls. Polls are paced by GraphQL's own
/// budget too (the client's GraphQL limiter), whatever this says.
const MAX_POLL: Duration = Duration::from_secs(30);

/// Waits until `tunnel`, whose new key is on the edge since `since`, is
/// back up, or `Err` with why not once `verify.timeout` has passed.
///
/// A stop request (Ctrl-C) ends the wait at once: the tunnel is then not
/// shown back up, and its site stops like for a tunnel that did not come
/// back, rather than holding the apply for up to `timeout`.
pub(super) async fn until_back_up(
    client: &Client,
    verify: &Verify,
    tunnel: &Tunnel,
    since: DateTime<Utc>,
    stop: &super::Stop,
) -> Result<(), String> {
    tokio::select! {
        r = wait(client, verify, tunnel, since) => r,
        _ = stop.wait() => Err(format!(
            "the apply was stopped before {} was shown back up after its new key",
            tunnel.name
        )),
    }
}

async fn wait(
    client: &Client,
    verify: &Verify,
    tunnel: &Tunnel,
    since: DateTime<Utc>,
) -> Result<(), String> {
    let settle = verify.settle.as_delta();
    let deadline = since + verify.timeout.as_delta();
    let poll =
        (settle.to_std().unwrap_or_default() / 4).clamp(Duration::from_millis(200), MAX_POLL);
    loop {
        let now = Utc::now();
        let last = match check(client, verify, tunnel, since, now).await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if Utc::now() >= deadline {
            return Err(format!(
                "did not come back within {} of its new key (down since {}): {last}",
                verify.timeout,
                crate::state::format_time(&since)
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

/// One poll: `Ok` when every check of `verify` says the tunnel is back.
async fn check(
    client: &Client,
    verify: &Verify,
    tunnel: &Tunnel,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    if verify.health_checks {
        let start = now - verify.settle.as_delta();
        if start < since {
            return Err(format!(
                "not yet healthy for {} since its new key",
                verify.settle
            ));
        }
        // A millisecond past the rotation: windows are read in milliseconds.
        let start = start.max(since + TimeDelta::milliseconds(1));
        let names = [tunnel.name.clone()];
        let health = match client
            .tunnel_health(&tunnel.account_id, &names, start, now)
            .await
        {
            Ok(h) => PathHealth::judge(h.get(&tunnel.name)),
            Err(e) => PathHealth::Unknown(e.to_string()),
        };
        tracing::debug!(tunnel = %tunnel.name, health = %health.describe(), "verify: health");
        if !health.is_healthy() {
            return Err(format!(
                "Cloudflare's health checks: {} over the last {}",
                health.describe(),
                verify.settle
            ));
        }
    }
    if let Some(probe) = &verify.command {
        probe_once(probe, tunnel).await?;
    }
    Ok(())
}

/// Runs the user's probe once, with the tunnel (never its PSK) in its
/// environment and no credentials; its output is discarded.
async fn probe_once(probe: &Deliver, tunnel: &Tunnel) -> Result<(), String> {
    let program = &probe.argv[0];
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&probe.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .env("PSK_TUNNEL_NAME", &tunnel.name)
        .env("PSK_TUNNEL_ID", &tunnel.id)
        .env("PSK_ACCOUNT_ID", &tunnel.account_id)
        .env("PSK_SITE", tunnel.site.as_deref().unwrap_or(""));
    for v in crate::deliver::WITHHELD {
        cmd.env_remove(v);
    }
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
