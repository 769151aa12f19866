//! `psk show`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context as _};
use clap::Args;

use super::args::Global;
use super::exit::Status;
use super::session::{identities, no_record, Session};
use crate::seal;

/// Print one tunnel's PSK, decrypted, alone on stdout. Needs an age
/// identity: --identity, PSK_AGE_KEY_FILE or PSK_AGE_KEY (all are tried).
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The tunnel's name in psk.yaml (or in the state).
    name: String,

    /// An age identity file or an unencrypted SSH private key; repeatable.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    identities: Vec<PathBuf>,

    #[command(flatten)]
    pub files: super::args::Files,
}

pub fn run(global: &Global, args: ShowArgs) -> anyhow::Result<Status> {
    let session = Session::open(global)?;
    let (config, state_path) = (&session.config, &session.state_path);
    let state = session.require_state()?;
    let record = match config.tunnel_by_name(&args.name) {
        Some(t) => state.get(&t.key()),
        None => state.find_by_name(&args.name),
    }
    .ok_or_else(|| anyhow!("{}", no_record(config, state_path, &args.name)))?;
    let sealed = record.psk.as_deref().ok_or_else(|| {
        anyhow!(
            "psk holds no PSK for `{}` yet; run `psk apply` to generate one",
            args.name
        )
    })?;
    let ids = identities(&args.identities)?;
    let psk = seal::open(sealed, &ids).with_context(|| {
        format!(
            "cannot open the PSK of `{}` sealed in {}",
            args.name,
            state_path.display()
        )
    })?;
    if record.intent.is_some() {
        eprintln!(
            "warning: a rotation of `{}` was interrupted; Cloudflare may hold a newer PSK than this one. Run `psk plan`.",
            args.name
        );
    }
    if record.pending.is_some() {
        eprintln!(
            "warning: `{}` has a new PSK pending that Cloudflare has not confirmed; this is the one before it. Run `psk plan`.",
            args.name
        );
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", psk.expose())?;
    out.flush()?;
    Ok(Status::Success)
}
