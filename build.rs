//! Stamps `psk --version` with the commit it was built from and that
//! commit's date, so a bug report or a CI log names exactly what ran. The
//! commit's date, not the build's, so the same commit builds the same
//! binary.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let long = match (
        git(&["rev-parse", "--short=12", "HEAD"]),
        git(&["log", "-1", "--format=%cs"]),
    ) {
        (Some(commit), Some(date)) => format!("{version} (commit {commit}, {date})"),
        // Built outside a git checkout (a source archive).
        _ => format!("{version} (commit unknown)"),
    };
    println!("cargo:rustc-env=PSK_LONG_VERSION={long}");
    // A new commit or checkout changes HEAD or what it points at.
    // (In a worktree, HEAD is the worktree's own; the refs are shared.)
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={common}/{head}");
        }
        println!("cargo:rerun-if-changed={common}/packed-refs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
