//! Reading and writing the state object, and its journal on the store.
//!
//! Every write of the state is conditional on the version psk last read
//! (`If-Match: <etag>`, or `If-None-Match: *` for a state that did not
//! exist): a second writer gets [`RemoteError::Conflict`] and nothing is
//! overwritten. The version read travels with the location (a table keyed
//! by URL, for this process), so the [`State`] type and every command that
//! loads then saves work unchanged on either store.
//!
//! The journal is one object per group commit, created with
//! `If-None-Match: *` under `<state>.journal/`, named by lineage, base
//! serial and serial. An object PUT is atomic, so there are no torn lines:
//! an object either is there whole, and counts, or is not.

use futures_util::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{Remote, RemoteError, RemoteLock, Seen};
use crate::state::ledger::{Ledger, Unsaved};
use crate::state::store::{self as file_store, Entry, EntryRef, StateError};
use crate::state::{NewState, State};
use crate::tunnel::TunnelKey;

impl Remote {
    /// What this process last read or wrote of the object.
    fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn remember(&self, seen: Seen) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
    }
}

/// The version of `remote` this process last read or wrote (`None`: it
/// had no state object), for `move-state` and tests.
pub fn version_read(remote: &Remote) -> Option<String> {
    remote.seen().version.and_then(|v| v.e_tag)
}

/// Reads the state object and replays its journal; `Ok(None)` when there
/// is no state object (and no journal).
pub fn load(remote: &Remote) -> Result<Option<State>, StateError> {
    load_guarded(remote, NewState::Allowed)
}

