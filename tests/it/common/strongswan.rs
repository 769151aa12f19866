//! The strongSwan far end in tests: real charons in network namespaces
//! (psk's sandbox runs them, `psk::sandbox::strongswan`). A machine without
//! root or strongSwan fails these tests with what to install; nothing is
//! skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use psk::sandbox::{FarEndKind, SandboxOptions};

use super::TestEnv;

/// The delivery recipe and probe the tests run, as shipped.
pub fn recipe(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/strongswan")
        .join(script)
}

/// Fails the test, saying what to install, unless this machine can run
/// charons in namespaces.
#[track_caller]
pub fn require_strongswan() {
    if let Err(e) = psk::sandbox::strongswan::check_prerequisites() {
        panic!(
            "this test runs real strongSwan charons: {e}. .ci/run installs strongswan-charon, strongswan-swanctl and iproute2 and runs as root"
        );
    }
}

/// Sandbox options whose far ends are charons, their files under the
/// test's directory.
pub fn strongswan_options(env: &TestEnv) -> SandboxOptions {
    SandboxOptions {
        far_end: FarEndKind::Strongswan {
            dir: Some(env.path("far-ends")),
        },
        ..SandboxOptions::default()
    }
}

/// A `sh -c` line that runs `script` (deliver or verify) for the tunnel
/// psk names, against that tunnel's router in `far_ends`.
pub fn for_router(far_ends: &Path, script: &str) -> String {
    format!(
        "r=\"{}/$PSK_TUNNEL_ID/router\"; STRONGSWAN_CONF=\"$r/strongswan.conf\" SWANCTL_DIR=\"$r/swanctl\" exec {}",
        far_ends.display(),
        recipe(script).display()
    )
}

/// swanctl against one charon of a tunnel (`edge` or `router`): its
/// status and output.
pub fn swanctl(far_ends: &Path, tunnel_id: &str, side: &str, args: &[&str]) -> (bool, String) {
    let dir = far_ends.join(tunnel_id).join(side);
    let out = Command::new("swanctl")
        .args(args)
        .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
        .env("SWANCTL_DIR", dir.join("swanctl"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Whether the IKE SA on the edge of `tunnel_id` is established.
pub fn edge_up(far_ends: &Path, tunnel_id: &str) -> bool {
    let (ok, out) = swanctl(far_ends, tunnel_id, "edge", &["--list-sas", "--raw"]);
    ok && out.contains("state=ESTABLISHED")
}

/// The network namespaces whose name starts with `prefix`.
pub fn namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}
