//! The state as an object on a bucket: reading it (with its journal
//! objects replayed, and a fenced-off writer's told apart), and the
//! [`BucketStore`] a journal writes through (see [`crate::state::journal`]).
//!
//! Every write of the state is conditional on the version psk last read
//! (`If-Match: <etag>`, or `If-None-Match: *` for a state that did not
//! exist): a second writer gets [`RemoteError::Conflict`] and nothing is
//! overwritten. The version read travels with the [`Remote`] (its `seen`),
//! so the [`State`] type and every command that loads then saves work
//! unchanged on either store.
//!
//! A commit is one object, created with `If-None-Match: *` under
//! `<state>.journal/`, named by lineage, base serial and serial. An object
//! PUT is atomic, so there are no torn lines: an object either is there
//! whole, and counts, or is not.

use futures_util::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{Remote, RemoteError, RemoteLock, Seen};
use crate::state::error::{LostLock, StateError};
use crate::state::journal::{apply_changes, Commit, Entry, Store};
use crate::state::store as file_store;
use crate::state::{NewState, State};

impl Remote {
    /// What this process last read or wrote of the object.
    fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn remember(&self, seen: Seen) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
    }
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
    // The state object and the journal listing do not depend on each
    // other: both are read at once, one round trip to the store, not two.
    let (got, listed) = remote
        .call(async {
            Ok(futures_util::join!(
                read_state_object(remote),
                read_journal_objects(remote)
            ))
        })
        .map_err(remote.store_err("read the state"))?;
    let got = got.map_err(remote.store_err("read the state"))?;
    let listed = listed.map_err(remote.store_err("read the journal of"))?;
    let journal = parse_journal(remote, listed)?;
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

