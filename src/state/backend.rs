//! The seam between the state's two homes: a file beside psk.yaml
//! ([`super::store`], [`super::lock`]) or an object on a store
//! ([`super::remote`]). The [`Location`] was parsed once, by the session;
//! the writer's [`Lock`] carries it (and with it the bucket's client and
//! the version read), so every write goes to the store that was read.

use std::path::Path;
use std::time::Duration;

use super::ledger::Unsaved;
use super::location::Location;
use super::remote::{self, RemoteError, RemoteJournal, RemoteLock};
use super::store::{self, StateError};
use super::{LockError, NewState, State, StateLock};
use crate::tunnel::TunnelKey;

/// The writer's lock, held for as long as this value lives, on the
/// location it was taken on.
#[derive(Debug)]
pub struct Lock {
    location: Location,
    guard: Guard,
}

#[derive(Debug)]
enum Guard {
    File(StateLock),
    Bucket(RemoteLock),
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
    /// Takes the lock of the state at `location`, waiting up to `timeout`.
    pub fn acquire(
        location: &Location,
        operation: &str,
        timeout: Duration,
    ) -> Result<Lock, LockFailed> {
        let guard = match location {
            Location::Bucket(r) => Guard::Bucket(RemoteLock::acquire(r, operation, timeout)?),
            Location::File(p) => Guard::File(StateLock::acquire(p, operation, timeout)?),
        };
        Ok(Lock {
            location: location.clone(),
            guard,
        })
    }

    /// Where the locked state lives.
    pub fn location(&self) -> &Location {
        &self.location
    }
}

/// Reads the state at `location`, file or object, replaying any journal.
pub(super) fn load(location: &Location, new_state: NewState) -> Result<Option<State>, StateError> {
    match location {
        Location::Bucket(r) => remote::store::load_guarded(r, new_state),
        Location::File(p) => store::load(p, new_state),
    }
}

/// [`load`] for the writer holding `lock`: a left journal is folded first.
pub(super) fn load_for_write(
    lock: &Lock,
    new_state: NewState,
) -> Result<Option<State>, StateError> {
    match &lock.guard {
        Guard::Bucket(l) => remote::store::load_for_write(l, new_state),
        Guard::File(l) => store::load_for_write(l.state_path(), l, new_state),
    }
}

/// Bumps the serial and writes the whole state, under `lock`.
pub(super) fn save(lock: &Lock, state: &mut State) -> Result<(), StateError> {
    match &lock.guard {
        Guard::Bucket(l) => remote::store::save(l.remote(), state),
        Guard::File(l) => store::save(l.state_path(), state),
    }
}

/// The journal of one apply, on the state's own store (see
/// [`store::Journal`] for the contract both keep).
#[derive(Debug)]
pub enum Journal {
    File(store::Journal),
    Remote(Box<RemoteJournal>),
}

impl Journal {
    /// Starts the journal of one apply on the state `lock` holds.
    pub fn open(lock: &Lock, state: &mut State) -> Result<Journal, StateError> {
        Ok(match &lock.guard {
            Guard::Bucket(l) => Journal::Remote(Box::new(RemoteJournal::open(l, state)?)),
            Guard::File(l) => Journal::File(store::Journal::open(l.state_path(), state)?),
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
