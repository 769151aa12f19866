//! `psk reseal`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

use super::args::{Global, LockWait};
use super::session::Session;
use super::show::identities;
use super::Status;
use crate::seal;
use crate::state;

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
}

pub fn run(global: &Global, args: ResealArgs) -> anyhow::Result<Status> {
    let session = Session::open(global)?;
    let config = &session.config;
    let (state_path, lock, mut state) = session
        .lock("reseal", &args.lock)?
        .existing("nothing is sealed yet")?;
    let wanted = config.recipient_fingerprints();
    // Keys an apply sealed after psk.yaml's recipients changed are already
    // right; only the others need opening.
    let stale =
        |list: Option<&Vec<String>>| state::canonical(list.unwrap_or(&state.recipients)) != wanted;
    let mut out = std::io::stdout().lock();
    let any_stale = state.tunnels.values().any(|rec| {
        (rec.psk.is_some() && stale(rec.sealed_to.as_ref()))
            || rec
                .pending
                .as_ref()
                .is_some_and(|p| stale(p.sealed_to.as_ref()))
    });
    if !any_stale && state::canonical(&state.recipients) == wanted {
        writeln!(
            out,
            "The state is already sealed to the {} recipient{} in {}. Nothing to do.",
            wanted.len(),
            if wanted.len() == 1 { "" } else { "s" },
            config.path.display()
        )?;
        return Ok(Status::Success);
    }
    let ids = identities(&args.identities)?;

    // Open everything first: either every PSK is re-sealed or none is.
    let mut opened = Vec::new();
    let mut failures = Vec::new();
    for (k, rec) in &state.tunnels {
        let sealed = [
            ("psk", rec.psk.as_deref(), rec.sealed_to.as_ref()),
            (
                "pending",
                rec.pending.as_ref().map(|p| p.psk.as_str()),
                rec.pending.as_ref().and_then(|p| p.sealed_to.as_ref()),
            ),
        ];
        for (which, sealed, sealed_to) in sealed {
            let Some(sealed) = sealed.filter(|_| stale(sealed_to)) else {
                continue;
            };
            match seal::open(sealed, &ids) {
                Ok(psk) => opened.push((k.clone(), which, psk)),
                Err(e) => failures.push(format!("  {} ({which}): {e}", rec.name)),
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "cannot open {} sealed PSK{} in {}:\n{}\nNothing was changed. Pass --identity (or PSK_AGE_KEY_FILE / PSK_AGE_KEY) for a recipient they are sealed to; all identities given are tried together",
            failures.len(),
            if failures.len() == 1 { "" } else { "s" },
            state_path.display(),
            failures.join("\n")
        );
    }
    let count = opened.len();
    for (k, which, psk) in opened {
        let sealed = seal::seal(&psk, &config.recipients)
            .with_context(|| format!("cannot re-seal a PSK of {k}; nothing was changed"))?;
        let rec = state.tunnels.get_mut(&k).expect("opened from this state");
        match which {
            "psk" => rec.psk = Some(sealed),
            _ => rec.pending.as_mut().expect("opened from this state").psk = sealed,
        }
    }
    // Every key is now sealed to `wanted`: say it once, in the header.
    state.recipients = wanted.clone();
    for rec in state.tunnels.values_mut() {
        rec.sealed_to = None;
        if let Some(p) = rec.pending.as_mut() {
            p.sealed_to = None;
        }
    }
    state::save(&state_path, &mut state)?;
    drop(lock);
    writeln!(
        out,
        "Re-sealed {count} PSK{} to the {} recipient{} in {}.\nState saved to {} (serial {}).",
        if count == 1 { "" } else { "s" },
        wanted.len(),
        if wanted.len() == 1 { "" } else { "s" },
        config.path.display(),
        state_path.display(),
        state.serial
    )?;
    Ok(Status::Success)
}
