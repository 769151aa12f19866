//! `psk force-unlock`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;
use clap::Args;

use super::args::Global;
use super::exit::Status;
use super::session::Session;
use crate::state::{self, Unlock};

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
    let (found, removed) = state::force_unlock(state_path, &args.id, |holder| {
        if args.force {
            return true;
        }
        if !std::io::stdin().is_terminal() {
            asked = Some(holder.to_string());
            return false;
        }
        let _ = write!(
            out,
            "No running process holds the lock of {}, but {holder} left its record.\nRemove it? Only 'yes' will be accepted: ",
            state_path.display()
        );
        let _ = out.flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        answer.trim() == "yes"
    })?;
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
                "Removed the lock record of {holder}; that process had already ended."
            )?;
            if state::journal_path(state_path).exists() {
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
