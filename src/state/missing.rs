//! A state file that should be there and is not.
//!
//! psk holds the only copies of the fleet's keys in the state. When the
//! file is gone but what psk leaves beside it is not (the backup of the
//! previous version, a journal, the lock file of an earlier run), starting
//! afresh would replace every live key on Cloudflare, and a second write
//! would overwrite the backup: the last copy. So such a state is refused
//! with the way back, unless the operator says this is a new state.

use std::fmt;
use std::path::{Path, PathBuf};

use super::lock::StateLock;

/// Whether a command may start a state where there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewState {
    /// Only where psk left nothing behind. A lock file counts when it is
    /// empty: a psk that ended normally leaves it so, while one killed
    /// before it wrote a first state leaves its holder record in it (and
    /// one that wrote nothing and ended normally removes the file).
    IfNoTraces,
    /// As [`NewState::IfNoTraces`], for the holder of the lock, which has
    /// written its own record into the file: `true` when the lock file was
    /// there and empty before it took the lock.
    IfNoTracesLockWasReleased(bool),
    /// The operator said so (`--new-state`).
    Allowed,
}

/// What psk left beside a state file that is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traces {
    pub path: PathBuf,
    pub backup: Option<PathBuf>,
    pub lock: Option<PathBuf>,
}

impl Traces {
    /// Looks beside `path` (a state file that does not exist) for its
    /// `backup` and its lock file.
    pub fn find(path: &Path, backup: PathBuf, new_state: NewState) -> Traces {
        let existing = |p: PathBuf| p.exists().then_some(p);
        Traces {
            path: path.to_path_buf(),
            backup: existing(backup),
            lock: existing(StateLock::lock_path(path)).filter(|p| match new_state {
                NewState::IfNoTraces => std::fs::metadata(p).is_ok_and(|m| m.len() == 0),
                NewState::IfNoTracesLockWasReleased(released) => released,
                NewState::Allowed => false,
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.backup.is_none() && self.lock.is_none()
    }
}

impl fmt::Display for Traces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        let found: Vec<String> = [("its backup", &self.backup), ("its lock file", &self.lock)]
            .into_iter()
            .filter_map(|(what, p)| p.as_ref().map(|p| format!("{what} {}", p.display())))
            .collect();
        writeln!(
            f,
            "there is no state file {path}, but {} show{} that psk has kept a state there.",
            found.join(" and "),
            if found.len() == 1 { "s" } else { "" }
        )?;
        writeln!(
            f,
            "Without it psk would replace every live key on Cloudflare, and the keys that state holds would be lost for good."
        )?;
        write!(
            f,
            "Restore it: `git restore {path}` if you commit it (the usual way)"
        )?;
        if let Some(backup) = &self.backup {
            write!(
                f,
                ", or from its backup: `cp {} {path}` (the version before its last write: a key that write recorded is not in it, so its tunnel then plans as changed outside psk)",
                backup.display()
            )?;
        }
        write!(
            f,
            ".\nIf you mean to start a new state here, pass --new-state (plan, apply, import)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::backup_path;

    fn find(path: &Path, new_state: NewState) -> Traces {
        Traces::find(path, backup_path(path), new_state)
    }

    #[test]
    fn traces_name_what_is_there_and_the_way_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk.state.json");
        assert!(find(&path, NewState::IfNoTraces).is_empty());
        // A holder record: a psk killed before it wrote a first state.
        std::fs::write(StateLock::lock_path(&path), b"{}\n").unwrap();
        assert!(find(&path, NewState::IfNoTraces).is_empty());
        // Empty: released by a psk that ended normally.
        std::fs::write(StateLock::lock_path(&path), b"").unwrap();
        assert!(!find(&path, NewState::IfNoTraces).is_empty());
        assert!(find(&path, NewState::IfNoTracesLockWasReleased(false)).is_empty());
        assert!(!find(&path, NewState::IfNoTracesLockWasReleased(true)).is_empty());
        std::fs::write(backup_path(&path), b"{}").unwrap();
        let t = find(&path, NewState::IfNoTracesLockWasReleased(false));
        let text = t.to_string();
        assert!(text.contains("its backup"), "{text}");
        assert!(!text.contains("lock file"), "{text}");
        assert!(text.contains(&format!(
            "`cp {} {}`",
            backup_path(&path).display(),
            path.display()
        )));
        assert!(text.contains("--new-state"), "{text}");
    }
}
