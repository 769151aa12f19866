//! The sandbox driven by Cloudflare's official Python SDK
//! (`tests/sdk/conformance.py`), from `cargo test` too. `.ci/run` runs it on
//! every build; here it is opt-in, since it needs Python and PyPI.

use std::process::Command;

#[test]
#[ignore = "needs python3 and PyPI (it installs the pinned `cloudflare` SDK into target/sdk-venv); .ci/run runs it, or run `cargo test --test it sdk_conformance -- --ignored`"]
fn the_official_python_sdk_drives_every_operation_of_the_sandbox() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/run.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_psk"))
        .output()
        .expect("bash runs tests/sdk/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("against psk sandbox:") && !stdout.contains("FAIL"),
        "{stdout}\n{stderr}"
    );
}
