//! The bookkeeping of one apply's journal, kept once for either store (a
//! file's appended lines, a bucket's commit objects): what is staged, what
//! each record is as the store durably holds it, and the counts. The store
//! only says how a commit becomes durable; what a commit holds, what a
//! rescue must keep when it cannot, and what a change that will never start
//! is reverted to are decided here.

use std::collections::{BTreeMap, BTreeSet};

use super::{State, TunnelState};
use crate::tunnel::TunnelKey;

/// A change to one tunnel's record that is in memory but not on disk:
/// the record as the disk holds it (`before`) and as it is now (`after`);
/// `None` is no record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsaved {
    pub key: TunnelKey,
    pub before: Option<TunnelState>,
    pub after: Option<TunnelState>,
}

#[derive(Debug)]
pub(super) struct Ledger {
    pub(super) lineage: String,
    /// The serial of the whole state this journal extends.
    pub(super) base_serial: u64,
    /// Keys changed in the state since the last commit.
    staged: BTreeSet<TunnelKey>,
    /// Each record as the store last durably holds it (state plus
    /// commits), so a commit that cannot be written can say what it would
    /// have changed (see [`Ledger::unsaved`]).
    durable: BTreeMap<TunnelKey, TunnelState>,
    records: u64,
    commits: u64,
    bytes_written: u64,
}

impl Ledger {
    /// The journal of `state` as it is durable now, after `bytes_written`
    /// bytes (a first whole write, a fold of an interrupted journal).
    pub(super) fn new(state: &State, bytes_written: u64) -> Ledger {
        Ledger {
            lineage: state.lineage.clone(),
            base_serial: state.serial,
            staged: BTreeSet::new(),
            durable: state.tunnels.clone(),
            records: 0,
            commits: 0,
            bytes_written,
        }
    }

    pub(super) fn stage(&mut self, key: &TunnelKey) {
        self.staged.insert(key.clone());
    }

    pub(super) fn nothing_staged(&self) -> bool {
        self.staged.is_empty()
    }

    pub(super) fn staged_count(&self) -> usize {
        self.staged.len()
    }

    /// What the next commit holds: the current record of each staged key
    /// in `state`, or its absence.
    pub(super) fn changes<'a>(
        &'a self,
        state: &'a State,
    ) -> Vec<(&'a TunnelKey, Option<&'a TunnelState>)> {
        (self.staged.iter())
            .map(|k| (k, state.tunnels.get(k)))
            .collect()
    }

    /// Everything staged is durable now, after a commit of `bytes`.
    pub(super) fn committed(&mut self, state: &State, bytes: u64) {
        self.records += self.staged.len() as u64;
        self.commits += 1;
        for k in std::mem::take(&mut self.staged) {
            match state.tunnels.get(&k) {
                Some(r) => self.durable.insert(k, r.clone()),
                None => self.durable.remove(&k),
            };
        }
        self.bytes_written += bytes;
    }

    /// `bytes` more written (the final whole write).
    pub(super) fn wrote(&mut self, bytes: u64) {
        self.bytes_written += bytes;
    }

    /// The changes staged but not yet durable, each with the record the
    /// store still holds: what a rescue must keep when the journal cannot
    /// be written (a staged record that is back to what the store holds is
    /// left out).
    pub(super) fn unsaved(&self, state: &State) -> Vec<Unsaved> {
        (self.staged.iter())
            .map(|k| Unsaved {
                key: k.clone(),
                before: self.durable.get(k).cloned(),
                after: state.tunnels.get(k).cloned(),
            })
            .filter(|u| u.before != u.after)
            .collect()
    }

    /// Puts the record of `key` back to what the store holds: for a change
    /// staged for work that will now never start (its intent, or a pending
    /// key never sent), so it is neither written nor rescued.
    pub(super) fn revert(&self, state: &mut State, key: &TunnelKey) {
        match self.durable.get(key) {
            Some(r) => state.tunnels.insert(key.clone(), r.clone()),
            None => state.tunnels.remove(key),
        };
    }

    /// Changes committed so far.
    pub(super) fn records(&self) -> u64 {
        self.records
    }

    /// Commits so far: what group commit saves.
    pub(super) fn commits(&self) -> u64 {
        self.commits
    }

    /// Bytes written so far (state, backup and journal together), for
    /// measuring write amplification.
    pub(super) fn bytes_written(&self) -> u64 {
        self.bytes_written
    }
}
