//! Why the state could not be read or written, with what to do about it:
//! one error type for every store (the file and the bucket), so the
//! journal above them and the commands that report them match on one
//! vocabulary, whichever store said it.

use std::io;
use std::path::{Path, PathBuf};

use super::STATE_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("state file {path} is not valid psk state: {message} (line {line}, column {column}).\nIt was not changed. {}", restore_hint(.backup.as_deref()))]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        /// The backup beside the state, when there is one.
        backup: Option<PathBuf>,
    },
    /// A merge or rebase left both sides of the state in the file.
    #[error("state file {path} has git conflict markers (`<<<<<<<` at line {line}, column 1): a merge or rebase left two versions of it in one file.\nIt was not changed. Take one side whole, never merge its keys by hand (a hand-merged record can pair a sealed PSK with the wrong tunnel, or lose one): `git checkout --theirs -- {path}` or `--ours`, usually the side with the higher `serial`, then `git add {path}`. `psk plan` then shows any tunnel the other side rotated as changed outside psk, and rotates it again")]
    Conflict { path: PathBuf, line: usize },
    #[error("state file {path} has format version {found} (line {line}), but this psk reads up to version {STATE_VERSION}.\nUpgrade psk; the file was not changed.{}", not_the_backup(.backup.as_deref()))]
    TooNew {
        path: PathBuf,
        found: u64,
        line: usize,
        /// The backup beside the state, when there is one.
        backup: Option<PathBuf>,
    },
    #[error("state journal {path} is damaged at line {line}: {message}.\nNeither it nor the state was changed. It holds changes an interrupted apply made after the last full write of {state}; keep a copy and ask for help before removing it")]
    Journal {
        path: PathBuf,
        state: PathBuf,
        line: usize,
        message: String,
    },
    #[error("found the state journal {journal} but no state file {path}.\nThe journal holds changes to that state (maybe sealed PSKs): restore {path} (from git or {backup}) rather than starting over; remove the journal only if you mean to abandon those keys")]
    OrphanJournal {
        path: PathBuf,
        journal: PathBuf,
        backup: PathBuf,
    },
    #[error("cannot write state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// No room beside the state for what an apply will write.
    #[error("not enough room beside {path} for this apply: its journal and final write need {needed} bytes ({source}).\nNothing was changed on Cloudflare. Free space on that filesystem (or raise the quota) and apply again")]
    NoRoom {
        path: PathBuf,
        needed: u64,
        source: io::Error,
    },
    /// The state is gone but psk's files beside it are not.
    #[error("{0}")]
    Missing(super::missing::Traces),
    /// The state on object storage (see [`super::remote`]).
    #[error(transparent)]
    Remote(#[from] super::remote::RemoteError),
    /// This writer's lock was taken: a fencing check refused its commit.
    #[error(transparent)]
    Fenced(#[from] LostLock),
}

/// What to restore a damaged state from: the backup beside it when there
/// is one, else only git (a state written once has no backup yet).
fn restore_hint(backup: Option<&Path>) -> String {
    match backup {
        Some(b) => format!(
            "The previous version is kept in {}: compare the two, and restore the backup (or the file from git) only if you know this one is damaged",
            b.display()
        ),
        None => "There is no backup beside it (psk keeps one from its second write on): restore the file from git only if you know this one is damaged".to_string(),
    }
}

/// Why the backup of a state a newer psk wrote is no way out, when there
/// is a backup to be tempted by.
fn not_the_backup(backup: Option<&Path>) -> String {
    match backup {
        Some(b) => format!(
            " Do not restore {} over it: a newer psk wrote it, and the backup lacks its latest changes",
            b.display()
        ),
        None => String::new(),
    }
}
/// A writer whose lock was taken from it while it lived (`psk
/// force-unlock` of a psk that looked dead, then another writer's lock):
/// it must change nothing more. Kept by the journal, so every later commit
/// is refused with the same words and no request (a fenced writer stays
/// fenced).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this psk lost the lock of {url} while it waited on the store (lock ID {id}); {}.\nSomeone ran `psk force-unlock {id}` and the state moved on without this psk. It made no call to Cloudflare after that and changes nothing more: what it had not started stays undone, for the next plan to show. Its last journal object on the store is set aside by the next psk, never replayed", self.now())]
pub struct LostLock {
    /// The state, as the user wrote its location.
    pub url: String,
    /// The lock ID this writer held: its fencing token.
    pub id: String,
    /// Who holds the lock now (user@host, pid, operation, since, lock
    /// ID); `None` when no one does: its lock object was removed.
    pub holder: Option<String>,
}

impl LostLock {
    /// Where the lock went, as a clause.
    pub fn now(&self) -> String {
        match &self.holder {
            Some(h) => format!("it is now held by {h}"),
            None => {
                "no one holds it now: its lock object was removed (`psk force-unlock`)".to_string()
            }
        }
    }
}

impl StateError {
    /// The lock this writer lost, when that is why it failed: no retry
    /// can help then.
    pub fn lost_lock(&self) -> Option<&LostLock> {
        match self {
            StateError::Fenced(l) => Some(l),
            _ => None,
        }
    }
}
