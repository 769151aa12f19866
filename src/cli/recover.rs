//! `psk recover`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::args::{Global, LockWait};
use super::exit::Status;
use super::session::Session;
use crate::state::rescue::{Edge, Rescue};
use crate::state::{self, State};
use crate::tunnel::TunnelKey;

/// Take back into the state the sealed keys an apply wrote to a rescue
/// file when the state could not be written (a full or failing disk). Each
/// rescued record replaces the state's only where the state still holds
/// what it held when the rescue was written, so running it twice changes
/// nothing and a tunnel rotated again since keeps its newer key. A rescue
/// of another state (another lineage) is refused. A rescued key that a
/// later apply's record contradicts (a writer whose lock was taken made it)
/// is taken when Cloudflare's edge holds it: only then does recover ask
/// Cloudflare (CLOUDFLARE_API_TOKEN), and only about those tunnels. Needs
/// no identity; takes the state lock.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The rescue file apply named (`psk-rescue-….json`).
    #[arg(value_name = "FILE")]
    file: PathBuf,

    #[command(flatten)]
    lock: LockWait,

    #[command(flatten)]
    pub files: super::args::Files,
}

pub async fn run(global: &Global, args: RecoverArgs) -> anyhow::Result<Status> {
    let mut session = Session::open(global)?;
    let rescue = Rescue::load(&args.file)?;
    let (state_path, lock, mut state) = session
        .lock("recover", &args.lock)?
        .existing("a rescue merges into the state it came from: pass that state with `--state`")?;
    let contested = rescue.contested(&state);
    let edge = if contested.is_empty() {
        Edge::new()
    } else {
        ask_the_edge(&mut session, &state, contested)
            .await
            .context("some rescued keys differ from the state's, and only Cloudflare can say which one its edge holds")?
    };
    let merged = rescue.merge_into(&args.file, &state_path, &mut state, &edge)?;
    if !merged.taken.is_empty() || !merged.from_edge.is_empty() {
        state::save(&lock, &mut state)?;
    }
    drop(lock);
    let mut out = std::io::stdout().lock();
    let list = |names: &[String]| names.join(", ");
    if merged.taken.is_empty() && merged.from_edge.is_empty() {
        writeln!(
            out,
            "Nothing to recover: the state already holds every record of {}.",
            args.file.display()
        )?;
    } else {
        writeln!(
            out,
            "Recovered {} tunnel record{} from {}: {}.\nState saved to {} (serial {}).",
            merged.taken.len(),
            if merged.taken.len() == 1 { "" } else { "s" },
            args.file.display(),
            list(&merged.taken),
            state_path.display(),
            state.serial
        )?;
    }
    if !merged.from_edge.is_empty() {
        writeln!(
            out,
            "Recovered over the state's newer record, because Cloudflare's edge holds the rescued key (made by a psk whose lock was taken): {}.\nState saved to {} (serial {}).",
            list(&merged.from_edge),
            state_path.display(),
            state.serial
        )?;
    }
    if !merged.changed_since.is_empty() {
        writeln!(
            out,
            "Kept as the state has them (changed since the rescue was written, e.g. rotated again by a later apply): {}.",
            list(&merged.changed_since)
        )?;
    }
    writeln!(
        out,
        "The rescue file is no longer needed once the state is committed; remove it with `rm {}`.",
        args.file.display()
    )?;
    Ok(Status::Success)
}

/// When Cloudflare last generated the key of each `contested` tunnel.
async fn ask_the_edge(
    session: &mut Session<'_>,
    state: &State,
    contested: Vec<TunnelKey>,
) -> anyhow::Result<Edge> {
    let connection = session.connect(Some(state)).await?;
    let remote = crate::remote::refresh(&connection.client, &mut session.config).await?;
    Ok(contested
        .into_iter()
        .map(|k| {
            let on = remote.tunnels.get(&k).and_then(|t| t.last_generated_on);
            (k, on)
        })
        .collect())
}
