//! One writer at a time.
//!
//! An OS advisory lock (flock) on `<state>.lock` does the excluding: the
//! kernel drops it when the holder dies, so a killed apply never leaves a
//! lock that needs clearing by hand. The file's content only says who holds
//! it (with a lock ID), for the message shown to whoever is refused.
//!
//! So `psk force-unlock ID` cannot, and does not, take a lock from a live
//! process: it refuses and names the pid to stop. What a killed process does
//! leave behind is its holder record; force-unlock removes that record after
//! checking that no process holds the lock.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockHolder {
    /// Short random id, the argument `psk force-unlock` asks for.
    #[serde(default)]
    pub id: String,
    pub who: String,
    pub pid: u32,
    pub operation: String,
    pub since: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {}), running `psk {}` since {} (lock ID {})",
            self.who, self.pid, self.operation, self.since, self.id
        )
    }
}

impl LockHolder {
    /// This process's record, for a lock it is taking for `operation`.
    pub fn new(operation: &str) -> LockHolder {
        LockHolder {
            id: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            who: format!("{}@{}", user(), host()),
            pid: std::process::id(),
            operation: operation.to_string(),
            since: crate::state::format_time(&Utc::now()),
        }
    }

    /// The record as the lock file or object holds it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = serde_json::to_vec(self).expect("holder serializes");
        body.push(b'\n');
        body
    }
}

/// One try at a lock: taken, or held by someone (`H` says who).
pub(super) enum Attempt<T, H> {
    Taken(T),
    Held(H),
}

/// The waiting both locks share: try, and only when the lock is taken say
/// who holds it and that psk waits (as cargo does), backing off up to
/// `timeout`; `timed_out` makes the error that names the holder.
pub(super) fn wait_for_lock<T, H: std::fmt::Display, E>(
    timeout: Duration,
    first_wait: Duration,
    mut attempt: impl FnMut() -> Result<Attempt<T, H>, E>,
    timed_out: impl FnOnce(H) -> E,
) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    let mut waits =
        crate::backoff::Backoff::new(first_wait, Duration::from_secs(2)).until(deadline);
    let mut told = false;
    loop {
        let holder = match attempt()? {
            Attempt::Taken(t) => return Ok(t),
            Attempt::Held(h) => h,
        };
        let Some(wait) = waits.next() else {
            return Err(timed_out(holder));
        };
        if !told {
            tracing::info!(%holder, "state lock is held; waiting");
            eprintln!("psk: the state is locked by {holder}; waiting...");
            told = true;
        }
        std::thread::sleep(wait);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the state {state} is locked by {holder}.\nWait for it to finish, or pass --lock-timeout DURATION to wait for it; the lock is released as soon as that process ends")]
    Held { state: PathBuf, holder: String },
    #[error("the state {state} is locked by a running process: {holder}.\npsk's lock is held by the operating system for exactly as long as that process lives, so it is never left behind and cannot be forced. If that process is stuck, stop it (`kill {pid}`), then run psk again")]
    HeldByLive {
        state: PathBuf,
        holder: String,
        pid: u32,
    },
    #[error("lock ID `{given}` does not match the lock record of {state}: {found}.\nCheck the ID in the message that named the lock")]
    WrongId {
        state: PathBuf,
        given: String,
        found: String,
    },
    #[error("cannot lock the state {state} through {lock}: {source}")]
    Io {
        state: PathBuf,
        lock: PathBuf,
        source: io::Error,
    },
}

/// Held for as long as this value lives.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
    state: PathBuf,
    /// This process created the lock file: none was there before.
    created: bool,
    /// The lock file was there, empty, before this process took the lock:
    /// the mark of a psk that ended normally (see [`super::missing`]).
    found_released: bool,
}

