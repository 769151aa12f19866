//! Writing the metrics for node_exporter's textfile collector.
//!
//! node_exporter reads every `*.prom` file of its folder on each scrape, so
//! it must never see half a file: the text goes to a temp file in the same
//! folder whose name does not end in `.prom` (so the collector skips it),
//! is fsynced, and is renamed over the target, then the folder is fsynced.
//! Unlike the state's writer, the file is created with the default
//! permissions (the umask's): node_exporter usually runs as another user
//! and must be able to read it, and it holds nothing secret.

use std::io;
use std::path::Path;

/// Replaces `path` with `text` atomically (see [`crate::state::durable`]).
pub fn write(path: &Path, text: &str) -> io::Result<()> {
    crate::state::durable::write_atomic_shared(path, text.as_bytes())
}
