//! The seam between the state's two homes: a file beside psk.yaml
//! ([`super::store`], [`super::lock`]) or an object on a store
//! ([`super::remote`]). The location is a path either way (`s3://...` is a
//! valid path), so commands keep one `state_path` and this module picks the
//! store; each store keeps its own guarantees and tests.

use std::path::Path;
use std::time::Duration;

use super::remote::{self, Remote, RemoteError, RemoteJournal, RemoteLock};
use super::store::{self, StateError, Unsaved};
use super::{LockError, NewState, State, StateLock};
use crate::tunnel::TunnelKey;

/// The remote state `path` names, if it names one.
pub(super) fn remote_of(path: &Path) -> Result<Option<Remote>, RemoteError> {
    Remote::parse(path).transpose()
}

/// The writer's lock, held for as long as this value lives.
#[derive(Debug)]
pub enum Lock {
    File(StateLock),
    Remote(RemoteLock),
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockFailed {
    #[error(transparent)]
    File(#[from] LockError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

impl Lock {
    /// Takes the lock of the state at `path`, waiting up to `timeout`.
    pub fn acquire(path: &Path, operation: &str, timeout: Duration) -> Result<Lock, LockFailed> {
        Ok(match remote_of(path)? {
            Some(r) => Lock::Remote(RemoteLock::acquire(&r, operation, timeout)?),
            None => Lock::File(StateLock::acquire(path, operation, timeout)?),
        })
    }
}

/// Reads the state at `path`, file or object, replaying any journal.
pub(super) fn load(path: &Path, new_state: NewState) -> Result<Option<State>, StateError> {
    match remote_of(path)? {
        Some(r) => remote::store::load_guarded(&r, new_state),
        None => store::load(path, new_state),
    }
}

/// [`load`] for the writer holding `lock`: a left journal is folded first.
pub(super) fn load_for_write(
    path: &Path,
    lock: &Lock,
    new_state: NewState,
) -> Result<Option<State>, StateError> {
    match (remote_of(path)?, lock) {
        (Some(r), Lock::Remote(_)) => remote::store::load_for_write(&r, new_state),
        (None, Lock::File(l)) => store::load_for_write(path, l, new_state),
        _ => unreachable!("a lock is taken on the location it is loaded from"),
    }
}

/// Bumps the serial and writes the whole state.
pub(super) fn save(path: &Path, state: &mut State) -> Result<(), StateError> {
    match remote_of(path)? {
        Some(r) => remote::store::save(&r, state),
        None => store::save(path, state),
    }
}

/// The journal of one apply, on the state's own store (see
/// [`store::Journal`] for the contract both keep).
#[derive(Debug)]
pub enum Journal {
    File(store::Journal),
    Remote(RemoteJournal),
}

impl Journal {
    pub fn open(path: &Path, state: &mut State) -> Result<Journal, StateError> {
        Ok(match remote_of(path)? {
            Some(r) => Journal::Remote(RemoteJournal::open(&r, state)?),
            None => Journal::File(store::Journal::open(path, state)?),
        })
    }

    /// Room on the local disk; a remote journal needs none.
    pub fn reserve(&mut self, bytes: u64) -> Result<(), StateError> {
        match self {
            Journal::File(j) => j.reserve(bytes),
            Journal::Remote(_) => Ok(()),
        }
    }

    pub fn stage(&mut self, key: &TunnelKey) {
        match self {
            Journal::File(j) => j.stage(key),
            Journal::Remote(j) => j.stage(key),
        }
    }

    pub fn commit(&mut self, state: &mut State) -> Result<(), StateError> {
        match self {
            Journal::File(j) => j.commit(state),
            Journal::Remote(j) => j.commit(state),
        }
    }

    pub fn record(&mut self, state: &mut State, key: &TunnelKey) -> Result<(), StateError> {
        self.stage(key);
        self.commit(state)
    }

    pub fn finish(&mut self, state: &mut State) -> Result<u64, StateError> {
        match self {
            Journal::File(j) => j.finish(state),
            Journal::Remote(j) => j.finish(state),
        }
    }

    pub fn unsaved(&self, state: &State) -> Vec<Unsaved> {
        match self {
            Journal::File(j) => j.unsaved(state),
            Journal::Remote(j) => j.unsaved(state),
        }
    }

    pub fn revert(&self, state: &mut State, key: &TunnelKey) {
        match self {
            Journal::File(j) => j.revert(state, key),
            Journal::Remote(j) => j.revert(state, key),
        }
    }

    pub fn state_path(&self) -> &Path {
        match self {
            Journal::File(j) => j.state_path(),
            Journal::Remote(j) => j.state_path(),
        }
    }

    pub fn bytes_written(&self) -> u64 {
        match self {
            Journal::File(j) => j.bytes_written(),
            Journal::Remote(j) => j.bytes_written(),
        }
    }

    pub fn commits(&self) -> u64 {
        match self {
            Journal::File(j) => j.commits(),
            Journal::Remote(j) => j.commits(),
        }
    }
}