impl StateLock {
    pub fn lock_path(state: &Path) -> PathBuf {
        let mut s = state.as_os_str().to_owned();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// Takes the lock, waiting up to `timeout` with backoff while another
    /// process holds it.
    pub fn acquire(
        state: &Path,
        operation: &str,
        timeout: Duration,
    ) -> Result<StateLock, LockError> {
        let path = Self::lock_path(state);
        let io_err = |source| LockError::Io {
            state: state.to_path_buf(),
            lock: path.clone(),
            source,
        };
        // The record goes into a lock file this process creates before it
        // is in place; it is written again, since now, once the lock is
        // taken (after a wait, maybe).
        let mut holder = LockHolder::new(operation);
        let body = holder.to_bytes();
        let (mut file, mut created) = open_lock_file(&path, &body).map_err(io_err)?;
        let found_released = wait_for_lock(
            timeout,
            Duration::from_millis(50),
            || loop {
                match file.try_lock() {
                    // A holder that wrote no state removes its lock file as
                    // it lets go (see Drop): a lock on that removed file
                    // excludes no one, so open the file now at the path and
                    // lock again.
                    Ok(()) if !is_at(&file, &path) => {
                        (file, created) = open_lock_file(&path, &body).map_err(io_err)?;
                    }
                    Ok(()) => {
                        let released = !created && file.metadata().is_ok_and(|m| m.len() == 0);
                        return Ok(Attempt::Taken(released));
                    }
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Ok(Attempt::Held(read_holder(&mut file)))
                    }
                    Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
                }
            },
            |holder| LockError::Held {
                state: state.to_path_buf(),
                holder,
            },
        )?;
        holder.since = crate::state::format_time(&Utc::now());
        let body = holder.to_bytes();
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(&body))
            .map_err(io_err)?;
        tracing::info!(
            lock = %path.display(),
            id = %holder.id,
            operation,
            "state lock acquired"
        );
        Ok(StateLock {
            file,
            path,
            state: state.to_path_buf(),
            created,
            found_released,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state file this lock guards.
    pub fn state_path(&self) -> &Path {
        &self.state
    }

    /// Whether the lock file was there and empty before this process took
    /// the lock: a psk ran here and ended normally (see [`super::missing`]).
    pub fn found_released(&self) -> bool {
        self.found_released
    }
}

/// Opens the lock file, or creates it already locked and holding `record`;
/// true when it was created.
///
/// A new lock file is made under a name of this process's own, locked and
/// written there, and only then linked into place. Created in place, it
/// would be there unlocked and empty for a moment, and a second psk taking
/// it then would read it as the mark of a psk that ended normally (see
/// [`super::missing`]) and refuse a state that is simply new; a psk killed
/// in that moment would leave that mark for good.
fn open_lock_file(path: &Path, record: &[u8]) -> io::Result<(File, bool)> {
    loop {
        if let Some(file) = create_locked(path, record)? {
            return Ok((file, true));
        }
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => return Ok((f, false)),
            // Removed since by a holder letting go: create it after all.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The lock file created at `path`, locked, with `record` in it; `None`
/// when there is one already.
fn create_locked(path: &Path, record: &[u8]) -> io::Result<Option<File>> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(
        ".{}-{}.new",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let own = PathBuf::from(name);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&own)?;
    let linked = match file.try_lock() {
        Ok(()) => file
            .write_all(record)
            .and_then(|()| std::fs::hard_link(&own, path)),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
        Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::other("a new file is locked")),
    };
    let _ = std::fs::remove_file(&own);
    match linked {
        Ok(()) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        // A filesystem without hard links: create the file in place, with
        // the short unlocked moment that leaves.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
            ) =>
        {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(f) => Ok(Some(f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Whether `file` is still the file at `path` (not one removed since).
#[cfg(unix)]
fn is_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn is_at(_file: &File, path: &Path) -> bool {
    path.exists()
}

impl StateLock {
    /// A run that took the lock on a fresh directory and wrote no state
    /// (a first apply refused for a missing token, say) leaves nothing
    /// behind: its lock file would later look like the trace of a state
    /// that went missing.
    fn remove_if_nothing_written(&self) {
        if self.created && !self.state.exists() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What `force_unlock` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Unlock {
    /// No process held the lock and no record was left: nothing to do.
    NotLocked,
    /// A process that ended without cleaning up left this record.
    Stale(LockHolder),
}

/// Clears the holder record a killed psk left in `<state>.lock`, if `id`
/// matches it and no live process holds the lock. `confirm` is asked (with
/// the record) before anything is removed; it returns false to cancel.
pub fn force_unlock(
    state: &Path,
    id: &str,
    confirm: impl FnOnce(&LockHolder) -> bool,
) -> Result<(Unlock, bool), LockError> {
    let path = StateLock::lock_path(state);
    let io_err = |source| LockError::Io {
        state: state.to_path_buf(),
        lock: path.clone(),
        source,
    };
    let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Unlock::NotLocked, false)),
        Err(e) => return Err(io_err(e)),
    };
    let record = holder_record(&mut file);
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = holder_record(&mut file);
            return Err(match holder {
                Some(h) if h.id != id => LockError::WrongId {
                    state: state.to_path_buf(),
                    given: id.to_string(),
                    found: h.to_string(),
                },
                Some(h) => LockError::HeldByLive {
                    state: state.to_path_buf(),
                    pid: h.pid,
                    holder: h.to_string(),
                },
                None => LockError::Held {
                    state: state.to_path_buf(),
                    holder: "another psk process (it has not said who yet)".into(),
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
    }
    let Some(holder) = record else {
        return Ok((Unlock::NotLocked, false));
    };
    if holder.id != id {
        return Err(LockError::WrongId {
            state: state.to_path_buf(),
            given: id.to_string(),
            found: holder.to_string(),
        });
    }
    if !confirm(&holder) {
        return Ok((Unlock::Stale(holder), false));
    }
    file.set_len(0).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    let _ = file.unlock();
    tracing::info!(lock = %path.display(), id = %holder.id, pid = holder.pid, "stale lock record removed");
    Ok((Unlock::Stale(holder), true))
}

impl Drop for StateLock {
    fn drop(&mut self) {
        self.remove_if_nothing_written();
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
        tracing::info!(lock = %self.path.display(), "state lock released");
    }
}

/// Who holds the lock. A process that has just taken it writes its record
/// a moment later, so an empty or half-written record is read again for a
/// short while before giving up on a name.
fn read_holder(file: &mut File) -> String {
    for _ in 0..25 {
        if let Some(h) = holder_record(file) {
            return h.to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    "another psk process (it has not said who yet)".to_string()
}

fn holder_record(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
    serde_json::from_str::<LockHolder>(text.trim()).ok()
}

pub(super) fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

pub(super) fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("psk.state.json");
        let held = StateLock::acquire(&state, "apply", Duration::ZERO).unwrap();
        let err = StateLock::acquire(&state, "apply", Duration::ZERO).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("psk apply"), "{msg}");
        assert!(msg.contains("lock ID "), "{msg}");
        drop(held);
        StateLock::acquire(&state, "apply", Duration::ZERO).unwrap();
    }

    #[test]
    fn force_unlock_refuses_a_live_holder_and_clears_a_dead_ones_record() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("psk.state.json");
        assert_eq!(
            force_unlock(&state, "x", |_| true).unwrap(),
            (Unlock::NotLocked, false)
        );
        let held = StateLock::acquire(&state, "reseal", Duration::ZERO).unwrap();
        let lock = StateLock::lock_path(&state);
        let record = std::fs::read_to_string(&lock).unwrap();
        let holder: LockHolder = serde_json::from_str(record.trim()).unwrap();
        // flock is per open file: a second open in this process is refused
        // just as another process would be.
        let err = force_unlock(&state, &holder.id, |_| true).unwrap_err();
        assert!(matches!(err, LockError::HeldByLive { .. }), "{err}");
        assert!(err.to_string().contains(&format!("kill {}", holder.pid)));
        let err = force_unlock(&state, "nope", |_| true).unwrap_err();
        assert!(matches!(err, LockError::WrongId { .. }), "{err}");
        // A killed holder: the kernel released the flock, the record stays.
        held.file.unlock().unwrap();
        let (found, removed) = force_unlock(&state, &holder.id, |_| false).unwrap();
        assert_eq!((found, removed), (Unlock::Stale(holder.clone()), false));
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), record);
        let (_, removed) = force_unlock(&state, &holder.id, |_| true).unwrap();
        assert!(removed);
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), "");
        drop(held);
    }

    /// Two psk taking the lock of a new state at once: neither may take
    /// the other's lock file, just created, for the mark of a psk that
    /// ended normally (which refuses the new state as a missing one).
    #[test]
    fn a_lock_file_just_created_is_never_found_released() {
        for _ in 0..500 {
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("psk.state.json");
            let start = std::sync::Arc::new(std::sync::Barrier::new(2));
            let takers: Vec<_> = (0..2)
                .map(|_| {
                    let (state, start) = (state.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        let lock =
                            StateLock::acquire(&state, "apply", Duration::from_secs(10)).unwrap();
                        lock.found_released()
                    })
                })
                .collect();
            for t in takers {
                assert!(
                    !t.join().unwrap(),
                    "a lock file found empty and unlocked where no psk ever ended"
                );
            }
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "left behind: {left:?}");
        }
    }
}
