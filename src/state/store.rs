//! The state as a file beside psk.yaml: reading it (with the journal an
//! interrupted apply left replayed), and the [`FileStore`] a journal
//! writes through (see [`super::journal`] for why there is a journal).
//!
//! The file is written like a database page (temp file, fsync, rename,
//! fsync of the folder, the previous version kept as `<state>.backup`), and
//! a commit is a line appended to `<state>.journal` with one `fdatasync`.
//! A disk can fill up, so an apply holds room beside the state before its
//! first API call (`<state>.reserve`) and gives it back when a write finds
//! the disk full.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::durable::{create_private, parent_dir, remove_durably, write_atomic, write_failpoint};
use super::error::StateError;
use super::journal::{apply_changes, Commit, Entry, Store};
use super::missing::{NewState, Traces};
use super::{State, StateFile, STATE_VERSION};

/// The line of the first git conflict marker in `bytes`, if any. No valid
/// state has one: psk's JSON never starts a line with `<`.
fn conflict_marker(bytes: &[u8]) -> Option<usize> {
    let at = if bytes.starts_with(b"<<<<<<<") {
        0
    } else {
        bytes.windows(8).position(|w| w == b"\n<<<<<<<")? + 1
    };
    Some(bytes[..at].iter().filter(|b| **b == b'\n').count() + 1)
}

/// The backup kept beside the state: the version before the last write.
pub fn backup_path(path: &Path) -> PathBuf {
    sibling(path, ".backup")
}

/// Space an apply holds for its journal from before its first API call,
/// released when a write finds the disk full (see [`FileStore`]).
pub fn reserve_path(path: &Path) -> PathBuf {
    sibling(path, ".reserve")
}

/// Where an apply appends its changes until it folds them into the state.
pub fn journal_path(path: &Path) -> PathBuf {
    sibling(path, ".journal")
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Reads the state, replaying any journal an interrupted apply left;
/// `Ok(None)` when there is no state file yet and `new_state` allows one
/// (see [`super::missing`]).
pub fn load(path: &Path, new_state: NewState) -> Result<Option<State>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let journal = journal_path(path);
            if journal.exists() {
                return Err(StateError::OrphanJournal {
                    path: path.to_path_buf(),
                    journal,
                    backup: backup_path(path),
                });
            }
            let traces = Traces::find(path, backup_path(path), new_state);
            if new_state != NewState::Allowed && !traces.is_empty() {
                return Err(StateError::Missing(traces));
            }
            return Ok(None);
        }
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut state = parse(path, &bytes)?;
    replay(path, &mut state)?;
    Ok(Some(state))
}

/// Parses state bytes, naming `path` in any error.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<State, StateError> {
    let backup = Some(backup_path(path)).filter(|b| b.exists());
    let parse_err = |e: serde_json::Error| match conflict_marker(bytes) {
        Some(line) => StateError::Conflict {
            path: path.to_path_buf(),
            line,
        },
        None => StateError::Parse {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: describe_json_error(&e),
            backup: backup.clone(),
        },
    };
    // Check the version first, so a newer format is named as such rather
    // than reported as an unknown field.
    #[derive(serde::Deserialize)]
    struct Header {
        version: u64,
    }
    let header: Header = serde_json::from_slice(bytes).map_err(parse_err)?;
    if header.version > STATE_VERSION {
        let at = bytes
            .windows(9)
            .position(|w| w == b"\"version\"")
            .unwrap_or(0);
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found: header.version,
            line: bytes[..at].iter().filter(|b| **b == b'\n').count() + 1,
            backup: backup.clone(),
        });
    }
    let located = |needle: &str, message: String| {
        let (line, column) = line_of(bytes, needle);
        StateError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message,
            backup: backup.clone(),
        }
    };
    if header.version < super::BASE_STATE_VERSION {
        return Err(located(
            "\"version\"",
            format!(
                "format version {} was never written by psk (the first is 1)",
                header.version
            ),
        ));
    }
    let file: StateFile = serde_json::from_slice(bytes).map_err(parse_err)?;
    // Keys and records must agree: psk looks tunnels up by key and acts on
    // the ids in the record, so a mismatch would act on the wrong tunnel.
    for (k, rec) in &file.tunnels {
        if super::parse_key(k).is_none_or(|key| key != rec.key()) {
            return Err(located(
                &format!("\"{k}\""),
                "a tunnel record does not match its key: the key must be `account_id/tunnel_id` of the record, each 32 hex characters".to_string(),
            ));
        }
    }
    Ok(file.into_state())
}