/// The state object's bytes and metadata; `None` when there is none.
async fn read_state_object(
    remote: &Remote,
) -> Result<Option<(Vec<u8>, object_store::ObjectMeta)>, object_store::Error> {
    match remote.store.get(&remote.key).await {
        Ok(r) => {
            let meta = r.meta.clone();
            r.bytes().await.map(|b| Some((b.to_vec(), meta)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every journal object's name and bytes, in name order (lineage, base
/// serial, serial).
async fn read_journal_objects(
    remote: &Remote,
) -> Result<Vec<(ObjectPath, Vec<u8>)>, object_store::Error> {
    let prefix = remote.sibling(".journal");
    let mut metas: Vec<_> = remote.store.list(Some(&prefix)).try_collect().await?;
    metas.sort_by(|a: &object_store::ObjectMeta, b| a.location.cmp(&b.location));
    let mut out = Vec::with_capacity(metas.len());
    for m in metas {
        let bytes = remote.store.get(&m.location).await?.bytes().await?;
        out.push((m.location, bytes.to_vec()));
    }
    Ok(out)
}

/// The journal objects read, each parsed as a commit.
fn parse_journal(
    remote: &Remote,
    objects: Vec<(ObjectPath, Vec<u8>)>,
) -> Result<Vec<(ObjectPath, Entry)>, StateError> {
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
/// them under `<state>.fenced/` (see [`BucketStore`]).
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
        apply_changes(state, e.changes).map_err(|m| jerr(format!("the object {name}: {m}")))?;
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
        apply_changes(&mut again, e.changes).map_err(|m| format!("the object {name}: {m}"))?;
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

/// Writes the state on the condition that it is still the version read,
/// then keeps that version as `<state>.backup` and removes the journal
/// objects the write folds in (`extra` and those read). Returns bytes
/// written.
fn write_whole(remote: &Remote, state: &State, extra: &[ObjectPath]) -> Result<u64, StateError> {
    let (written, previous) = swap_state(remote, state.to_bytes())?;
    let mut gone = std::mem::take(
        &mut remote
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .journal,
    );
    gone.extend_from_slice(extra);
    // Once the swap succeeded, the backup and the removal of what it
    // folded in depend on nothing but it, nor on each other: one round trip
    // for both, and one request for every folded object (a bulk delete).
    // Should either fail, the state is already whole on the store: a
    // leftover object is recognised as folded in and removed by the next
    // writer, and a missing backup only loses a copy of an older version.
    let backup = remote.sibling(".backup");
    let (kept, removed) = remote
        .call(async {
            Ok(futures_util::join!(
                async {
                    match &previous {
                        Some(p) => remote
                            .store
                            .put(&backup, PutPayload::from(p.clone()))
                            .await
                            .map(|_| ()),
                        None => Ok(()),
                    }
                },
                remove_async(remote, &gone)
            ))
        })
        .map_err(remote.store_err("write the backup of"))?;
    kept.map_err(remote.store_err("write the backup of"))?;
    removed.map_err(remote.store_err("remove the folded journal of"))?;
    Ok(written + previous.map_or(0, |p| p.len() as u64))
}

/// Writes `bytes` as the state object, conditional on the version read
/// (a refused writer touches nothing, its backup included). Returns the
/// bytes written and the version replaced, for the backup.
fn swap_state(remote: &Remote, bytes: Vec<u8>) -> Result<(u64, Option<Vec<u8>>), StateError> {
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
    let written = bytes.len() as u64;
    remote.remember(Seen {
        version: Some(UpdateVersion {
            e_tag: result.e_tag,
            version: result.version,
        }),
        bytes: Some(bytes),
        ..before.clone()
    });
    // With bucket versioning on, every version is kept anyway.
    Ok((written, before.bytes))
}

fn remove(remote: &Remote, objects: &[ObjectPath]) -> Result<(), StateError> {
    remote
        .call(remove_async(remote, objects))
        .map_err(|e| remote.store_err("remove the folded journal of")(e).into())
}

/// Removes `objects` with one request for up to a thousand of them (S3's
/// DeleteObjects, which object_store sends for every delete anyway): a
/// fold of an apply's N commits costs one round trip, not N. An object
/// already gone counts as removed.
async fn remove_async(remote: &Remote, objects: &[ObjectPath]) -> Result<(), object_store::Error> {
    use futures_util::StreamExt as _;
    if objects.is_empty() {
        return Ok(());
    }
    // Owned, since the stream outlives this borrow of `objects`.
    let names: Vec<Result<ObjectPath, object_store::Error>> =
        objects.iter().cloned().map(Ok).collect();
    let mut removed = remote
        .store
        .delete_stream(futures_util::stream::iter(names).boxed());
    while let Some(r) = removed.next().await {
        match r {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

/// The bucket as a journal's store, for the holder of its lock: a commit
/// is one object created with `If-None-Match: *`, durable when the PUT
/// returns, and then fenced: the writer proves it still owns the state
/// before anything acts on the commit.
#[derive(Debug)]
pub struct BucketStore {
    remote: Remote,
    /// The lock ID this writer holds: its fencing token.
    owner: String,
    /// The commit objects this journal wrote, removed by the final write.
    written: Vec<ObjectPath>,
}

impl BucketStore {
    /// The store of the state object `lock` guards, for its holder.
    pub(crate) fn new(lock: &RemoteLock) -> BucketStore {
        BucketStore {
            remote: lock.remote().clone(),
            owner: lock.id().to_string(),
            written: Vec::new(),
        }
    }

    /// Whether this writer still owns the state: its lock object is still
    /// its own (a force-unlock removes it, the next writer's replaces it)
    /// and the state object is still the version it read. Both are read at
    /// once, so the fence costs one round trip.
    fn prove_owner(&self) -> Result<(), StateError> {
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
            return Err(LostLock {
                url: remote.url.clone(),
                id: self.owner.clone(),
                holder: holder.map(|h| h.to_string()),
            }
            .into());
        }
        let now = match head {
            Ok(meta) => meta.e_tag,
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(remote.store_err("read the state")(e).into()),
        };
        if now.is_none() || now != known {
            return Err(RemoteError::Conflict {
                url: remote.url.clone(),
            }
            .into());
        }
        Ok(())
    }
}

impl Store for BucketStore {
    /// Sets aside the objects a fenced-off writer left, then folds in
    /// what an interrupted apply left: a replayed journal is written whole
    /// into the state object, objects already folded in are removed.
    fn open(&mut self, state: &State) -> Result<Option<u64>, StateError> {
        let remote = &self.remote;
        let before = remote.seen();
        if !before.fenced.is_empty() {
            set_aside(remote, &before.fenced)?;
            remote.remember(Seen {
                fenced: vec![],
                ..before.clone()
            });
        }
        let before = remote.seen();
        if before.version.is_none() {
            return Ok(None);
        }
        if before.replayed > 0 {
            tracing::info!(state = %remote.url, "folding the journal an interrupted apply left on the store");
            return self.write_whole(state).map(Some);
        }
        if !before.journal.is_empty() {
            remove(remote, &before.journal)?;
            remote.remember(Seen {
                journal: vec![],
                ..before
            });
        }
        Ok(Some(0))
    }

    /// One conditional PUT, then the fence: only once the commit is
    /// durable does psk check that it still owns the state. A writer that
    /// lost its lock while it waited on the store stops there, before the
    /// call the commit announces; its object is left for the next writer
    /// to set aside.
    fn append(&mut self, commit: &Commit<'_>) -> Result<u64, StateError> {
        let len = commit.json.len() as u64;
        let name = self.remote.sibling(&format!(
            ".journal/{}-{:020}-{:020}.json",
            commit.lineage, commit.base_serial, commit.serial
        ));
        let put = self.remote.call(self.remote.store.put_opts(
            &name,
            PutPayload::from(commit.json.clone()),
            PutOptions::from(PutMode::Create),
        ));
        if let Err(e) = put {
            return Err(match e {
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. } => RemoteError::Conflict {
                    url: self.remote.url.clone(),
                },
                e => self.remote.store_err("write a journal commit of")(e),
            }
            .into());
        }
        self.prove_owner()?;
        // Past the fence, before the call: the window docs/remote-state.md
        // describes, where tests stop psk.
        crate::state::durable::stop_point("stop-after-fence");
        self.written.push(name);
        Ok(len)
    }

    /// The state object, conditional on the version read, its backup, and
    /// the journal objects it folds in (those read and those written).
    fn write_whole(&mut self, state: &State) -> Result<u64, StateError> {
        let written = write_whole(&self.remote, state, &self.written)?;
        self.written.clear();
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::TunnelKey;

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
