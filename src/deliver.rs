//! Handing a new PSK to its router: a policy's `deliver` command.
//!
//! The PSK goes to the command on stdin only, never in argv or the
//! environment, where other users of the machine could read it. The
//! command's own output is discarded, so a script that echoes its input can
//! never put a PSK into psk's output; only its exit status is reported.

use std::process::Stdio;

use tokio::io::AsyncWriteExt as _;

use crate::config::Tunnel;
use crate::policy::Deliver;
use crate::seal::Psk;

/// Variables never passed on to a delivery command: credentials it does
/// not need.
pub(crate) const WITHHELD: &[&str] = &[
    "CLOUDFLARE_API_TOKEN",
    "CLOUDFLARE_API_KEY",
    "CLOUDFLARE_EMAIL",
    "PSK_AGE_KEY",
];

/// Runs `deliver` for `tunnel` with `psk` (and a newline) on stdin.
/// `Err` says why it failed, in words fit for the state and the terminal.
pub async fn deliver(deliver: &Deliver, tunnel: &Tunnel, psk: &Psk) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(&deliver.argv[0]);
    cmd.args(&deliver.argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .env("PSK_TUNNEL_NAME", &tunnel.name)
        .env("PSK_TUNNEL_ID", &tunnel.id)
        .env("PSK_ACCOUNT_ID", &tunnel.account_id)
        .env("PSK_SITE", tunnel.site.as_deref().unwrap_or(""));
    for v in WITHHELD {
        cmd.env_remove(v);
    }
    let program = &deliver.argv[0];
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut input = zeroize::Zeroizing::new(Vec::with_capacity(psk.expose().len() + 1));
    input.extend_from_slice(psk.expose().as_bytes());
    input.push(b'\n');
    let timeout = std::time::Duration::from_secs(deliver.timeout.seconds().max(1) as u64);
    let run = async {
        // A command that exits without reading stdin is its own business:
        // its exit status decides.
        let _ = stdin.write_all(&input).await;
        drop(stdin);
        child.wait().await
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => Err(format!(
            "`{program}` did not finish within {} and was stopped",
            deliver.timeout
        )),
        Ok(Err(e)) => Err(format!("`{program}` could not be waited for: {e}")),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(match status.code() {
            Some(c) => format!("`{program}` exited with status {c}"),
            None => format!("`{program}` was killed by a signal"),
        }),
    }
}
