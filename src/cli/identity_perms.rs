//! A warning when an age identity file is open to other users, as `ssh`
//! warns about a private key.
//!
//! An identity opens every PSK sealed to it: whoever can read the file
//! can configure (or impersonate) every router of the fleet. psk cannot
//! know whether the group is trusted, so it warns rather than refuses
//! (`ssh` refuses; an operator's CI may well mount the key 0640), naming
//! the file and the `chmod` that fixes it.

use std::path::Path;

/// The warning for `path` when group or others have any access to it, or
/// `None` when only its owner has (or it is not a regular file, such as a
/// pipe from `<(pass show key)`, or its mode cannot be read).
pub fn loose_identity_warning(path: &Path) -> Option<String> {
    let mode = file_mode(path)? & 0o7777;
    if mode & 0o077 == 0 {
        return None;
    }
    let shown = path.display();
    Some(format!(
        "warning: the age identity file {shown} is accessible by group or others (mode {mode:04o}); anyone who can read it can open every PSK sealed to it.\nhint: chmod 600 {}",
        shell_quoted(&shown.to_string())
    ))
}

/// Prints [`loose_identity_warning`] on stderr, if any.
pub fn warn_if_loose(path: &Path) {
    if let Some(w) = loose_identity_warning(path) {
        eprintln!("{w}");
    }
}

#[cfg(unix)]
fn file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| meta.permissions().mode())
}

#[cfg(not(unix))]
fn file_mode(_path: &Path) -> Option<u32> {
    None
}

/// `s` as one shell word, so the hint can be pasted as it is.
fn shell_quoted(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn warns_when_group_or_others_have_access() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("my key.txt");
        std::fs::write(&key, "AGE-SECRET-KEY-1...\n").unwrap();
        let set = |m: u32| std::fs::set_permissions(&key, std::fs::Permissions::from_mode(m));
        for private in [0o600, 0o400, 0o700] {
            set(private).unwrap();
            assert_eq!(loose_identity_warning(&key), None, "{private:o}");
        }
        for open in [0o644, 0o640, 0o604, 0o620, 0o660] {
            set(open).unwrap();
            let w = loose_identity_warning(&key).unwrap();
            assert!(w.contains(&format!("mode {open:04o}")), "{w}");
            assert!(w.contains(&key.display().to_string()), "{w}");
            assert!(w.contains(&format!("chmod 600 '{}'", key.display())), "{w}");
        }
        // A folder or a missing file is not an identity file to judge.
        assert_eq!(loose_identity_warning(dir.path()), None);
        assert_eq!(loose_identity_warning(&dir.path().join("none")), None);
    }

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(
            shell_quoted("/home/a/.config/psk/id.txt"),
            "/home/a/.config/psk/id.txt"
        );
        assert_eq!(shell_quoted("my key"), "'my key'");
        assert_eq!(shell_quoted("it's"), r"'it'\''s'");
    }
}
