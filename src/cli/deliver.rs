//! `psk deliver`: arguments and printing; the deliveries are the
//! executor's (`apply::redeliver`).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::args::{Global, LockWait};
use super::exit::Status;
use super::session::{identities, Session};
use crate::apply::redeliver::{self, Delivered};
use crate::seal::Identities;

/// Run the policy's `deliver` command again for tunnels whose last
/// delivery failed (or for the NAMEs given), handing each its sealed PSK.
/// Needs an identity to open them: --identity, PSK_AGE_KEY_FILE or
/// PSK_AGE_KEY. Makes no API call. A path whose router is fine is not
/// handed its key while another path of its site may be down.
#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// Tunnel names; without any, every tunnel whose delivery failed.
    names: Vec<String>,

    /// An age identity file or an unencrypted SSH private key; repeatable.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    identities: Vec<PathBuf>,

    /// Record the delivery as done without running the command (you put
    /// the key on the router another way): lifts the hold a failed
    /// delivery puts on its site. Needs no identity.
    #[arg(long)]
    accept: bool,

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
    let todo = redeliver::select(config, &state, &args.names, args.accept)?;
    if todo.is_empty() {
        println!("No failed deliveries: every delivered PSK reached its router.");
        return Ok(Status::Success);
    }
    let ids = match todo.needs_identity() {
        true => identities(&args.identities)?,
        false => Identities::default(),
    };
    let mut out = std::io::stdout().lock();
    let mut printed = Ok(());
    let results = redeliver::deliver(config, &mut state, &lock, &todo, &ids, |t, d| {
        let line = match d {
            Delivered::Delivered => format!("{}: delivered to its router", t.name),
            Delivered::Accepted => format!(
                "{}: recorded as delivered (--accept; the command was not run)",
                t.name
            ),
            Delivered::Failed(e) => format!("{}: DELIVERY FAILED: {e}", t.name),
            Delivered::Held(why) => format!("{}: not delivered, {why}", t.name),
        };
        if printed.is_ok() {
            printed = writeln!(out, "{line}");
        }
    })
    .await?;
    printed?;
    let failed = (results.iter())
        .filter(|(_, d)| matches!(d, Delivered::Failed(_) | Delivered::Held(_)))
        .count();
    Ok(if failed > 0 {
        Status::Failure
    } else {
        Status::Success
    })
}
