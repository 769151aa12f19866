#!/usr/bin/env bash
# A verified rollout: plan and apply examples/verified/psk.yaml against
# `psk sandbox`, whose tunnels go down on a new key until their far end
# (the router) holds it. Both paths of each site rotate in one apply, one
# after another; the two sites go side by side. Works in a temp folder.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

cargo build --locked --quiet --manifest-path "$root/Cargo.toml"
# Where cargo put it: CARGO_TARGET_DIR (relative to where cargo runs, as
# cargo reads it), a `build.target-dir` in a cargo config, or target/.
target=$(cargo metadata --locked --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
psk="$target/debug/psk"

work=$(mktemp -d)
cp "$here/psk.yaml" "$work/psk.yaml"
cd "$work"

# A free port on 127.0.0.1 for the sandbox.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$psk" sandbox --listen "127.0.0.1:$port" --health-delay 1 >sandbox.log &
sandbox=$!
trap 'kill "$sandbox" 2>/dev/null; wait "$sandbox" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do grep -q "^export" sandbox.log 2>/dev/null && break; sleep 0.1; done

export CLOUDFLARE_BASE_URL="http://127.0.0.1:$port/client/v4"
export CLOUDFLARE_API_TOKEN=sandbox-token
export PSK_SANDBOX_URL="http://127.0.0.1:$port"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step psk plan
"$psk" plan

step "psk apply --auto-approve   # rotate, deliver, verify; then the next path of the site"
"$psk" apply --auto-approve

step psk plan --detailed-exitcode
"$psk" plan --detailed-exitcode

printf '\nThe verified rollout worked: every path of both sites has a new PSK and came back up.\n'
