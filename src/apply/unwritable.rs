//! When the state cannot be written: retry, stop, rescue.
//!
//! A journal commit that fails (a full disk, EIO, a read-only remount, a
//! quota) is tried again a few times, the keys staying sealed in memory.
//! If it still fails, the apply makes no further call to Cloudflare: the
//! rotations not yet started never start, those in flight are let answer
//! (their keys exist on the edge now), and every change the disk does not
//! hold goes, sealed as in the state, to a rescue file elsewhere
//! (`state::rescue`), with the command that takes it back.

use std::path::PathBuf;
use std::time::Duration;

use super::Run;
use crate::state::rescue::Rescue;
use crate::state::{Journal, State, StateError};

/// Waits before each new attempt of a failed commit: a disk that was full
/// for a moment (another writer, a log rotation) gets a little time.
const RETRY: crate::backoff::Backoff =
    crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).tries(3);

/// Why an apply stopped because its state could not be written. Each says
/// where every key it made is.
#[derive(Debug, thiserror::Error)]
pub enum Unwritable {
    #[error("{error}\nThe apply stopped there: psk makes no call to Cloudflare it cannot record. {} new tunnel record{} the state could not take ({}) {} sealed in the rescue file {rescue}, as the state would hold them (no PSK in plaintext). Once the state can be written again (its disk has room and is writable, or its bucket answers), take them back into the state with:\n  psk recover {rescue}", .names.len(), if .names.len() == 1 { "" } else { "s" }, .names.join(", "), if .names.len() == 1 { "is" } else { "are" })]
    Rescued {
        error: StateError,
        rescue: PathBuf,
        names: Vec<String>,
    },
    #[error("{error}\nThe apply stopped there: psk makes no call to Cloudflare it cannot record. Every change it made is in the journal beside the state, which the next psk command folds in: nothing was lost")]
    Stopped { error: StateError },
    #[error("{error}\nThe apply stopped there: psk makes no call to Cloudflare it cannot record. No rescue file could be written either:\n{tried}\nThe sealed records of {names} follow between the two marker lines (sealed with age, as the state holds them: no PSK in plaintext). Save them to a file and, once a disk is writable, run `psk recover FILE`:\n-----BEGIN PSK RESCUE-----\n{text}-----END PSK RESCUE-----")]
    Nowhere {
        error: StateError,
        tried: String,
        names: String,
        text: String,
    },
    #[error("{error}\nEvery change of this apply is in the journal beside the state, which the next psk command folds in: nothing was lost. Once the state can be written again (free or remount the disk, or wait for the bucket), run `psk plan`")]
    Unfolded { error: StateError },
}

/// The delays between attempts; none in tests of faults.
pub fn retry_delays() -> impl Iterator<Item = Duration> {
    RETRY.from_env().delays()
}

/// Folds the journal into the state file, trying again as a commit does;
/// when it cannot, every change is still in the journal.
pub async fn fold(journal: &mut Journal, state: &mut State) -> Result<(), Unwritable> {
    let mut delays = retry_delays();
    loop {
        let Err(source) = journal.finish(state) else {
            return Ok(());
        };
        let Some(delay) = delays.next() else {
            return Err(Unwritable::Unfolded { error: source });
        };
        tracing::warn!(error = %source, retry_in_ms = delay.as_millis() as u64, "state file not written; retrying");
        tokio::time::sleep(delay).await;
    }
}

/// After the apply stopped on `source`: one last commit (the disk may be
/// back), else the rescue file.
pub fn rescue(run: &mut Run<'_>, source: StateError) -> Unwritable {
    if run.journal.commit(run.state).is_ok() {
        return Unwritable::Stopped { error: source };
    }
    let unsaved = run.journal.unsaved(run.state);
    if unsaved.is_empty() {
        return Unwritable::Stopped { error: source };
    }
    let rescue = Rescue::new(
        run.journal.state_path(),
        run.state,
        &unsaved,
        chrono::Utc::now(),
    );
    let names = rescue.names();
    match rescue.write() {
        Ok(path) => {
            tracing::warn!(rescue = %path.display(), tunnels = names.len(), "unsaved records written to a rescue file");
            Unwritable::Rescued {
                error: source,
                rescue: path,
                names,
            }
        }
        Err(tried) => Unwritable::Nowhere {
            error: source,
            tried: (tried.iter())
                .map(|(p, e)| format!("  {}: {e}", p.display()))
                .collect::<Vec<_>>()
                .join("\n"),
            names: names.join(", "),
            text: String::from_utf8(rescue.to_bytes()).expect("JSON is UTF-8"),
        },
    }
}
