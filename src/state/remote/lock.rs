//! One writer at a time on a remote state, with no lock service: the lock
//! is an object `<state>.lock` created with `If-None-Match: *` (as
//! Terraform's S3 backend does since 1.10). Whoever's PUT succeeds holds
//! it; everyone else reads the holder record in it to name the holder.
//!
//! Unlike the local flock, nothing removes the object when its holder is
//! killed, or its machine is lost: `psk force-unlock ID` does, after the
//! operator checked that holder is gone. The lock guards against a second
//! writer; the compare-and-swap on every state write is what makes a lost
//! update impossible even if the lock is forced while its holder lives.

use std::time::Duration;

use object_store::{ObjectStoreExt as _, PutMode, PutOptions, PutPayload};

use super::{Remote, RemoteError};
use crate::state::lock::{wait_for_lock, Attempt};
use crate::state::{LockHolder, Unlock};

/// Who holds the lock object, as far as its record says.
#[derive(Debug)]
enum Other {
    Named(LockHolder),
    /// Removed between psk's PUT and its read: the next try likely takes it.
    Unnamed,
}

impl std::fmt::Display for Other {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Other::Named(h) => h.fmt(f),
            Other::Unnamed => {
                f.write_str("another psk process (its lock record could not be read)")
            }
        }
    }
}

/// Held for as long as this value lives; dropping it removes the object.
#[derive(Debug)]
pub struct RemoteLock {
    remote: Remote,
    holder: LockHolder,
}

impl RemoteLock {
    /// Creates the lock object, waiting up to `timeout` with backoff while
    /// another holder's is there.
    pub fn acquire(
        remote: &Remote,
        operation: &str,
        timeout: Duration,
    ) -> Result<RemoteLock, RemoteError> {
        remote.check_bucket()?;
        let holder = LockHolder::new(operation);
        let body = holder.to_bytes();
        let key = remote.sibling(".lock");
        wait_for_lock(
            timeout,
            Duration::from_millis(100),
            || {
                let put = remote.call(remote.store.put_opts(
                    &key,
                    PutPayload::from(body.clone()),
                    PutOptions::from(PutMode::Create),
                ));
                match put {
                    Ok(_) => return Ok(Attempt::Taken(())),
                    Err(
                        object_store::Error::AlreadyExists { .. }
                        | object_store::Error::Precondition { .. },
                    ) => {}
                    Err(e) => return Err(remote.store_err("lock")(e)),
                }
                Ok(Attempt::Held(
                    read_holder(remote)?.map_or(Other::Unnamed, Other::Named),
                ))
            },
            |other| RemoteError::Held {
                url: remote.url.clone(),
                holder: other.to_string(),
                id: match other {
                    Other::Named(h) => h.id,
                    Other::Unnamed => "ID".to_string(),
                },
            },
        )?;
        tracing::info!(state = %remote.url, id = %holder.id, operation, "remote state lock acquired");
        Ok(RemoteLock {
            remote: remote.clone(),
            holder,
        })
    }
}

impl RemoteLock {
    /// The state object this lock guards.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// The lock ID: what a journal commit proves it still holds.
    pub fn id(&self) -> &str {
        &self.holder.id
    }
}

impl Drop for RemoteLock {
    /// Removes the lock object, if it is still this holder's (a
    /// force-unlock may have removed it, and another psk taken it since).
    fn drop(&mut self) {
        match read_holder(&self.remote) {
            Ok(Some(h)) if h.id == self.holder.id => {
                let key = self.remote.sibling(".lock");
                match self.remote.call(self.remote.store.delete(&key)) {
                    Ok(()) => tracing::info!(state = %self.remote.url, "remote state lock released"),
                    Err(e) => {
                        tracing::warn!(state = %self.remote.url, error = %super::describe(&e), "cannot remove the lock object");
                        eprintln!(
                            "psk: warning: cannot remove the lock of {} (lock ID {}); the next psk will be refused until `psk force-unlock {}`",
                            self.remote.url, self.holder.id, self.holder.id
                        );
                    }
                }
            }
            Ok(_) => tracing::warn!(state = %self.remote.url, "the lock object is no longer this psk's; left as it is"),
            Err(e) => eprintln!(
                "psk: warning: cannot check the lock of {} ({e}); if it stays, run `psk force-unlock {}`",
                self.remote.url, self.holder.id
            ),
        }
    }
}

/// The record in the lock object; `None` when there is no lock object. A
/// record that does not parse is named as such rather than hidden.
fn read_holder(remote: &Remote) -> Result<Option<LockHolder>, RemoteError> {
    remote
        .call(read_holder_async(remote))
        .map_err(remote.store_err("read the lock of"))
}

/// [`read_holder`], for callers that read other objects at the same time.
pub(super) async fn read_holder_async(
    remote: &Remote,
) -> Result<Option<LockHolder>, object_store::Error> {
    let key = remote.sibling(".lock");
    let got = match remote.store.get(&key).await {
        Ok(r) => Some(r.bytes().await?),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    Ok(got.map(|b| {
        serde_json::from_slice::<LockHolder>(&b).unwrap_or_else(|_| LockHolder {
            id: "?".into(),
            who: "an unreadable lock record".into(),
            pid: 0,
            operation: "?".into(),
            since: "?".into(),
        })
    }))
}

/// Removes the lock object of `remote` if `id` matches its record and
/// `confirm` (shown the record) agrees. A remote holder may run on another
/// machine, so psk cannot check that it ended: the operator must.
pub fn force_unlock(
    remote: &Remote,
    id: &str,
    confirm: impl FnOnce(&LockHolder) -> bool,
) -> Result<(Unlock, bool), RemoteError> {
    let Some(holder) = read_holder(remote)? else {
        return Ok((Unlock::NotLocked, false));
    };
    if holder.id != id {
        return Err(RemoteError::WrongId {
            url: remote.url.clone(),
            given: id.to_string(),
            found: holder.to_string(),
        });
    }
    if !confirm(&holder) {
        return Ok((Unlock::Stale(holder), false));
    }
    remote
        .call(remote.store.delete(&remote.sibling(".lock")))
        .map_err(remote.store_err("remove the lock of"))?;
    tracing::info!(state = %remote.url, id = %holder.id, "remote lock removed by force-unlock");
    Ok((Unlock::Stale(holder), true))
}