/// [`load`], refusing to start afresh where a state went missing (its
/// `<state>.backup` is still there) unless `new_state` allows it: a new
/// state would forget every key the missing one held.
pub fn load_guarded(remote: &Remote, new_state: NewState) -> Result<Option<State>, StateError> {
    let state = load_unguarded(remote)?;
    if state.is_none() && new_state != NewState::Allowed {
        let backup = remote.sibling(".backup");
        let found = remote
            .call(async {
                match remote.store.head(&backup).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .map_err(remote.store_err("look for the backup of"))?;
        if found {
            return Err(RemoteError::Missing {
                url: remote.url.clone(),
            }
            .into());
        }
    }
    Ok(state)
}

fn load_unguarded(remote: &Remote) -> Result<Option<State>, StateError> {
    let got = remote
        .call(async {
            match remote.store.get(&remote.key).await {
                Ok(r) => {
                    let meta = r.meta.clone();
                    r.bytes().await.map(|b| Some((b.to_vec(), meta)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .map_err(remote.store_err("read the state"))?;
    let journal = read_journal(remote)?;
    let Some((bytes, meta)) = got else {
        if !journal.is_empty() {
            return Err(RemoteError::OrphanJournal {
                url: remote.url.clone(),
            }
            .into());
        }
        remote.remember(Seen::default());
        return Ok(None);
    };
    let mut state = file_store::parse(std::path::Path::new(&remote.url), &bytes)?;
    let names: Vec<ObjectPath> = journal.iter().map(|(n, _)| n.clone()).collect();
    let (replayed, fenced) = replay(remote, &mut state, journal)?;
    if !fenced.is_empty() {
        tracing::warn!(state = %remote.url, objects = fenced.len(), "journal objects of a writer whose lock was taken; not replayed");
    }
    remote.remember(Seen {
        version: Some(UpdateVersion {
            e_tag: meta.e_tag,
            version: meta.version,
        }),
        bytes: Some(bytes),
        journal: names.into_iter().filter(|n| !fenced.contains(n)).collect(),
        replayed,
        fenced,
    });
    Ok(Some(state))
}

/// Every journal object, in name order (lineage, base serial, serial).
fn read_journal(remote: &Remote) -> Result<Vec<(ObjectPath, Entry)>, StateError> {
    let prefix = remote.sibling(".journal");
    let objects = remote
        .call(async {
            let mut metas: Vec<_> = remote.store.list(Some(&prefix)).try_collect().await?;
            metas.sort_by(|a: &object_store::ObjectMeta, b| a.location.cmp(&b.location));
            let mut out = Vec::with_capacity(metas.len());
            for m in metas {
                let bytes = remote.store.get(&m.location).await?.bytes().await?;
                out.push((m.location, bytes));
            }
            Ok::<_, object_store::Error>(out)
        })
        .map_err(remote.store_err("read the journal of"))?;
    objects
        .into_iter()
        .map(|(name, bytes)| {
            serde_json::from_slice::<Entry>(&bytes)
                .map(|e| (name.clone(), e))
                .map_err(|e| {
                    RemoteError::Journal {
                        url: remote.url.clone(),
                        message: format!(
                            "the object {name} is not a journal commit: {}",
                            file_store::describe_json_error(&e)
                        ),
                    }
                    .into()
                })
        })
        .collect()
}

/// Applies the journal objects that extend `state`; returns how many, and
/// the objects set apart as a fenced-off writer's.
///
/// The objects of another base are either folded in already (psk died
/// between writing the state and removing them), and then the state holds
/// every record they wrote, so they are ignored; or they are not: a writer
/// whose lock was taken went on committing after the state moved on. Those
/// are never replayed over the newer state (they would undo its changes),
/// nor dropped (they may hold the record of a key): the next writer moves
/// them under `<state>.fenced/` (see [`RemoteJournal::open`]).
fn replay(
    remote: &Remote,
    state: &mut State,
    journal: Vec<(ObjectPath, Entry)>,
) -> Result<(usize, Vec<ObjectPath>), StateError> {
    let jerr = |message: String| {
        StateError::from(RemoteError::Journal {
            url: remote.url.clone(),
            message,
        })
    };
    let base = state.serial;
    let (ours, others): (Vec<_>, Vec<_>) = journal
        .into_iter()
        .partition(|(_, e)| e.lineage == state.lineage && e.base_serial == base);
    if let Some((name, e)) = others.iter().find(|(_, e)| e.lineage != state.lineage) {
        return Err(jerr(format!(
            "the object {name} belongs to another state (lineage {}, not {})",
            e.lineage, state.lineage
        )));
    }
    let other_names: Vec<ObjectPath> = others.iter().map(|(n, _)| n.clone()).collect();
    let fenced = match check_folded(state, others) {
        Ok(()) => Vec::new(),
        Err(why) => {
            tracing::warn!(state = %remote.url, %why, "journal objects set apart");
            other_names
        }
    };
    let n = ours.len();
    for (name, e) in ours {
        if e.serial != state.serial + 1 {
            return Err(jerr(format!(
                "the object {name} has serial {}, but the commit before it left serial {}",
                e.serial, state.serial
            )));
        }
        state.serial = e.serial;
        file_store::apply_changes(state, e.changes)
            .map_err(|m| jerr(format!("the object {name}: {m}")))?;
    }
    if n > 0 {
        tracing::info!(state = %remote.url, commits = n, serial = state.serial, "journal of an interrupted apply replayed from the store");
    }
    Ok((n, fenced))
}

/// `Ok` when `state` already holds every record `objects` wrote: applying
/// them again (in name order, which is commit order) changes nothing.
fn check_folded(state: &State, objects: Vec<(ObjectPath, Entry)>) -> Result<(), String> {
    let Some((first, _)) = objects.first() else {
        return Ok(());
    };
    let first = first.clone();
    let mut again = state.clone();
    for (name, e) in objects {
        if e.lineage != state.lineage {
            return Err(format!(
                "the object {name} belongs to another state (lineage {}, not {})",
                e.lineage, state.lineage
            ));
        }
        file_store::apply_changes(&mut again, e.changes)
            .map_err(|m| format!("the object {name}: {m}"))?;
    }
    let mut held = state.clone();
    held.compact_recipients();
    again.compact_recipients();
    if again.tunnels != held.tunnels {
        return Err(format!(
            "objects from {first} on hold changes the state (serial {}) does not: they were written after that state was read, by a writer whose lock was taken from it",
            state.serial
        ));
    }
    tracing::info!(object = %first, "journal objects already folded into the state; ignored");
    Ok(())
}

/// [`load`] for a writer holding the lock: a journal an interrupted apply
/// left is folded into the state object right away.
pub fn load_for_write(lock: &RemoteLock, new_state: NewState) -> Result<Option<State>, StateError> {
    let mut state = load_guarded(lock.remote(), new_state)?;
    if let Some(s) = state.as_mut() {
        RemoteJournal::open(lock, s)?;
    }
    Ok(state)
}

/// Bumps the serial and writes the whole state, conditional on the
/// version read.
pub fn save(remote: &Remote, state: &mut State) -> Result<(), StateError> {
    state.compact_recipients();
    state.serial += 1;
    write_whole(remote, state, &[]).map(|_| ())
}

/// Writes `bytes` as the state object as they are (no serial bump), for
/// `move-state`: conditional on the version read, like every write.
pub fn write_bytes(remote: &Remote, bytes: Vec<u8>) -> Result<u64, StateError> {
    put_state(remote, bytes)
}

/// Keeps the version read as `<state>.backup`, writes the state on the
/// condition that it is still that version, then removes the journal
/// objects it folds in (`extra` and those read). Returns bytes written.
fn write_whole(remote: &Remote, state: &State, extra: &[ObjectPath]) -> Result<u64, StateError> {
    let written = put_state(remote, state.to_bytes())?;
    let mut gone = std::mem::take(
        &mut remote
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .journal,
    );
    gone.extend_from_slice(extra);
    remove(remote, &gone)?;
    Ok(written)
}

fn put_state(remote: &Remote, bytes: Vec<u8>) -> Result<u64, StateError> {
    let before = remote.seen();
    let mode = match before.version.clone() {
        Some(v) => PutMode::Update(v),
        None => PutMode::Create,
    };
    let put = remote.call(remote.store.put_opts(
        &remote.key,
        PutPayload::from(bytes.clone()),
        PutOptions::from(mode),
    ));
    let result = match put {
        Ok(r) => r,
        Err(
            object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. },
        ) => {
            return Err(RemoteError::Conflict {
                url: remote.url.clone(),
            }
            .into())
        }
        Err(e) => return Err(remote.store_err("write the state")(e).into()),
    };
    let mut written = bytes.len() as u64;
    remote.remember(Seen {
        version: Some(UpdateVersion {
            e_tag: result.e_tag,
            version: result.version,
        }),
        bytes: Some(bytes),
        ..before.clone()
    });
    // The version replaced, kept beside it once the swap succeeded (a
    // refused writer must not touch it either). With bucket versioning
    // on, every version is kept anyway.
    if let Some(previous) = before.bytes {
        written += previous.len() as u64;
        let backup = remote.sibling(".backup");
        remote
            .call(remote.store.put(&backup, PutPayload::from(previous)))
            .map_err(remote.store_err("write the backup of"))?;
    }
    Ok(written)
}

fn remove(remote: &Remote, objects: &[ObjectPath]) -> Result<(), StateError> {
    remote
        .call(async {
            for o in objects {
                match remote.store.delete(o).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .map_err(|e| remote.store_err("remove the folded journal of")(e).into())
}

/// Moves the journal objects a fenced-off writer left under
/// `<state>.fenced/`, where no one replays them and nothing removes them:
/// they may hold the record of a key that writer made (its rescue file
/// holds it too, and `psk recover` takes it).
fn set_aside(remote: &Remote, objects: &[ObjectPath]) -> Result<(), StateError> {
    let aside = remote.sibling(".fenced");
    remote
        .call(async {
            for o in objects {
                let name = o.filename().unwrap_or("object");
                let to = ObjectPath::from(format!("{aside}/{name}"));
                remote.store.copy(o, &to).await?;
                match remote.store.delete(o).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .map_err(remote.store_err("set aside the late journal objects of"))?;
    tracing::warn!(state = %remote.url, objects = objects.len(), "late journal objects set aside");
    eprintln!(
        "psk: warning: {} journal object{} under {}.journal/ {} written by a psk whose lock was taken from it, after the state had moved on: never replayed, now kept under {}.fenced/. Any key that psk made after losing its lock is in its rescue file; take it back with `psk recover FILE` on that machine",
        objects.len(),
        if objects.len() == 1 { "" } else { "s" },
        remote.url,
        if objects.len() == 1 { "was" } else { "were" },
        remote.url
    );
    Ok(())
}

/// The journal of one apply on the store: see [`crate::state::store::Journal`],
/// whose contract it keeps. A commit is one object, created with
/// `If-None-Match: *`, and durable when the PUT returns.
#[derive(Debug)]
pub struct RemoteJournal {
    remote: Remote,
    /// The lock ID this journal's writer holds: its fencing token.
    owner: String,
    /// Set once a commit found the lock taken: every later commit is
    /// refused at once, with no request (a fenced writer stays fenced).
    fenced: Option<RemoteError>,
    /// What is staged and durable, and the counts (shared with the file's
    /// journal).
    ledger: Ledger,
    /// The commit objects this journal wrote, removed by the final write.
    written: Vec<ObjectPath>,
    /// The location, as a path, for the rescue file's message.
    path: std::path::PathBuf,
}

impl RemoteJournal {
    /// Starts a journal on top of `state` as [`load`] read it, for the
    /// holder of `lock`. Objects a fenced-off writer left are set aside
    /// first; a state that does not exist yet, or that a replayed journal
    /// changed, is written whole, so the new journal extends an object on
    /// the store.
    pub fn open(lock: &RemoteLock, state: &mut State) -> Result<RemoteJournal, StateError> {
        let remote = lock.remote();
        let before = remote.seen();
        if !before.fenced.is_empty() {
            set_aside(remote, &before.fenced)?;
            remote.remember(Seen {
                fenced: vec![],
                ..before.clone()
            });
        }
        let before = remote.seen();
        let mut bytes_written = 0;
        if before.version.is_none() {
            state.serial += 1;
            bytes_written += write_whole(remote, state, &[])?;
        } else if before.replayed > 0 {
            tracing::info!(state = %remote.url, "folding the journal an interrupted apply left on the store");
            bytes_written += write_whole(remote, state, &[])?;
        } else if !before.journal.is_empty() {
            remove(remote, &before.journal)?;
            remote.remember(Seen {
                journal: vec![],
                ..before
            });
        }
        Ok(RemoteJournal {
            remote: remote.clone(),
            owner: lock.id().to_string(),
            fenced: None,
            ledger: Ledger::new(state, bytes_written),
            written: Vec::new(),
            path: std::path::PathBuf::from(&remote.url),
        })
    }

    pub fn stage(&mut self, key: &TunnelKey) {
        self.ledger.stage(key);
    }

    /// Whether this writer still owns the state: its lock object is still
    /// its own (a force-unlock removes it, the next writer's replaces it)
    /// and the state object is still the version it read. Both are read at
    /// once, so the fence costs one round trip.
    fn prove_owner(&self) -> Result<(), RemoteError> {
        let remote = &self.remote;
        let known = remote.seen().version.and_then(|v| v.e_tag);
        let (holder, head) = remote
            .call(async {
                Ok(futures_util::join!(
                    super::lock::read_holder_async(remote),
                    remote.store.head(&remote.key)
                ))
            })
            .map_err(remote.store_err("read the lock of"))?;
        let holder = holder.map_err(remote.store_err("read the lock of"))?;
        if holder.as_ref().is_none_or(|h| h.id != self.owner) {
            return Err(RemoteError::Fenced {
                url: remote.url.clone(),
                id: self.owner.clone(),
                now: holder.map_or_else(
                    || "no one: its lock object was removed (`psk force-unlock`)".to_string(),
                    |h| h.to_string(),
                ),
            });
        }
        let now = match head {
            Ok(meta) => meta.e_tag,
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(remote.store_err("read the state")(e)),
        };
        if now.is_none() || now != known {
            return Err(RemoteError::Conflict {
                url: remote.url.clone(),
            });
        }
        Ok(())
    }

    /// Makes every staged change durable with one conditional PUT, bumping
    /// the serial; on failure the serial is as before and nothing counts.
    pub fn commit(&mut self, state: &mut State) -> Result<(), StateError> {
        if self.ledger.nothing_staged() {
            return Ok(());
        }
        if let Some(RemoteError::Fenced { url, id, now }) = &self.fenced {
            return Err(RemoteError::Fenced {
                url: url.clone(),
                id: id.clone(),
                now: now.clone(),
            }
            .into());
        }
        state.serial += 1;
        let entry = EntryRef {
            lineage: &self.ledger.lineage,
            base_serial: self.ledger.base_serial,
            serial: state.serial,
            changes: self.ledger.changes(state),
        };
        let body = serde_json::to_vec(&entry).expect("journal entry serializes");
        let len = body.len() as u64;
        let name = self.remote.sibling(&format!(
            ".journal/{}-{:020}-{:020}.json",
            self.ledger.lineage, self.ledger.base_serial, state.serial
        ));
        let started = std::time::Instant::now();
        let put = self.remote.call(self.remote.store.put_opts(
            &name,
            PutPayload::from(body),
            PutOptions::from(PutMode::Create),
        ));
        if let Err(e) = put {
            state.serial -= 1;
            return Err(match e {
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. } => RemoteError::Conflict {
                    url: self.remote.url.clone(),
                },
                e => self.remote.store_err("write a journal commit of")(e),
            }
            .into());
        }
        // The fence: only now that the commit is durable does psk check
        // that it still owns the state. A writer that lost its lock while
        // it waited on the store stops here, before the call the commit
        // announces; its object is left for the next writer to set aside.
        if let Err(e) = self.prove_owner() {
            state.serial -= 1;
            if let RemoteError::Fenced { url, id, now } = &e {
                self.fenced = Some(RemoteError::Fenced {
                    url: url.clone(),
                    id: id.clone(),
                    now: now.clone(),
                });
            }
            return Err(e.into());
        }
        // Past the fence, before the call: the window docs/remote-state.md
        // describes, where tests stop psk.
        crate::state::durable::stop_point("stop-after-fence");
        tracing::debug!(
            serial = state.serial,
            changes = self.ledger.staged_count(),
            bytes = len,
            put_ms = started.elapsed().as_millis() as u64,
            "journal commit on the store"
        );
        self.written.push(name);
        self.ledger.committed(state, len);
        Ok(())
    }

    /// Commits anything still staged, then folds the journal into the
    /// state object and removes its commit objects.
    pub fn finish(&mut self, state: &mut State) -> Result<u64, StateError> {
        self.commit(state)?;
        state.compact_recipients();
        if self.ledger.records() > 0 && !self.written.is_empty() {
            let written = write_whole(&self.remote, state, &self.written)?;
            self.ledger.wrote(written);
            self.written.clear();
            tracing::info!(
                state = %self.remote.url,
                serial = state.serial,
                commits = self.ledger.commits(),
                changes = self.ledger.records(),
                bytes = self.ledger.bytes_written(),
                "journal folded into the state on the store"
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

    /// The state this journal extends (its URL, as a path).
    pub fn state_path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn bytes_written(&self) -> u64 {
        self.ledger.bytes_written()
    }

    pub fn commits(&self) -> u64 {
        self.ledger.commits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> TunnelKey {
        TunnelKey::new("023e105f4ecef8ad9ca31a8372d0c353", &format!("{i:032x}"))
    }

    /// A journal object changing tunnel `i` of `state` to hold `psk`.
    fn object(state: &State, i: usize, psk: &str, serial: u64) -> (ObjectPath, Entry) {
        let mut s = state.clone();
        s.entry(&key(i), &format!("t{i}")).psk = Some(psk.into());
        let record = s.tunnels.get(&key(i)).cloned();
        let entry = Entry {
            lineage: state.lineage.clone(),
            base_serial: 1,
            serial,
            changes: [(key(i).to_string(), record)].into_iter().collect(),
        };
        (ObjectPath::from(format!("j/{serial:020}")), entry)
    }

    /// Leftover objects are ignored only when the state already holds what
    /// they wrote; a change it lacks (a forced-out writer's) is refused.
    #[test]
    fn only_objects_already_folded_in_are_ignored() {
        let mut state = State::new(vec![]);
        state.serial = 5;
        state.entry(&key(0), "t0").psk = Some("sealed-a".into());
        let folded = vec![
            object(&state, 0, "old", 2),
            object(&state, 0, "sealed-a", 3),
        ];
        check_folded(&state, folded).unwrap();
        let late = vec![
            object(&state, 0, "sealed-a", 3),
            object(&state, 1, "sealed-b", 6),
        ];
        let e = check_folded(&state, late).unwrap_err();
        assert!(e.contains("changes the state (serial 5) does not"), "{e}");
        let mut other = object(&state, 0, "sealed-a", 3);
        other.1.lineage = "another".into();
        let e = check_folded(&state, vec![other]).unwrap_err();
        assert!(e.contains("another state"), "{e}");
    }
}
