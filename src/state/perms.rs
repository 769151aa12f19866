//! A warning when the state's folder lets anyone on the machine write.
//!
//! The state holds every sealed PSK and the journal what an apply is doing;
//! in a folder every user may write to, another user could swap either (or
//! plant a file under the journal's name) between two runs. psk cannot fix
//! the folder for the user, but a writer says so before relying on it.

use std::path::{Path, PathBuf};

/// The sentence to print when `state`'s folder is world-writable, or
/// `None` when it is not (or its mode cannot be read).
pub fn world_writable_warning(state: &Path) -> Option<String> {
    let dir = match state.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mode = mode_of(&dir)?;
    if mode & 0o002 == 0 {
        return None;
    }
    Some(format!(
        "warning: the folder of the state file, {}, is writable by every user (mode {:o}); anyone on this machine could replace {} or its journal. Run `chmod o-w {}` or keep the state elsewhere",
        dir.display(),
        mode & 0o7777,
        state.file_name().map_or_else(|| state.display().to_string(), |n| n.to_string_lossy().into_owned()),
        dir.display()
    ))
}

/// Prints [`world_writable_warning`] on stderr, if any.
pub fn warn_if_world_writable(state: &Path) {
    if let Some(w) = world_writable_warning(state) {
        eprintln!("{w}");
    }
}

#[cfg(unix)]
fn mode_of(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir).ok().map(|m| m.permissions().mode())
}

#[cfg(not(unix))]
fn mode_of(_dir: &Path) -> Option<u32> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn warns_only_for_a_world_writable_folder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("psk.state.json");
        let set = |m: u32| {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(0o755);
        assert_eq!(world_writable_warning(&state), None);
        set(0o770);
        assert_eq!(world_writable_warning(&state), None);
        set(0o1777);
        let w = world_writable_warning(&state).unwrap();
        assert!(w.contains("mode 1777") && w.contains("chmod o-w"), "{w}");
        set(0o757);
        assert!(world_writable_warning(&state).is_some());
        set(0o700);
    }
}
