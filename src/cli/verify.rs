//! `psk verify`: the operator's way out of a hold left by a rotated
//! tunnel that did not come back. Arguments and printing; the checks and
//! the records are the executor's (`apply::reverify`).

use std::io::Write;

use clap::Args;

use super::args::{Global, LockWait};
use super::exit::Status;
use super::session::Session;
use crate::apply::reverify::{self, Checked};
use crate::state::format_time;

/// Check now whether tunnels that did not come back after their new PSK
/// (a policy's `verify`) are back up, and lift the hold they put on the
/// other paths of their site. Runs the policy's checks once, as apply's
/// wait does: Cloudflare's health checks over the last `settle`, and the
/// probe. Exits 1 if any is still not back.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Tunnel names; without any, every tunnel not shown back up.
    names: Vec<String>,

    /// Lift the hold without checking: you know the path is up (or accept
    /// that its site may hang on its other paths while they rotate).
    #[arg(long)]
    accept: bool,

    #[command(flatten)]
    lock: LockWait,

    #[command(flatten)]
    pub files: super::args::Files,

    #[command(flatten)]
    pub api: super::args::Api,
}

pub async fn run(global: &Global, args: VerifyArgs) -> anyhow::Result<Status> {
    let session = Session::open(global)?;
    let config = &session.config;
    let (_, lock, mut state) = session
        .lock("verify", &args.lock)?
        .existing("run `psk apply` first")?;
    let todo = reverify::select(config, &state, &args.names)?;
    let mut out = std::io::stdout().lock();
    if todo.is_empty() {
        match todo.clear.is_empty() {
            true => writeln!(
                out,
                "Every rotated tunnel was shown back up: nothing is held."
            )?,
            false => writeln!(
                out,
                "{}: shown back up after its last new PSK; nothing is held.",
                todo.clear.join(", ")
            )?,
        }
        return Ok(Status::Success);
    }
    let connection = match args.accept {
        true => None,
        false => Some(session.connect(Some(&state)).await?),
    };
    let client = connection.as_ref().map(|c| &c.client);
    let mut printed = Ok(());
    let results = reverify::verify(config, &mut state, &lock, client, &todo, |t, c| {
        let line = match c {
            Checked::Back(how) => format!(
                "{}: back up ({how}); the hold on its site is lifted",
                t.name
            ),
            Checked::StillDown { since, why } => format!(
                "{}: NOT BACK UP (new PSK since {}): {why}\n  its site's other paths stay held; `psk apply --replace {}` rotates it again",
                t.name,
                format_time(since),
                t.name
            ),
        };
        if printed.is_ok() {
            printed = writeln!(out, "{line}");
        }
    })
    .await?;
    printed?;
    let still_down = (results.iter())
        .filter(|(_, c)| matches!(c, Checked::StillDown { .. }))
        .count();
    Ok(if still_down > 0 {
        Status::Failure
    } else {
        Status::Success
    })
}
