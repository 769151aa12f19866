//! `psk deliver`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use chrono::Utc;
use clap::Args;

use super::args::{Global, LockWait};
use super::exit::Status;
use super::session::{identities, Session};
use crate::seal;
use crate::state;

/// Run the policy's `deliver` command again for tunnels whose last
/// delivery failed (or for the NAMEs given), handing each its sealed PSK.
/// Needs an identity to open them: --identity, PSK_AGE_KEY_FILE or
/// PSK_AGE_KEY. Makes no API call.
#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// Tunnel names; without any, every tunnel whose delivery failed.
    names: Vec<String>,

    /// An age identity file or an unencrypted SSH private key; repeatable.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    identities: Vec<PathBuf>,

    #[command(flatten)]
    lock: LockWait,

    #[command(flatten)]
    pub files: super::args::Files,
}

pub async fn run(global: &Global, args: DeliverArgs) -> anyhow::Result<Status> {
    let session = Session::open(global)?;
    let config = &session.config;
    // Held until the end: the state is ours to write.
    let (_, lock, mut state) = session
        .lock("deliver", &args.lock)?
        .existing("run `psk apply` first")?;

    let mut todo = Vec::new();
    if args.names.is_empty() {
        for t in &config.tunnels {
            let failed = state
                .get(&t.key())
                .and_then(|r| r.delivery.as_ref())
                .is_some_and(|d| !d.ok);
            if failed {
                todo.push(t.clone());
            }
        }
        if todo.is_empty() {
            println!("No failed deliveries: every delivered PSK reached its router.");
            return Ok(Status::Success);
        }
    } else {
        for n in &args.names {
            let t = config.tunnel_by_name(n).ok_or_else(|| {
                anyhow!(
                    "no tunnel named `{n}` in {}{}",
                    config.path.display(),
                    config.did_you_mean(n)
                )
            })?;
            todo.push(t.clone());
        }
    }
    for t in &todo {
        if config.policy_of(t).deliver.is_none() {
            bail!(
                "tunnel `{}` has no delivery command: its policy \"{}\" sets no `deliver`",
                t.name,
                t.policy
            );
        }
        if state.get(&t.key()).and_then(|r| r.psk.as_ref()).is_none() {
            bail!(
                "psk holds no PSK for `{}` yet; run `psk apply` first",
                t.name
            );
        }
    }
    let ids = identities(&args.identities)?;

    let mut failed = 0;
    let mut out = std::io::stdout().lock();
    for t in &todo {
        let rec = state.get(&t.key()).expect("checked above");
        let sealed = rec.psk.clone().expect("checked above");
        let psk = seal::open(&sealed, &ids)
            .with_context(|| format!("cannot open the PSK of `{}`", t.name))?;
        let how = config.policy_of(t).deliver.clone().expect("checked above");
        let result = crate::deliver::deliver(&how, t, &psk).await;
        drop(psk);
        match &result {
            Ok(()) => writeln!(out, "{}: delivered to its router", t.name)?,
            Err(e) => {
                failed += 1;
                writeln!(out, "{}: DELIVERY FAILED: {e}", t.name)?;
            }
        }
        state
            .entry(&t.key(), &t.name)
            .record_delivery(result, Utc::now());
        // Each outcome is durable before the next delivery starts.
        state::save(&lock, &mut state)?;
    }
    Ok(if failed > 0 {
        Status::Failure
    } else {
        Status::Success
    })
}
