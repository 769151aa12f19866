#!/usr/bin/env bash
# The outage of a rotation against real strongSwan (BENCHMARKS.md, "Outage
# per rotation"): a site of two paths, each a real pair of charons
# (`psk sandbox --far-end strongswan`), rotated ROUNDS times by `psk apply
# --replace` with delivery by examples/strongswan's recipe. Each rotation's
# outage is what psk measured and recorded (`psk status --format json`,
# `last_outage_seconds`): from Cloudflare's answer that the edge took the
# key to the path shown back up by `verify`. Prints every figure, then
# p50/p95/max. Run as root.
#
#   bench/strongswan.sh [ROUNDS] [probe|health]
#     probe  (default) verify by the recipe's probe alone (the IKE SA up
#            with the new key)
#     health verify by Cloudflare's health checks (settle 1s) and the probe
set -euo pipefail

rounds=${1:-10}
mode=${2:-probe}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
recipe="$root/examples/strongswan"

if [ "$(id -u)" != 0 ]; then
  echo "bench/strongswan.sh: run it as root (network namespaces)" >&2
  exit 1
fi
# A debug build, as the tests use: the outage is strongSwan's and verify's
# time, not psk's CPU (PSK_BIN picks another binary).
if [ -z "${PSK_BIN:-}" ]; then
  cargo build --locked --quiet --manifest-path "$root/Cargo.toml"
  target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  PSK_BIN="$target/debug/psk"
fi
psk=$PSK_BIN

work=$(mktemp -d)
cp "$recipe/psk.yaml" "$recipe/deliver" "$recipe/verify" "$work/"
cd "$work"
if [ "$mode" = probe ]; then
  # The probe alone decides; Cloudflare's health checks are not read.
  sed -i 's/^    verify:$/    verify:\n      health_checks: false/' psk.yaml
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$psk" sandbox --listen "127.0.0.1:$port" --far-end strongswan --far-end-dir "$work/far-ends" \
  --health-delay 0 >sandbox.log 2>&1 &
sandbox=$!
trap 'kill "$sandbox" 2>/dev/null; wait "$sandbox" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "^Press Ctrl-C" sandbox.log 2>/dev/null && break; sleep 0.1; done
grep -q "^Press Ctrl-C" sandbox.log || { cat sandbox.log >&2; exit 1; }
eval "$(grep '^export' sandbox.log)"

# Adopt the sandbox's first keys, so every round is a plain rotation.
"$psk" apply --auto-approve >/dev/null
: >outages.txt
for i in $(seq "$rounds"); do
  "$psk" apply --auto-approve --replace fra-primary --replace fra-secondary >apply.log 2>&1 || {
    cat apply.log >&2
    exit 1
  }
  "$psk" status --format json |
    python3 -c 'import json,sys; [print(t["name"], t["last_outage_seconds"]) for t in json.load(sys.stdin)["tunnels"]]' |
    tee -a outages.txt | sed "s/^/round $i: /"
done
python3 - outages.txt "$mode" <<'PY'
import math, sys
xs = sorted(float(l.split()[1]) for l in open(sys.argv[1]))
def rank(p):
    return xs[max(1, math.ceil(p * len(xs) / 100)) - 1]
print(f"{sys.argv[2]}: {len(xs)} rotations, outage p50 {rank(50):.3f} s, p95 {rank(95):.3f} s, max {xs[-1]:.3f} s")
PY
