#!/usr/bin/env bash
# A token whose budget another client has mostly spent (issue 20): the
# sandbox allows 120 requests per 30 s (announced in Ratelimit headers),
# another client spends 100 of them (POST /sandbox/spend), then `psk plan`
# of N tunnels (default 60) runs at psk's defaults. Prints its wall time,
# requests, 429s and psk's own note about the wait.
#
#   bench/shared.sh [N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
n=${1:-60}
out=$(mktemp -d /tmp/psk-shared.XXXXXX)
(cd "$root" && cargo build --release --quiet --bin psk --example bench_sandbox)
export CLOUDFLARE_API_TOKEN=sandbox-token # the only token the sandbox accepts
age-keygen -o "$out/identity.txt" 2>/dev/null
"$here/fleet.sh" "$n" cloudflare "$(age-keygen -y "$out/identity.txt")" >"$out/psk.yaml"
"$root/target/release/examples/bench_sandbox" "$out/psk.yaml" 20 120/30 "$out/counters.json" 200/1 >"$out/url" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do [[ -s "$out/url" && -s "$out/counters.json" ]] && break; sleep 0.05; done
export CLOUDFLARE_BASE_URL
CLOUDFLARE_BASE_URL=$(sed -n 's/^export CLOUDFLARE_BASE_URL=//p' "$out/url")
curl -s -X POST "${CLOUDFLARE_BASE_URL%/client/v4}/sandbox/spend" -d '{"requests": 100}'
echo
t0=$(date +%s.%N)
"$root/target/release/psk" plan -c "$out/psk.yaml" >"$out/plan.out" 2>"$out/plan.err"
t1=$(date +%s.%N)
sleep 0.12
echo "psk plan of $n tunnels after another client spent 100 of 120/30s:" \
  "$(jq -r .requests "$out/counters.json") requests, $(jq -r .rate_limited "$out/counters.json") 429s," \
  "$(echo "$t1 - $t0" | bc -l | cut -c1-6) s"
grep '^note:' "$out/plan.err" || true
