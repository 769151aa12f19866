#!/usr/bin/env bash
# Runs tests/sdk/conformance.py: Cloudflare's official Python SDK against
# `psk sandbox`. Makes (or reuses) a virtual environment under target/ with
# the pinned SDK from PyPI, then drives the sandbox of the psk binary given
# as $1 (default: a fresh `cargo build`).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ $# -ge 1 ]; then
  psk=$1
else
  cargo build --locked --manifest-path "$root/Cargo.toml"
  psk="$root/target/debug/psk"
fi

venv="$root/target/sdk-venv"
stamp="$venv/requirements.txt"
if ! cmp -s "$here/requirements.txt" "$stamp"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi

exec "$venv/bin/python" "$here/conformance.py" "$psk"