/// The 1-based line and column of the first `needle` in `bytes` (1:1 when
/// absent), for errors found after serde has forgotten positions.
fn line_of(bytes: &[u8], needle: &str) -> (usize, usize) {
    let n = needle.as_bytes();
    let Some(at) = bytes.windows(n.len().max(1)).position(|w| w == n) else {
        return (1, 1);
    };
    let before = &bytes[..at];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = at
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, column)
}

/// serde_json's message, minus its position suffix and minus any quoted
/// value: a corrupt state could put a sealed PSK's text in the message.
pub(super) fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let text = e.to_string();
    let text = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    match e.classify() {
        Category::Eof => "the file ends too early (truncated?)".to_string(),
        Category::Syntax => format!("invalid JSON: {text}"),
        Category::Data if text.starts_with("invalid type") || text.starts_with("invalid value") => {
            "a value has the wrong type".to_string()
        }
        Category::Data => text.to_string(),
        Category::Io => format!("read error: {text}"),
    }
}

/// Applies the journal beside `path`, if any, to `state`.
///
/// A journal whose base is not this state is one an earlier apply already
/// folded in (it died between the final rename and removing the journal),
/// so it is ignored. A last line that does not parse is a write cut short by
/// a crash: it was never fsynced, so the API call it announced never
/// started, and it is ignored too. A bad line followed by good ones is
/// damage, and refused.
fn replay(path: &Path, state: &mut State) -> Result<usize, StateError> {
    let jpath = journal_path(path);
    let bytes = match fs::read(&jpath) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(StateError::Read {
                path: jpath,
                source,
            });
        }
    };
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // The part after the last newline is a line cut short: ignored.
    let complete = lines.len() - 1;
    let tail_empty = lines[complete].is_empty();
    let mut entries = Vec::new();
    for (i, line) in lines[..complete].iter().enumerate() {
        match serde_json::from_slice::<Entry>(line) {
            Ok(e) => entries.push(e),
            Err(_) if i + 1 == complete && tail_empty => break,
            Err(e) => {
                return Err(StateError::Journal {
                    path: jpath,
                    state: path.to_path_buf(),
                    line: i + 1,
                    message: describe_json_error(&e),
                })
            }
        }
    }
    let base = state.serial;
    match entries.first() {
        Some(e) if e.lineage == state.lineage && e.base_serial == base => {}
        Some(_) => {
            tracing::info!(journal = %jpath.display(), "journal already folded into the state; ignored");
            return Ok(0);
        }
        None => return Ok(0),
    }
    if !tail_empty || entries.len() < complete {
        tracing::info!(journal = %jpath.display(), "journal's last commit was cut short by a crash; ignored");
    }
    let n = entries.len();
    for (i, e) in entries.into_iter().enumerate() {
        if e.lineage != state.lineage || e.base_serial != base || e.serial != state.serial + 1 {
            return Err(StateError::Journal {
                path: jpath,
                state: path.to_path_buf(),
                line: i + 1,
                message: "its lineage or serial does not follow the line before".into(),
            });
        }
        state.serial = e.serial;
        apply_changes(state, e.changes).map_err(|message| StateError::Journal {
            path: jpath.clone(),
            state: path.to_path_buf(),
            line: i + 1,
            message: message.into(),
        })?;
    }
    tracing::info!(journal = %jpath.display(), commits = n, serial = state.serial, "journal of an interrupted apply replayed");
    Ok(n)
}

