//! `psk reseal`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

use super::args::{Global, LockWait};
use super::exit::Status;
use super::session::{identities, Session};
use crate::seal::{self, Psk};
use crate::state::{self, Slot, State, TunnelState};
use crate::tunnel::TunnelKey;

/// Re-encrypt every sealed PSK in the state to the recipients psk.yaml
/// lists now, after someone joined or left. Needs an identity that opens
/// them; makes no API call and changes no key. Takes the state lock.
#[derive(Debug, Args)]
pub struct ResealArgs {
    /// An age identity file or an unencrypted SSH private key; repeatable.
    /// PSK_AGE_KEY_FILE and PSK_AGE_KEY are tried too.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    identities: Vec<PathBuf>,

    #[command(flatten)]
    lock: LockWait,

    #[command(flatten)]
    pub files: super::args::Files,
}

pub fn run(global: &Global, args: ResealArgs) -> anyhow::Result<Status> {
    let session = Session::open(global)?;
    let config = &session.config;
    let (state_path, lock, mut state) = session
        .lock("reseal", &args.lock)?
        .existing("nothing is sealed yet")?;
    let wanted = config.recipient_fingerprints();
    let mut out = std::io::stdout().lock();
    if stale_keys(&state, &wanted).next().is_none() && state::canonical(&state.recipients) == wanted
    {
        writeln!(
            out,
            "The state is already sealed to the {} recipient{} in {}. Nothing to do.",
            wanted.len(),
            plural(wanted.len()),
            config.path.display()
        )?;
        return Ok(Status::Success);
    }
    let ids = identities(&args.identities)?;
    // Open everything first: either every PSK is re-sealed or none is.
    let opened = open_stale(&state, &wanted, &ids, &state_path)?;
    let count = opened.len();
    for (key, slot, psk) in opened {
        let sealed = seal::seal(&psk, &config.recipients)
            .with_context(|| format!("cannot re-seal a PSK of {key}; nothing was changed"))?;
        if let Some(rec) = state.tunnels.get_mut(&key) {
            rec.reseal(slot, sealed, None);
        }
    }
    // Every key is now sealed to `wanted`: say it once, in the header.
    state.adopt_recipients(wanted.clone());
    state::save(&lock, &mut state)?;
    drop(lock);
    writeln!(
        out,
        "Re-sealed {count} PSK{} to the {} recipient{} in {}.\nState saved to {} (serial {}).",
        plural(count),
        wanted.len(),
        plural(wanted.len()),
        config.path.display(),
        state_path.display(),
        state.serial
    )?;
    Ok(Status::Success)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The sealed keys not yet sealed to `wanted`, with their text. Keys an
/// apply sealed after psk.yaml's recipients changed are already right;
/// only the others need opening.
fn stale_keys<'s>(
    state: &'s State,
    wanted: &'s [String],
) -> impl Iterator<Item = (&'s TunnelKey, &'s TunnelState, Slot, &'s str)> {
    state.tunnels.iter().flat_map(move |(key, rec)| {
        [Slot::Psk, Slot::Pending]
            .into_iter()
            .filter_map(move |slot| {
                let (sealed, sealed_to) = rec.sealed(slot)?;
                let to = state::canonical(sealed_to.unwrap_or(&state.recipients));
                (to != wanted).then_some((key, rec, slot, sealed))
            })
    })
}

/// Opens every stale key, or none: a key no identity opens is named, with
/// what to do, and nothing is changed.
fn open_stale(
    state: &State,
    wanted: &[String],
    ids: &seal::Identities,
    state_path: &std::path::Path,
) -> anyhow::Result<Vec<(TunnelKey, Slot, Psk)>> {
    let mut opened = Vec::new();
    let mut failures = Vec::new();
    for (key, rec, slot, sealed) in stale_keys(state, wanted) {
        match seal::open(sealed, ids) {
            Ok(psk) => opened.push((key.clone(), slot, psk)),
            Err(e) => failures.push(format!("  {} ({slot}): {e}", rec.name)),
        }
    }
    if !failures.is_empty() {
        bail!(
            "cannot open {} sealed PSK{} in {}:\n{}\nNothing was changed. Pass --identity (or PSK_AGE_KEY_FILE / PSK_AGE_KEY) for a recipient they are sealed to; all identities given are tried together",
            failures.len(),
            plural(failures.len()),
            state_path.display(),
            failures.join("\n")
        );
    }
    Ok(opened)
}
