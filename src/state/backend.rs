//! The seam between the state's two homes: a file beside psk.yaml
//! ([`super::store`], [`super::lock`]) or an object on a store
//! ([`super::remote`]). The [`Location`] was parsed once, by the session;
//! the writer's [`Lock`] carries it (and with it the bucket's client and
//! the version read), and is the one place that picks the [`Store`] a
//! write goes through, so every write goes to the store that was read.

use std::time::Duration;

use super::error::StateError;
use super::journal::{self, Journal, Store};
use super::location::Location;
use super::remote::{self, BucketStore, RemoteError, RemoteLock};
use super::store::{self, FileStore};
use super::{LockError, NewState, State, StateLock};

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

    /// Starts the journal of one apply on the state this lock holds,
    /// `state` as it was loaded under it.
    pub fn journal(&self, state: &mut State) -> Result<Journal, StateError> {
        Journal::on(self.store(), self.location.path(), state)
    }

    /// The store the holder of this lock writes through.
    fn store(&self) -> Box<dyn Store> {
        match &self.guard {
            Guard::File(l) => Box::new(FileStore::new(l.state_path())),
            Guard::Bucket(l) => Box::new(BucketStore::new(l)),
        }
    }
}

/// Reads the state at `location`, file or object, replaying any journal.
pub(super) fn load(location: &Location, new_state: NewState) -> Result<Option<State>, StateError> {
    match location {
        Location::Bucket(r) => remote::store::load_guarded(r, new_state),
        Location::File(p) => store::load(p, new_state),
    }
}

/// [`load`] for the writer holding `lock`: what an interrupted writer left
/// is folded in (and a fenced-off one's set aside) right away, so the
/// writer starts from one whole state.
pub(super) fn load_for_write(
    lock: &Lock,
    new_state: NewState,
) -> Result<Option<State>, StateError> {
    let mut state = match &lock.guard {
        Guard::Bucket(l) => remote::store::load_guarded(l.remote(), new_state)?,
        Guard::File(l) => {
            super::warn_if_world_writable(l.state_path());
            let new_state = match new_state {
                NewState::IfNoTraces => NewState::IfNoTracesLockWasReleased(l.found_released()),
                other => other,
            };
            store::load(l.state_path(), new_state)?
        }
    };
    if let Some(s) = state.as_mut() {
        lock.journal(s)?;
    }
    Ok(state)
}

/// Bumps the serial and writes the whole state, under `lock`.
pub(super) fn save(lock: &Lock, state: &mut State) -> Result<(), StateError> {
    journal::save(&mut *lock.store(), state)
}

/// Writes `state` as it is (same lineage and serial: a copy, for
/// `move-state`) over what `lock` holds, its version read under it.
pub(super) fn write_copy(lock: &Lock, state: &State) -> Result<u64, StateError> {
    lock.store().write_whole(state)
}
