//! `psk recover`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::args::{Global, LockWait};
use super::exit::Status;
use super::session::Session;
use crate::state::{self, rescue::Rescue};

/// Take back into the state the sealed keys an apply wrote to a rescue
/// file when the state could not be written (a full or failing disk). Each
/// rescued record replaces the state's only where the state still holds
/// what it held when the rescue was written, so running it twice changes
/// nothing and a tunnel rotated again since keeps its newer key. A rescue
/// of another state (another lineage) is refused. Needs no identity and
/// makes no API call; takes the state lock.
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

pub fn run(global: &Global, args: RecoverArgs) -> anyhow::Result<Status> {
    let session = Session::open(global)?;
    let rescue = Rescue::load(&args.file)?;
    let (state_path, lock, mut state) = session
        .lock("recover", &args.lock)?
        .existing("a rescue merges into the state it came from: pass that state with `--state`")?;
    let merged = rescue.merge_into(&args.file, &state_path, &mut state)?;
    if !merged.taken.is_empty() {
        state::save(&lock, &mut state)?;
    }
    drop(lock);
    let mut out = std::io::stdout().lock();
    let list = |names: &[String]| names.join(", ");
    if merged.taken.is_empty() {
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
