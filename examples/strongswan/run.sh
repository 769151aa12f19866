#!/usr/bin/env bash
# psk against real strongSwan, as root: `psk sandbox --far-end strongswan`
# runs a pair of charons per tunnel in network namespaces (192.0.2.0/24
# inside them only); psk rotates both paths of the site, the recipe
# delivers each key to its router, the IKE SA comes back with it, and psk
# prints each rotation's outage. Works in a temp folder; removes
# everything it made.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ "$(id -u)" != 0 ]; then
  echo "run.sh: run it as root: it makes network namespaces" >&2
  exit 1
fi

cargo build --locked --quiet --manifest-path "$root/Cargo.toml"
psk="$root/target/debug/psk"

work=$(mktemp -d)
cp "$here/psk.yaml" "$here/deliver" "$here/verify" "$work/"
cd "$work"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$psk" sandbox --listen "127.0.0.1:$port" --far-end strongswan --far-end-dir "$work/far-ends" \
  --health-delay 0 >sandbox.log 2>&1 &
sandbox=$!
trap 'kill "$sandbox" 2>/dev/null; wait "$sandbox" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "^Press Ctrl-C" sandbox.log 2>/dev/null && break; sleep 0.1; done
if ! grep -q "^Press Ctrl-C" sandbox.log; then cat sandbox.log >&2; exit 1; fi
eval "$(grep '^export' sandbox.log)"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
edge_sa() {
  local d="$PSK_SANDBOX_FAR_ENDS/$1/edge"
  STRONGSWAN_CONF="$d/strongswan.conf" SWANCTL_DIR="$d/swanctl" swanctl --list-sas --raw |
    tr ' ' '\n' | grep -E '^(state|established)=' | tr '\n' ' '
}

step "swanctl --list-sas   # on Cloudflare's side, before"
for id in 0123456789abcdef0123456789abcdef 0123456789abcdef0123456789abcd01; do
  echo "$id: $(edge_sa "$id")"
done

step "psk apply --auto-approve   # rotate, deliver by the recipe, verify; then the next path"
"$psk" apply --auto-approve

step "swanctl --list-sas   # on Cloudflare's side, after: new IKE SAs, with the new keys"
for id in 0123456789abcdef0123456789abcdef 0123456789abcdef0123456789abcd01; do
  echo "$id: $(edge_sa "$id")"
done

step "psk status   # the last outage per tunnel, p50/p95 over the fleet"
"$psk" status

printf '\nBoth paths have a new PSK, their IKE SAs came back with it, and each outage is measured above.\n'
