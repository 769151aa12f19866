//! One apply's journal, on whichever store holds the state.
//!
//! A whole write of the state after each of N tunnels would cost O(N²)
//! bytes, and a key must be recorded before anything acts on it. So an
//! apply stages its changes as they happen, makes them durable together
//! ([`Journal::commit`]: one group commit, one fsync or one PUT) before the
//! call they announce, and writes the whole state once, at the end
//! ([`Journal::finish`]). Every later load replays a journal a psk left
//! when it died, so every change that became durable counts.
//!
//! The bookkeeping of that (the serial each commit takes and gives back on
//! failure, what is staged and what the store durably holds, a writer that
//! lost its lock staying fenced, the counts) is the same whatever the
//! store, so it lives here once, over a [`Store`] that only says how a
//! commit becomes durable and how the whole state is written: the file
//! (`super::store::FileStore`: appended, fsynced lines) and the bucket
//! (`super::remote::store::BucketStore`: one conditional PUT per commit,
//! fenced by the lock object).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{LostLock, StateError};
use super::ledger::{Ledger, Unsaved};
use super::{State, TunnelState};
use crate::tunnel::TunnelKey;

/// What a journal needs of the store its state lives on. Each method is
/// durable when it returns.
pub(super) trait Store: std::fmt::Debug + Send {
    /// Readies the store for a journal on top of `state` as it was loaded
    /// (its journal replayed): what an interrupted writer left is folded
    /// in, what a fenced-off one left is set aside. Returns the bytes that
    /// took, or `None` when the store holds no state yet (the journal then
    /// writes it whole first, so every commit extends a state on the store).
    fn open(&mut self, state: &State) -> Result<Option<u64>, StateError>;

    /// Holds `bytes` for the journal before the first call that makes a
    /// key, so an answered key always has room to be recorded. Only a disk
    /// can fill up under psk.
    fn reserve(&mut self, _bytes: u64) -> Result<(), StateError> {
        Ok(())
    }

    /// Gives back what [`Store::reserve`] held: the final write takes it.
    fn release(&mut self) {}

    /// Makes one commit durable and returns the bytes written. A store
    /// whose lock can be taken away also proves, once the commit is
    /// durable, that this writer still owns the state (the fence): an
    /// error means nothing may act on the commit.
    fn append(&mut self, commit: &Commit<'_>) -> Result<u64, StateError>;

    /// Writes the whole state, keeping the version it replaces as the
    /// backup, and removes the journal it folds in; returns the bytes
    /// written.
    fn write_whole(&mut self, state: &State) -> Result<u64, StateError>;
}

/// Bumps the serial and writes the whole state to `store`, outside any
/// journal (a reseal, an import, a forget): any journal the store held is
/// folded in by this write, since the state was loaded with it replayed.
pub(super) fn save(store: &mut dyn Store, state: &mut State) -> Result<(), StateError> {
    state.compact_recipients();
    state.serial += 1;
    store.write_whole(state).map(|_| ())
}

/// One group commit as a store writes it.
pub(super) struct Commit<'a> {
    pub(super) lineage: &'a str,
    /// The serial of the whole state the journal extends.
    pub(super) base_serial: u64,
    /// The serial the state has once this commit is applied.
    pub(super) serial: u64,
    /// The [`Entry`] as JSON, on one line (no newline).
    pub(super) json: Vec<u8>,
}

/// One commit as stored: the whole record of every tunnel it changed (or
/// `None` for a tunnel dropped from the state), tied to the state version
/// it applies on top of. A journal line of the file, an object of the
/// bucket: the same bytes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Entry {
    pub(super) lineage: String,
    /// The serial of the state this journal extends.
    pub(super) base_serial: u64,
    /// The serial the state has once this entry is applied.
    pub(super) serial: u64,
    pub(super) changes: BTreeMap<String, Option<TunnelState>>,
}

/// [`Entry`] as written: borrows the records instead of cloning them.
#[derive(Serialize)]
struct EntryRef<'a> {
    lineage: &'a str,
    base_serial: u64,
    serial: u64,
    #[serde(serialize_with = "changes_by_key")]
    changes: Vec<(&'a TunnelKey, Option<&'a TunnelState>)>,
}

fn changes_by_key<S: serde::Serializer>(
    changes: &[(&TunnelKey, Option<&TunnelState>)],
    s: S,
) -> Result<S::Ok, S::Error> {
    super::serialize_by_key(changes.iter().map(|(k, v)| (*k, v)), s)
}

