//! Reading and durably writing the state file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{State, STATE_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("state file {path} is not valid psk state: {message} (line {line}, column {column}).\nIt was not changed. The previous version is kept in {backup}; restore it only if you know this one is damaged")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        backup: PathBuf,
    },
    #[error("state file {path} has format version {found}, but this psk reads up to version {STATE_VERSION}. Upgrade psk; the file was not changed")]
    TooNew { path: PathBuf, found: u64 },
    #[error("cannot write state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The backup kept beside the state: the version before the last write.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".backup");
    PathBuf::from(s)
}

/// Reads the state; `Ok(None)` when there is no state file yet.
pub fn load(path: &Path) -> Result<Option<State>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let parse_err = |e: serde_json::Error| StateError::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: describe_json_error(&e),
        backup: backup_path(path),
    };
    // Check the version first, so a newer format is named as such rather
    // than reported as an unknown field.
    #[derive(serde::Deserialize)]
    struct Header {
        version: u64,
    }
    let header: Header = serde_json::from_slice(&bytes).map_err(parse_err)?;
    if header.version > STATE_VERSION {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found: header.version,
        });
    }
    let state: State = serde_json::from_slice(&bytes).map_err(parse_err)?;
    Ok(Some(state))
}

/// serde_json's message, minus its position suffix and minus any quoted
/// value: a corrupt state could put a sealed PSK's text in the message.
fn describe_json_error(e: &serde_json::Error) -> String {
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

/// Bumps the serial and writes the state durably, keeping the previous file
/// as `<path>.backup`.
pub fn save(path: &Path, state: &mut State) -> Result<(), StateError> {
    state.serial += 1;
    let bytes = state.to_bytes();
    let werr = |source: io::Error| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    match fs::read(path) {
        Ok(previous) => write_atomic(&backup_path(path), &previous).map_err(werr)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(werr(e)),
    }
    write_atomic(path, &bytes).map_err(werr)
}

/// Temp file in the same folder (mode 0600), write, fsync, rename over the
/// target, fsync the folder so the rename itself survives a power cut.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_backup_and_serial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk.state.json");
        assert!(load(&path).unwrap().is_none());
        let mut s = State::new(vec![]);
        save(&path, &mut s).unwrap();
        assert_eq!(s.serial, 1);
        assert!(!backup_path(&path).exists());
        let first = fs::read(&path).unwrap();
        save(&path, &mut s).unwrap();
        assert_eq!(s.serial, 2);
        assert_eq!(fs::read(backup_path(&path)).unwrap(), first);
        assert_eq!(load(&path).unwrap().unwrap(), s);
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
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("line"), "{e}");
        assert!(e.contains("psk.state.json.backup"), "{e}");

        fs::write(&path, b"{\"version\": 1, \"lineage\": 5}").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("wrong type"), "{e}");

        fs::write(&path, b"{\"version\": 99}").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
    }
}
