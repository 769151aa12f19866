//! Where the state lives, decided once: a file, or an object on a store.
//!
//! psk.yaml keeps `state:` as text; `--state` may override it. The text is
//! parsed here once, in the session, into a [`Location`] that carries what
//! its store needs (the file's path, or the bucket's client and what this
//! process has read of the object), so nothing downstream parses it again
//! or guesses which store a path names.

use std::path::{Path, PathBuf};

use super::remote::{Remote, RemoteError};

/// Where one state lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// A file (with its backup, journal and lock beside it).
    File(PathBuf),
    /// An object on S3-compatible storage, with its client.
    Bucket(Remote),
}

/// Whether `text` names a state on object storage rather than a file: any
/// URL does (`s3://`, and a scheme psk refuses with a message).
pub fn is_url(text: &str) -> bool {
    text.contains("://")
}

impl Location {
    /// psk.yaml's `state:` text, a file relative to psk.yaml's folder
    /// `dir`, or a URL taken as it is.
    pub fn resolve(dir: &Path, text: &str) -> Result<Location, RemoteError> {
        if is_url(text) {
            return Ok(Location::Bucket(Remote::open(text)?));
        }
        Ok(Location::File(dir.join(text)))
    }

    /// A location given on the command line (`--state`, move-state's
    /// destination): a file relative to the working folder, or a URL.
    pub fn given(path: &Path) -> Result<Location, RemoteError> {
        match path.to_str().filter(|t| is_url(t)) {
            Some(url) => Ok(Location::Bucket(Remote::open(url)?)),
            None => Ok(Location::File(path.to_path_buf())),
        }
    }

    /// The location as the user wrote it (the URL for a bucket), for
    /// messages and for where a rescue says it belongs.
    pub fn path(&self) -> &Path {
        match self {
            Location::File(p) => p,
            Location::Bucket(r) => Path::new(&r.url),
        }
    }

    pub fn is_bucket(&self) -> bool {
        matches!(self, Location::Bucket(_))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path().display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_relative_to_psk_yaml_and_urls_are_taken_as_they_are() {
        let l = Location::resolve(Path::new("conf"), "psk.state.json").unwrap();
        assert_eq!(l.path(), Path::new("conf/psk.state.json"));
        assert!(!l.is_bucket());
        let l = Location::resolve(Path::new("conf"), "/abs/s.json").unwrap();
        assert_eq!(l.path(), Path::new("/abs/s.json"));
        let e = Location::resolve(Path::new("conf"), "gs://b/k").unwrap_err();
        assert!(e.to_string().contains("S3-compatible"), "{e}");
        let l = Location::given(Path::new("s3/psk.state.json")).unwrap();
        assert_eq!(l.to_string(), "s3/psk.state.json");
    }
}
