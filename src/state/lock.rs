//! One writer at a time.
//!
//! An OS advisory lock (flock) on `<state>.lock` does the excluding: the
//! kernel drops it when the holder dies, so a killed apply never leaves a
//! lock that needs clearing by hand. The file's content only says who holds
//! it, for the message shown to whoever is refused.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockHolder {
    pub who: String,
    pub pid: u32,
    pub operation: String,
    pub since: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {}), running `psk {}` since {}",
            self.who, self.pid, self.operation, self.since
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the state {state} is locked by {holder}.\nWait for it to finish, or pass --lock-timeout to wait")]
    Held { state: PathBuf, holder: String },
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
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        let deadline = Instant::now() + timeout;
        let mut wait = Duration::from_millis(50);
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = read_holder(&mut file);
                    if Instant::now() >= deadline {
                        return Err(LockError::Held {
                            state: state.to_path_buf(),
                            holder,
                        });
                    }
                    if !told {
                        eprintln!("psk: the state is locked by {holder}; waiting...");
                        told = true;
                    }
                    std::thread::sleep(
                        wait.min(deadline.saturating_duration_since(Instant::now())),
                    );
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
            }
        }
        let holder = LockHolder {
            who: format!("{}@{}", user(), host()),
            pid: std::process::id(),
            operation: operation.to_string(),
            since: crate::state::format_time(&Utc::now()),
        };
        let mut body = serde_json::to_vec(&holder).expect("holder serializes");
        body.push(b'\n');
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(&body))
            .map_err(io_err)?;
        Ok(StateLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
    match serde_json::from_str::<LockHolder>(text.trim()) {
        Ok(h) => h.to_string(),
        Err(_) => "another psk process (it has not said who yet)".to_string(),
    }
}

fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

fn host() -> String {
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
        drop(held);
        StateLock::acquire(&state, "apply", Duration::ZERO).unwrap();
    }
}
