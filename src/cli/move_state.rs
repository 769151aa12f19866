//! `psk move-state`: copy the state to another home, file or bucket.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;

use super::args::{Global, LockWait};
use super::exit::Status;
use super::session::Session;
use crate::state::{self, Location, Lock, NewState};

/// Copy the state psk.yaml (or --state) names to DESTINATION: a local file
/// or `s3://BUCKET/PATH/psk.state.json`, so a team can move its state to a
/// bucket on day one (and back). Both are locked while copying; the copy
/// keeps the lineage and serial, so saved plans stay bound to it. A
/// destination holding another state (another lineage), or a newer serial
/// of this one, is refused. The source is left as it is.
#[derive(Debug, Args)]
pub struct MoveStateArgs {
    /// Where the state goes: a file path, or s3://BUCKET/PATH/psk.state.json.
    #[arg(value_name = "DESTINATION")]
    destination: PathBuf,

    #[command(flatten)]
    lock: LockWait,

    #[command(flatten)]
    pub files: super::args::Files,
}

pub fn run(global: &Global, args: MoveStateArgs) -> anyhow::Result<Status> {
    let session = Session::open(global)?;
    let source = session.state_path.clone();
    let dest = args.destination;
    if same_location(&source, &dest) {
        bail!(
            "{} is where the state already is; name another place to move it to",
            dest.display()
        );
    }
    let (_, _source_lock, moved) = session
        .lock("move-state", &args.lock)?
        .existing("there is nothing to move")?;
    let dest_lock = Lock::acquire(&Location::given(&dest)?, "move-state", args.lock.timeout())?;
    let there = state::load_for_write(&dest_lock, NewState::Allowed)?;
    let mut out = std::io::stdout().lock();
    if let Some(there) = &there {
        if there.lineage != moved.lineage {
            bail!(
                "{} already holds another state (lineage {}, serial {}, {} tunnel records), not a copy of {} (lineage {}).\nNothing was changed. Move to another place, or remove that state first if you are sure no one needs its keys",
                dest.display(), there.lineage, there.serial, there.tunnels.len(),
                source.display(), moved.lineage
            );
        }
        if there.serial > moved.serial {
            bail!(
                "{} holds a newer version of this state (serial {} > {}): it has changes {} lacks.\nNothing was changed. Point psk.yaml's `state:` at {} and keep it",
                dest.display(), there.serial, moved.serial, source.display(), dest.display()
            );
        }
        if there == &moved {
            writeln!(
                out,
                "{} already holds this state (serial {}). Nothing to do.",
                dest.display(),
                moved.serial
            )?;
            return Ok(Status::Success);
        }
    }
    state::write_copy(&dest_lock, &moved)?;
    drop(dest_lock);
    writeln!(
        out,
        "Copied the state (lineage {}, serial {}, {} tunnel records) from {} to {}.\nNext: set `state: {}` in {} (or pass --state), then remove {} so no one applies to the old copy.",
        moved.lineage,
        moved.serial,
        moved.tunnels.len(),
        source.display(),
        dest.display(),
        dest.display(),
        session.config.path.display(),
        source.display()
    )?;
    Ok(Status::Success)
}

fn same_location(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
