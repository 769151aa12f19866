//! `psk force-unlock`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;
use clap::Args;

use super::args::Global;
use super::exit::Status;
use super::session::Session;
use crate::state::{self, Location, Unlock};

/// Remove the lock record a killed psk left beside the state. psk's lock
/// is an operating-system lock that ends with its process, so a running
/// holder is never overridden: it is named, with its pid, for you to stop.
#[derive(Debug, Args)]
pub struct ForceUnlockArgs {
    /// The lock ID from the message that named the lock holder.
    id: String,

    /// Do not ask for confirmation. Required when stdin is not a terminal.
    #[arg(long)]
    force: bool,

    #[command(flatten)]
    pub files: super::args::Files,
}

pub fn run(global: &Global, args: ForceUnlockArgs) -> anyhow::Result<Status> {
    let session = Session::open(global)?;
    let state_path = &session.state_path;
    let mut out = std::io::stdout().lock();
    let mut asked = None;
    let remote = match &session.location {
        Location::Bucket(r) => Some(r),
        Location::File(_) => None,
    };
    let confirm = |holder: &state::LockHolder| {
        if args.force {
            return true;
        }
        if !std::io::stdin().is_terminal() {
            asked = Some(holder.to_string());
            return false;
        }
        let question = match remote {
            // A remote holder may run on another machine: psk cannot tell.
            Some(_) => format!("The lock of {} is held by {holder}.\nRemove it only if that process is gone: a live holder would go on writing (its writes would then be refused, not lost).\nRemove it? Only 'yes' will be accepted: ", state_path.display()),
            None => format!("No running process holds the lock of {}, but {holder} left its record.\nRemove it? Only 'yes' will be accepted: ", state_path.display()),
        };
        let _ = write!(out, "{question}");
        let _ = out.flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        answer.trim() == "yes"
    };
    let (found, removed) = match &remote {
        Some(r) => state::remote::lock::force_unlock(r, &args.id, confirm)?,
        None => state::force_unlock(state_path, &args.id, confirm)?,
    };
    if let Some(holder) = asked {
        bail!("psk force-unlock needs confirmation, but stdin is not a terminal.\nThe lock record left by {holder} would be removed; run `psk force-unlock {} --force`", args.id);
    }
    match (found, removed) {
        (Unlock::NotLocked, _) => bail!(
            "the state {} is not locked: no process holds its lock and no record was left",
            state_path.display()
        ),
        (Unlock::Stale(_), false) => {
            writeln!(out, "\nForce-unlock cancelled. Nothing was changed.")?;
            Ok(Status::Failure)
        }
        (Unlock::Stale(holder), true) => {
            writeln!(
                out,
                "Removed the lock record of {holder}{}.",
                if remote.is_none() {
                    "; that process had already ended"
                } else {
                    ""
                }
            )?;
            if remote.is_none() && state::journal_path(state_path).exists() {
                writeln!(
                    out,
                    "It left a journal of the changes it made ({}); every psk command reads it, and the next apply, reseal or import folds it into the state.",
                    state::journal_path(state_path).display()
                )?;
            }
            Ok(Status::Success)
        }
    }
}
