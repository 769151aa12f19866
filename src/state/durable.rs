//! Durable file operations, written once for every file psk keeps: the
//! state, its backup and journal, the rescue file, saved plans and the
//! metrics textfile.
//!
//! A file psk replaces is never seen half-written: temp file in the same
//! folder, write, fsync, rename over the target, fsync the folder so the
//! rename itself survives a power cut (Terraform truncates and rewrites in
//! place; cargo renames but does not fsync). Files that hold sealed keys
//! are created mode 0600; the metrics file keeps the umask's mode, since
//! node_exporter usually runs as another user. The failpoints that tests
//! use to fail or kill a write live here too, so every write site is one
//! the tests can break.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Who may read a file psk writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Its owner only (0600): anything holding a sealed key or a plan.
    Private,
    /// As the umask says: files other programs read (metrics).
    Shared,
}

/// The folder holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes `path` and makes the removal survive a power cut; a file
/// already gone is fine.
pub fn remove_durably(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => File::open(parent_dir(path))?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The failpoint tests use to kill psk mid-write (see docs/testing.md).
/// `PSK_FAILPOINT=state-before-rename` aborts the process after the new
/// state is written and fsynced to its temp file but before the rename.
fn failpoint(name: &str) {
    if std::env::var("PSK_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("psk: failpoint {name} reached; aborting (PSK_FAILPOINT is for tests)");
        std::process::abort();
    }
}

/// The pause tests use to stop psk where no store can help:
/// `PSK_FAILPOINT=stop-after-fence` stops the process (SIGSTOP, as a VM
/// migration or a long GC would) the first time a journal commit on a
/// bucket has proved that psk still holds the lock, just before the call
/// that commit announces. The test resumes it with SIGCONT.
pub fn stop_point(name: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOPPED: AtomicBool = AtomicBool::new(false);
    if std::env::var("PSK_FAILPOINT").is_ok_and(|v| v == name)
        && !STOPPED.swap(true, Ordering::SeqCst)
    {
        eprintln!("psk: failpoint {name} reached; stopping (PSK_FAILPOINT is for tests)");
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &std::process::id().to_string()])
            .status();
    }
}

/// The write failpoints, for tests of a failing disk:
/// `PSK_FAILPOINT_WRITE=WHAT:N[+]:ERROR[,...]` makes the Nth write of WHAT
/// (`journal` for each journal line, `state`, `backup`, `rescue`) fail
/// with ERROR (`EIO`, `EROFS`, `ENOSPC`, `EDQUOT`); `N+` fails that one and
/// every later one, as a disk that stays broken. Each write site calls
/// this once per attempt, so a retry counts as a write too.
pub fn write_failpoint(what: &str) -> io::Result<()> {
    use std::sync::Mutex;
    static COUNTS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
    let Ok(spec) = std::env::var("PSK_FAILPOINT_WRITE") else {
        return Ok(());
    };
    let nth = {
        let mut counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let at = match counts.iter().position(|(w, _)| w == what) {
            Some(i) => i,
            None => {
                counts.push((what.to_string(), 0));
                counts.len() - 1
            }
        };
        counts[at].1 += 1;
        counts[at].1
    };
    for rule in spec.split(',') {
        let mut parts = rule.trim().splitn(3, ':');
        let (Some(w), Some(n), Some(err)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (n, onwards) = match n.strip_suffix('+') {
            Some(n) => (n, true),
            None => (n, false),
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        if w == what && (nth == n || (onwards && nth > n)) {
            tracing::warn!(
                write = what,
                nth,
                error = err,
                "write failpoint reached (PSK_FAILPOINT_WRITE is for tests)"
            );
            return Err(injected(err));
        }
    }
    Ok(())
}

/// The error a write failpoint injects: the OS's own, so messages read as
/// they would on a real failing disk.
fn injected(name: &str) -> io::Error {
    #[cfg(target_os = "linux")]
    let code = match name {
        "EROFS" => Some(30),
        "ENOSPC" => Some(28),
        "EDQUOT" => Some(122),
        "EIO" => Some(5),
        _ => None,
    };
    #[cfg(not(target_os = "linux"))]
    let code: Option<i32> = None;
    match code {
        Some(c) => io::Error::from_raw_os_error(c),
        None => io::Error::other(format!("injected {name}")),
    }
}

/// Temp file in the same folder (mode 0600), write, fsync, rename over the
/// target, fsync the folder. `is_state` marks the state itself, where the
/// `state-before-rename` failpoint may kill psk.
pub fn write_atomic(path: &Path, bytes: &[u8], is_state: bool) -> io::Result<()> {
    replace(path, bytes, Access::Private, is_state)
}

/// [`write_atomic`] for a file other users' programs read.
pub fn write_atomic_shared(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, Access::Shared, false)
}

fn replace(path: &Path, bytes: &[u8], access: Access, is_state: bool) -> io::Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = match access {
            Access::Private => create_private(&tmp, true)?,
            Access::Shared => File::create(&tmp)?,
        };
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        if is_state {
            failpoint("state-before-rename");
        }
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Opens `path` for writing, only its owner may read it when it is
/// created: truncated, or for appending.
pub fn create_private(path: &Path, truncate: bool) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    if truncate {
        opts.write(true).create(true).truncate(true);
    } else {
        opts.append(true).create(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// A new file (never one that exists) in `dir`, created with its folders,
/// only its owner may read: written, fsynced, and made durable with its
/// name. `what` names its write failpoint.
pub fn write_new_private(dir: &Path, path: &Path, bytes: &[u8], what: &str) -> io::Result<()> {
    write_failpoint(what)?;
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    // A file already there is someone else's: refused, never removed.
    let mut f = opts.open(path)?;
    let result = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .and_then(|_| File::open(dir)?.sync_all());
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temp_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk.prom");
        fs::write(&path, "old\n").unwrap();
        write_atomic_shared(&path, b"new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        write_atomic(&path, b"newer\n", false).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "newer\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("psk.prom")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "private: {mode:o}");
        }
    }

    #[test]
    fn a_missing_folder_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("psk.prom");
        assert!(write_atomic_shared(&path, b"x\n").is_err());
        assert!(!path.exists());
    }

    #[test]
    fn a_new_private_file_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        let path = sub.join("r.json");
        write_new_private(&sub, &path, b"1", "test-new").unwrap();
        assert!(write_new_private(&sub, &path, b"2", "test-new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"1");
        remove_durably(&path).unwrap();
        remove_durably(&path).unwrap();
        assert!(!path.exists());
    }
}