/// Applies one commit's changes. psk writes each record under its own
/// key; anything else is damage, and would act on the wrong tunnel.
pub(super) fn apply_changes(
    state: &mut State,
    changes: BTreeMap<String, Option<TunnelState>>,
) -> Result<(), &'static str> {
    for (key, record) in changes {
        let key = super::parse_key(&key)
            .filter(|k| record.as_ref().is_none_or(|r| r.key() == *k))
            .ok_or("a change names a tunnel key that does not match its record")?;
        match record {
            Some(r) => state.tunnels.insert(key, r),
            None => state.tunnels.remove(&key),
        };
    }
    Ok(())
}

/// The changes of one apply: staged as they happen, and made durable
/// together by [`Journal::commit`] before anything that depends on them,
/// such as the API call an intent announces; the whole state is written
/// once, in [`Journal::finish`].
///
/// Committing a group of changes at once (group commit) is what lets many
/// rotations in flight share the store's slowest operation: the executor
/// stages every intent it is about to act on and every answer that came
/// back, then commits once.
///
/// Only opened by the holder of the state's lock (`Lock::journal`).
#[derive(Debug)]
pub struct Journal {
    store: Box<dyn Store>,
    /// What is staged and durable, and the counts.
    ledger: Ledger,
    /// Set once a commit found this writer's lock taken: every later
    /// commit is refused at once, with no request (a fenced writer stays
    /// fenced).
    fenced: Option<LostLock>,
    /// The state's location as the user wrote it, for messages and the
    /// rescue file.
    path: PathBuf,
}

impl Journal {
    /// Starts a journal on `store` on top of `state` as loaded (journal
    /// replayed), at the location `path`. A state the store does not hold
    /// yet is written whole first.
    pub(super) fn on(
        mut store: Box<dyn Store>,
        path: &Path,
        state: &mut State,
    ) -> Result<Journal, StateError> {
        let written = match store.open(state)? {
            Some(bytes) => bytes,
            None => {
                state.serial += 1;
                store.write_whole(state)?
            }
        };
        Ok(Journal {
            store,
            ledger: Ledger::new(state, written),
            fenced: None,
            path: path.to_path_buf(),
        })
    }

    /// Room on the store for this apply's journal and final write, held
    /// from before the first API call (see [`Store::reserve`]); without
    /// it, apply refuses to start: nothing has changed on Cloudflare yet.
    pub fn reserve(&mut self, bytes: u64) -> Result<(), StateError> {
        self.store.reserve(bytes)
    }

    /// Notes that the record of `key` changed in the state. Nothing is
    /// durable until [`Journal::commit`]: call it before acting on the
    /// change.
    pub fn stage(&mut self, key: &TunnelKey) {
        self.ledger.stage(key);
    }

    /// Makes every staged change durable (the current record of each staged
    /// key in `state`, or its absence) with one commit, bumping the serial.
    /// Does nothing when nothing is staged. On failure the serial is as
    /// before and nothing counts: the changes stay staged.
    pub fn commit(&mut self, state: &mut State) -> Result<(), StateError> {
        if self.ledger.nothing_staged() {
            return Ok(());
        }
        if let Some(lost) = &self.fenced {
            return Err(lost.clone().into());
        }
        state.serial += 1;
        let entry = EntryRef {
            lineage: &self.ledger.lineage,
            base_serial: self.ledger.base_serial,
            serial: state.serial,
            changes: self.ledger.changes(state),
        };
        let commit = Commit {
            lineage: &self.ledger.lineage,
            base_serial: self.ledger.base_serial,
            serial: state.serial,
            json: serde_json::to_vec(&entry).expect("journal entry serializes"),
        };
        let started = std::time::Instant::now();
        let bytes = match self.store.append(&commit) {
            Ok(bytes) => bytes,
            Err(e) => {
                state.serial -= 1;
                if let Some(lost) = e.lost_lock() {
                    self.fenced = Some(lost.clone());
                }
                return Err(e);
            }
        };
        tracing::debug!(
            state = %self.path.display(),
            serial = state.serial,
            changes = self.ledger.staged_count(),
            bytes,
            durable_ms = started.elapsed().as_millis() as u64,
            "journal commit"
        );
        self.ledger.committed(state, bytes);
        Ok(())
    }

    /// Stages and commits one change: for callers that change one tunnel
    /// at a time.
    pub fn record(&mut self, state: &mut State, key: &TunnelKey) -> Result<(), StateError> {
        self.stage(key);
        self.commit(state)
    }