/// Writes backup, state, then removes the journal; returns bytes written.
fn write_whole(path: &Path, state: &State) -> Result<u64, StateError> {
    let bytes = state.to_bytes();
    let werr = |source: io::Error| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut written = 0u64;
    match fs::read(path) {
        Ok(previous) => {
            write_failpoint("backup")
                .and_then(|_| write_atomic(&backup_path(path), &previous, false))
                .map_err(werr)?;
            written += previous.len() as u64;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(werr(e)),
    }
    write_failpoint("state")
        .and_then(|_| write_atomic(path, &bytes, true))
        .map_err(werr)?;
    written += bytes.len() as u64;
    remove_durably(&journal_path(path)).map_err(werr)?;
    Ok(written)
}

/// Temp files of writers that died before their rename; only ever called
/// under the state lock, so no live writer owns one.
fn remove_stale_temps(path: &Path) {
    let (Some(name), Ok(entries)) = (path.file_name(), fs::read_dir(parent_dir(path))) else {
        return;
    };
    let name = name.to_string_lossy();
    let prefixes = [format!(".{name}.tmp-"), format!(".{name}.backup.tmp-")];
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if prefixes.iter().any(|p| n.starts_with(p.as_str())) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The state file as a journal's store: a commit is one line appended to
/// `<state>.journal` with one `fdatasync` (so at most one line is ever in
/// flight: a crash can only cut the last line short, and any other damage
/// is real damage), and the whole state is written atomically beside its
/// backup.
///
/// Only made for the holder of the state lock.
#[derive(Debug)]
pub(super) struct FileStore {
    path: PathBuf,
    /// The journal, once the first commit opened it.
    file: Option<File>,
    /// Space held for the journal, while it is held.
    reserve: Option<PathBuf>,
}

impl Drop for FileStore {
    /// A reservation never outlives its apply, however it ends.
    fn drop(&mut self) {
        self.give_back_room();
    }
}

impl FileStore {
    /// The store of the state file at `path`.
    pub(super) fn new(path: &Path) -> FileStore {
        FileStore {
            path: path.to_path_buf(),
            file: None,
            reserve: None,
        }
    }

    /// Gives the reserved room back to the filesystem; true if there was any.
    fn give_back_room(&mut self) -> bool {
        match self.reserve.take() {
            Some(p) => {
                let _ = fs::remove_file(&p);
                tracing::info!(reserve = %p.display(), "reserved room released");
                true
            }
            None => false,
        }
    }

    /// Appends one whole line and makes it durable; on failure the file is
    /// cut back to where it was, so a half-written line never sits before
    /// the next one (which replay would refuse as damage).
    fn append_line(&mut self, line: &[u8]) -> io::Result<()> {
        write_failpoint("journal")?;
        let f = self.file.as_mut().expect("opened by append");
        let before = f.metadata()?.len();
        let result = f.write_all(line).and_then(|_| f.sync_data());
        if result.is_err() {
            let _ = f.set_len(before).and_then(|_| f.sync_data());
            use std::io::Seek;
            let _ = f.seek(io::SeekFrom::End(0));
        }
        result
    }
}

impl Store for FileStore {
    /// Clears what killed writers left (stale temp files, held room) and
    /// folds a journal an interrupted apply left into the state file. A
    /// state that is merely formatted differently (edited by hand) is left
    /// as it is: a refused apply must not touch the file.
    fn open(&mut self, state: &State) -> Result<Option<u64>, StateError> {
        let path = &self.path;
        remove_stale_temps(path);
        // Room a killed apply held is free again.
        let _ = fs::remove_file(reserve_path(path));
        let werr = |source: io::Error| StateError::Write {
            path: path.to_path_buf(),
            source,
        };
        let on_disk = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(werr(e)),
        };
        if !journal_path(path).exists() {
            return Ok(Some(0));
        }
        tracing::info!(state = %path.display(), "folding the journal an interrupted apply left");
        if on_disk != state.to_bytes() {
            return self.write_whole(state).map(Some);
        }
        remove_durably(&journal_path(path)).map_err(werr)?;
        Ok(Some(0))
    }

    /// The reservation is a file of that size beside the state, removed the
    /// moment a journal write finds no room (and at the end).
    fn reserve(&mut self, bytes: u64) -> Result<(), StateError> {
        let path = reserve_path(&self.path);
        let fill = || -> io::Result<()> {
            let mut f = create_private(&path, true)?;
            let chunk = vec![0u8; 64 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        };
        match fill() {
            Ok(()) => {
                tracing::info!(reserve = %path.display(), bytes, "room for the journal reserved");
                self.reserve = Some(path);
                Ok(())
            }
            Err(source) => {
                let _ = fs::remove_file(&path);
                Err(StateError::NoRoom {
                    path: self.path.clone(),
                    needed: bytes,
                    source,
                })
            }
        }
    }

    fn release(&mut self) {
        self.give_back_room();
    }

    /// One line, one `fdatasync`. A write that fails (a full disk) gives
    /// the reserved room back to the filesystem and is made again into it.
    fn append(&mut self, commit: &Commit<'_>) -> Result<u64, StateError> {
        let jpath = journal_path(&self.path);
        let werr = |source: io::Error| StateError::Write {
            path: jpath.clone(),
            source,
        };
        let mut line = Vec::with_capacity(commit.json.len() + 1);
        line.extend_from_slice(&commit.json);
        line.push(b'\n');
        if self.file.is_none() {
            let f = create_private(&jpath, false).map_err(werr)?;
            // The journal's own name must survive a power cut too.
            File::open(parent_dir(&jpath))
                .and_then(|d| d.sync_all())
                .map_err(werr)?;
            self.file = Some(f);
        }
        if let Err(e) = self.append_line(&line) {
            if !self.give_back_room() {
                return Err(werr(e));
            }
            tracing::warn!(error = %e, "journal write failed; retrying in the reserved room");
            self.append_line(&line).map_err(werr)?;
        }
        Ok(line.len() as u64)
    }

    /// Backup, state, then the journal removed.
    fn write_whole(&mut self, state: &State) -> Result<u64, StateError> {
        self.file = None;
        write_whole(&self.path, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::journal::{self, Journal};
    use crate::tunnel::TunnelKey;

    fn open_journal(path: &Path, state: &mut State) -> Result<Journal, StateError> {
        Journal::on(Box::new(FileStore::new(path)), path, state)
    }

    fn save(path: &Path, state: &mut State) -> Result<(), StateError> {
        journal::save(&mut FileStore::new(path), state)
    }

    /// The room held for an apply is a file of that size beside the state,
    /// gone when the journal finishes or is dropped, and left by no one.
    #[test]
    fn reserved_room_never_outlives_its_apply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk.state.json");
        let mut s = State::new(vec![]);
        let mut j = open_journal(&path, &mut s).unwrap();
        j.reserve(100_000).unwrap();
        assert_eq!(fs::metadata(reserve_path(&path)).unwrap().len(), 100_000);
        j.finish(&mut s).unwrap();
        assert!(!reserve_path(&path).exists());
        let mut j = open_journal(&path, &mut s).unwrap();
        j.reserve(10).unwrap();
        drop(j);
        assert!(!reserve_path(&path).exists());
        // One a killed apply left is removed by the next.
        fs::write(reserve_path(&path), b"x").unwrap();
        let _j = open_journal(&path, &mut s).unwrap();
        assert!(!reserve_path(&path).exists());
    }

    #[test]
    fn save_load_backup_and_serial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk.state.json");
        assert!(load(&path, NewState::IfNoTraces).unwrap().is_none());
        let mut s = State::new(vec![]);
        save(&path, &mut s).unwrap();
        assert_eq!(s.serial, 1);
        assert!(!backup_path(&path).exists());
        let first = fs::read(&path).unwrap();
        save(&path, &mut s).unwrap();
        assert_eq!(s.serial, 2);
        assert_eq!(fs::read(backup_path(&path)).unwrap(), first);
        assert_eq!(load(&path, NewState::IfNoTraces).unwrap().unwrap(), s);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn refuses_corrupt_truncated_and_future_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk.state.json");
        let mut s = State::new(vec![]);
        save(&path, &mut s).unwrap();
        let good = fs::read(&path).unwrap();

        fs::write(&path, &good[..good.len() / 2]).unwrap();
        let e = load(&path, NewState::IfNoTraces).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("line"), "{e}");
        // Written once: there is no backup to point at.
        assert!(!backup_path(&path).exists());
        assert!(!e.contains("psk.state.json.backup"), "{e}");
        assert!(e.contains("There is no backup beside it"), "{e}");
        fs::write(&path, &good).unwrap();
        save(&path, &mut s).unwrap();
        let good = fs::read(&path).unwrap();
        fs::write(&path, &good[..good.len() / 2]).unwrap();
        let e = load(&path, NewState::IfNoTraces).unwrap_err().to_string();
        assert!(
            e.contains("kept in") && e.contains("psk.state.json.backup"),
            "{e}"
        );

        fs::write(&path, b"{\"version\": 1, \"lineage\": 5}").unwrap();
        let e = load(&path, NewState::IfNoTraces).unwrap_err().to_string();
        assert!(e.contains("wrong type"), "{e}");

        fs::write(&path, b"{\n  \"lineage\": \"x\",\n  \"version\": 99\n}").unwrap();
        let e = load(&path, NewState::IfNoTraces).unwrap_err().to_string();
        assert!(e.contains("version 99 (line 3)"), "{e}");
        assert!(e.contains("psk.state.json.backup"), "{e}");
    }

    #[test]
    fn git_conflict_markers_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk.state.json");
        let mut s = State::new(vec![]);
        save(&path, &mut s).unwrap();
        let good = String::from_utf8(fs::read(&path).unwrap()).unwrap();
        let (head, tail) = good.split_at(good.find("  \"serial\"").unwrap());
        let conflicted = format!(
            "{head}<<<<<<< HEAD\n  \"serial\": 7,\n=======\n  \"serial\": 8,\n>>>>>>> other\n{}",
            &tail[tail.find('\n').unwrap() + 1..]
        );
        fs::write(&path, &conflicted).unwrap();
        let e = load(&path, NewState::IfNoTraces).unwrap_err();
        let line = conflicted[..conflicted.find("<<<<<<<").unwrap()]
            .lines()
            .count()
            + 1;
        assert!(
            matches!(e, StateError::Conflict { line: l, .. } if l == line),
            "{e}"
        );
        let e = e.to_string();
        assert!(e.contains("git conflict markers"), "{e}");
        assert!(e.contains("never merge its keys by hand"), "{e}");
        assert!(e.contains("git checkout --theirs"), "{e}");
        assert!(!e.contains(".backup"), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), conflicted);
    }

    fn key(i: usize) -> TunnelKey {
        TunnelKey::new("023e105f4ecef8ad9ca31a8372d0c353", &format!("{i:032x}"))
    }

    /// A temp folder with a new state on disk and a journal open on it.
    fn opened() -> (tempfile::TempDir, PathBuf, State, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk.state.json");
        let mut s = State::new(vec![]);
        let j = open_journal(&path, &mut s).unwrap();
        (dir, path, s, j)
    }

    fn change(s: &mut State, i: usize) {
        let rec = s.entry(&key(i), &format!("t{i}"));
        rec.psk = Some(format!("sealed-{i}"));
        rec.last_rotated = Some("2026-11-01T00:00:00Z".parse().unwrap());
    }

    #[test]
    fn journal_is_replayed_on_load_and_folded_by_finish() {
        let (_dir, path, mut s, mut j) = opened();
        assert_eq!(s.serial, 1, "a new state is written before the journal");
        let base = fs::read(&path).unwrap();
        for i in 0..3 {
            change(&mut s, i);
            j.record(&mut s, &key(i)).unwrap();
        }
        s.tunnels.remove(&key(1));
        j.record(&mut s, &key(1)).unwrap();
        // Until finish, the state file is untouched and load replays.
        assert_eq!(fs::read(&path).unwrap(), base);
        assert_eq!(load(&path, NewState::IfNoTraces).unwrap().unwrap(), s);
        assert_eq!(s.serial, 5);
        drop(j); // as if psk died here

        // The next writer folds the replayed journal in before its own.
        let mut again = load(&path, NewState::IfNoTraces).unwrap().unwrap();
        let mut j = open_journal(&path, &mut again).unwrap();
        assert!(!journal_path(&path).exists());
        assert_eq!(fs::read(backup_path(&path)).unwrap(), base);
        assert_eq!(parse(&path, &fs::read(&path).unwrap()).unwrap(), s);
        let folded = j.bytes_written();
        assert!(folded > 0);
        assert_eq!(
            j.finish(&mut again).unwrap(),
            folded,
            "nothing new to write"
        );

        let mut s = load(&path, NewState::IfNoTraces).unwrap().unwrap();
        let mut j = open_journal(&path, &mut s).unwrap();
        change(&mut s, 7);
        j.record(&mut s, &key(7)).unwrap();
        j.finish(&mut s).unwrap();
        assert!(!journal_path(&path).exists());
        assert_eq!(parse(&path, &fs::read(&path).unwrap()).unwrap(), s);
    }

    #[test]
    fn torn_last_line_is_ignored_damage_elsewhere_is_refused() {
        let (_dir, path, mut s, mut j) = opened();
        change(&mut s, 0);
        j.record(&mut s, &key(0)).unwrap();
        let after_first = s.clone();
        change(&mut s, 1);
        j.record(&mut s, &key(1)).unwrap();
        drop(j);
        let jp = journal_path(&path);
        let full = fs::read(&jp).unwrap();
        let first_len = full.iter().position(|b| *b == b'\n').unwrap() + 1;

        // A crash in the middle of the second append.
        fs::write(&jp, &full[..first_len + 10]).unwrap();
        assert_eq!(
            load(&path, NewState::IfNoTraces).unwrap().unwrap(),
            after_first
        );
        // Or a second line the disk filled with zeros.
        let mut zeroed = full[..first_len].to_vec();
        zeroed.extend(std::iter::repeat_n(0u8, 20));
        zeroed.push(b'\n');
        fs::write(&jp, &zeroed).unwrap();
        assert_eq!(
            load(&path, NewState::IfNoTraces).unwrap().unwrap(),
            after_first
        );
        // A damaged first line before a good one is not a torn write.
        let mut damaged = b"{garbage}\n".to_vec();
        damaged.extend_from_slice(&full[first_len..]);
        fs::write(&jp, &damaged).unwrap();
        let e = load(&path, NewState::IfNoTraces).unwrap_err().to_string();
        assert!(
            e.contains("psk.state.json.journal is damaged at line 1"),
            "{e}"
        );
    }

    #[test]
    fn a_commit_is_one_line_holding_every_staged_change() {
        let (_dir, path, mut s, mut j) = opened();
        let before = s.clone();
        for i in 0..3 {
            change(&mut s, i);
            j.stage(&key(i));
        }
        // Staged is not durable: a reader sees nothing yet.
        assert_eq!(load(&path, NewState::IfNoTraces).unwrap().unwrap(), before);
        j.commit(&mut s).unwrap();
        assert_eq!(s.serial, before.serial + 1, "one serial per commit");
        assert_eq!(j.commits(), 1);
        let journal = fs::read(journal_path(&path)).unwrap();
        assert_eq!(journal.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(load(&path, NewState::IfNoTraces).unwrap().unwrap(), s);
        // Nothing staged, nothing written.
        j.commit(&mut s).unwrap();
        assert_eq!(fs::read(journal_path(&path)).unwrap(), journal);

        // A change staged last and removal staged with it; finish commits
        // what is still staged before folding.
        change(&mut s, 3);
        j.stage(&key(3));
        s.tunnels.remove(&key(0));
        j.stage(&key(0));
        let expected = {
            let mut e = s.clone();
            e.serial += 1;
            e
        };
        j.finish(&mut s).unwrap();
        assert_eq!(s, expected);
        assert_eq!(
            load(&path, NewState::IfNoTraces).unwrap().unwrap(),
            expected
        );
        assert!(!journal_path(&path).exists());
    }

    #[test]
    fn a_commit_cut_short_is_dropped_whole() {
        let (_dir, path, mut s, mut j) = opened();
        change(&mut s, 0);
        j.record(&mut s, &key(0)).unwrap();
        let after_first = s.clone();
        for i in 1..4 {
            change(&mut s, i);
            j.stage(&key(i));
        }
        j.commit(&mut s).unwrap();
        drop(j);
        let jp = journal_path(&path);
        let full = fs::read(&jp).unwrap();
        let first_len = full.iter().position(|b| *b == b'\n').unwrap() + 1;
        // The crash cut the second commit anywhere: none of it counts, since
        // its fsync never returned and nothing acted on it.
        for cut in [first_len + 1, (first_len + full.len()) / 2, full.len() - 1] {
            fs::write(&jp, &full[..cut]).unwrap();
            assert_eq!(
                load(&path, NewState::IfNoTraces).unwrap().unwrap(),
                after_first,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_journal_already_folded_in_is_ignored() {
        let (_dir, path, mut s, mut j) = opened();
        change(&mut s, 0);
        j.record(&mut s, &key(0)).unwrap();
        let journal = fs::read(journal_path(&path)).unwrap();
        j.finish(&mut s).unwrap();
        // As if psk died after the final rename, before removing the journal.
        fs::write(journal_path(&path), journal).unwrap();
        change(&mut s, 0);
        assert_eq!(load(&path, NewState::IfNoTraces).unwrap().unwrap(), s);
    }

    #[test]
    fn orphan_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk.state.json");
        fs::write(journal_path(&path), b"{}\n").unwrap();
        let e = load(&path, NewState::IfNoTraces).unwrap_err().to_string();
        assert!(e.contains("no state file"), "{e}");
    }

    #[test]
    fn journal_bytes_grow_linearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk.state.json");
        let mut per_tunnel = Vec::new();
        for n in [50usize, 200] {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(backup_path(&path));
            let mut s = State::new(vec![]);
            for i in 0..n {
                change(&mut s, i);
            }
            save(&path, &mut s).unwrap();
            let mut j = open_journal(&path, &mut s).unwrap();
            for i in 0..n {
                change(&mut s, i);
                j.record(&mut s, &key(i)).unwrap();
            }
            per_tunnel.push(j.finish(&mut s).unwrap() / n as u64);
        }
        // Quadratic writing would make the per-tunnel cost grow 4x.
        assert!(per_tunnel[1] < per_tunnel[0] * 3 / 2, "{per_tunnel:?}");
    }
}
