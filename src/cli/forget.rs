//! `psk forget`.

use std::io::Write;

use anyhow::bail;
use clap::Args;

use super::args::{Global, LockWait};
use super::exit::Status;
use super::session::Session;
use crate::state::{self, backup_path};

/// Drop now the records of tunnels psk.yaml no longer lists, sealed PSK
/// and all, without waiting for Cloudflare to stop listing them. `plan`
/// forgets such a record by itself once Cloudflare no longer lists the
/// tunnel; this is for a record it keeps because Cloudflare cannot be
/// asked (`not_asked`: no token can list that account any more) when you
/// know the tunnel is gone. A tunnel psk.yaml lists is refused. The version
/// of the state before (with the keys) stays in its backup until the next
/// write, and in git. No API call; takes the state lock.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The names of the tunnels, as the state records them.
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,

    #[command(flatten)]
    lock: LockWait,

    #[command(flatten)]
    pub files: super::args::Files,
}

pub fn run(global: &Global, args: ForgetArgs) -> anyhow::Result<Status> {
    let session = Session::open(global)?;
    let config = &session.config;
    let (state_path, lock, mut state) = session
        .lock("forget", &args.lock)?
        .existing("there is nothing to forget")?;
    let listed = config.tunnels_by_key();
    let mut keys = Vec::new();
    // Every name is checked before anything changes: all or nothing.
    for name in &args.names {
        let Some(rec) = state.find_by_name(name) else {
            let known = state.tunnels.values().map(|r| r.name.as_str());
            bail!(
                "{} holds no record named `{name}`{}; nothing was changed",
                state_path.display(),
                crate::suggest::did_you_mean(name, known).unwrap_or_default()
            );
        };
        if listed.contains_key(&rec.key()) || config.tunnel_by_name(name).is_some() {
            bail!(
                "`{name}` is in {}, so psk keeps its record; nothing was changed.\nRemove it from psk.yaml first: `psk plan` then shows when its record is forgotten",
                config.path.display()
            );
        }
        if !keys.contains(&rec.key()) {
            keys.push(rec.key());
        }
    }
    for key in &keys {
        state.forget(key);
    }
    state::save(&lock, &mut state)?;
    drop(lock);
    writeln!(
        std::io::stdout().lock(),
        "Forgot {}: {}. Their sealed PSKs are no longer in {} (serial {}); the version before, with them, is {} until the next write.",
        keys.len(),
        args.names.join(", "),
        state_path.display(),
        state.serial,
        backup_path(&state_path).display()
    )?;
    Ok(Status::Success)
}