    /// Commits anything still staged, then folds the journal into the
    /// state (one whole write, the previous version kept as the backup)
    /// and removes it. A failed final write may be tried again: the
    /// journal stays until one succeeds.
    pub fn finish(&mut self, state: &mut State) -> Result<u64, StateError> {
        self.commit(state)?;
        self.store.release();
        // Replaying the journal gives the same keys with per-record lists.
        state.compact_recipients();
        if self.ledger.records() > 0 {
            let written = self.store.write_whole(state)?;
            self.ledger.wrote(written);
            tracing::info!(
                state = %self.path.display(),
                serial = state.serial,
                commits = self.ledger.commits(),
                changes = self.ledger.records(),
                bytes = self.ledger.bytes_written(),
                "journal folded into the state"
            );
        }
        Ok(self.ledger.bytes_written())
    }

    /// See [`Ledger::unsaved`].
    pub fn unsaved(&self, state: &State) -> Vec<Unsaved> {
        self.ledger.unsaved(state)
    }

    /// See [`Ledger::revert`].
    pub fn revert(&self, state: &mut State, key: &TunnelKey) {
        self.ledger.revert(state, key)
    }

    /// The state this journal extends, as the user wrote its location.
    pub fn state_path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far (state, backup and journal together), for
    /// measuring write amplification.
    pub fn bytes_written(&self) -> u64 {
        self.ledger.bytes_written()
    }

    /// Commits so far: what group commit saves.
    pub fn commits(&self) -> u64 {
        self.ledger.commits()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What the in-memory store saw.
    #[derive(Debug, Default)]
    struct Seen {
        /// The serial of each commit it made durable.
        commits: Vec<u64>,
        /// Calls to `append`, taken or not.
        appends: usize,
        wholes: usize,
        /// Whether this writer's lock is gone.
        lock_taken: bool,
    }

    /// A store in memory whose lock can be taken, to check the journal's
    /// bookkeeping apart from any real store.
    #[derive(Debug, Default, Clone)]
    struct Memory(Arc<Mutex<Seen>>);

    impl Store for Memory {
        fn open(&mut self, _state: &State) -> Result<Option<u64>, StateError> {
            Ok(None)
        }

        fn append(&mut self, commit: &Commit<'_>) -> Result<u64, StateError> {
            let mut seen = self.0.lock().unwrap();
            seen.appends += 1;
            if seen.lock_taken {
                return Err(LostLock {
                    url: "mem://state".into(),
                    id: "mine".into(),
                    holder: Some("theirs".into()),
                }
                .into());
            }
            seen.commits.push(commit.serial);
            Ok(commit.json.len() as u64)
        }

        fn write_whole(&mut self, _state: &State) -> Result<u64, StateError> {
            self.0.lock().unwrap().wholes += 1;
            Ok(1)
        }
    }

    fn key(i: usize) -> TunnelKey {
        TunnelKey::new("023e105f4ecef8ad9ca31a8372d0c353", &format!("{i:032x}"))
    }

    fn change(state: &mut State, i: usize) {
        state.entry(&key(i), &format!("t{i}")).psk = Some(format!("sealed-{i}"));
    }

    /// One serial per commit, given back when a commit fails; a writer
    /// whose lock was taken is refused from then on without asking its
    /// store again, keeps its change for the rescue, and folds nothing.
    #[test]
    fn a_fenced_writer_stays_fenced_and_its_serial_is_given_back() {
        let memory = Memory::default();
        let mut state = State::new(vec![]);
        let mut journal = Journal::on(
            Box::new(memory.clone()),
            Path::new("mem://state"),
            &mut state,
        )
        .unwrap();
        assert_eq!(state.serial, 1, "a new state is written whole first");
        assert_eq!(memory.0.lock().unwrap().wholes, 1);
        change(&mut state, 0);
        journal.record(&mut state, &key(0)).unwrap();
        assert_eq!(state.serial, 2);

        memory.0.lock().unwrap().lock_taken = true;
        change(&mut state, 1);
        let e = journal.record(&mut state, &key(1)).unwrap_err();
        assert_eq!(e.lost_lock().unwrap().holder.as_deref(), Some("theirs"));
        assert_eq!(state.serial, 2, "the failed commit's serial is given back");
        let again = journal.commit(&mut state).unwrap_err();
        assert!(again.lost_lock().is_some(), "{again}");
        assert!(journal
            .finish(&mut state)
            .unwrap_err()
            .lost_lock()
            .is_some());
        let seen = memory.0.lock().unwrap();
        assert_eq!(seen.appends, 2, "fenced once, never asked again");
        assert_eq!(seen.commits, vec![2]);
        assert_eq!(seen.wholes, 1, "nothing folded");
        let unsaved = journal.unsaved(&state);
        assert_eq!(unsaved.len(), 1);
        assert_eq!(unsaved[0].key, key(1));
        assert_eq!((journal.commits(), state.serial), (1, 2));
    }
}
