#!/usr/bin/env bash
# Bytes `psk apply` writes to the state files (state, backup, journal,
# lock) for fleets of N tunnels, counted from its write syscalls with
# strace (-s 0: no buffer contents are recorded). Sandbox at 0 ms.
#   bench/state_bytes.sh [N...]        # default 100 1000 10000
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
sizes=${*:-100 1000 10000}
out=$(mktemp -d /tmp/psk-state-bytes.XXXXXX)
(cd "$root" && cargo build --release --quiet --bin psk --example bench_sandbox)
export CLOUDFLARE_API_TOKEN=sandbox-token # the only token the sandbox accepts
age-keygen -o "$out/identity.txt" 2>/dev/null
recipient=$(age-keygen -y "$out/identity.txt")
printf 'tunnels\tgenerator\tstate_bytes_written\tper_tunnel\tfinal_state_file\n'
for n in $sizes; do
  for gen in cloudflare local; do
    dir=$out/n$n-$gen
    mkdir -p "$dir"
    "$here/fleet.sh" "$n" "$gen" "$recipient" >"$dir/psk.yaml"
    "$root/target/release/examples/bench_sandbox" "$dir/psk.yaml" 0 none "$dir/counters.json" >"$dir/url" &
    pid=$!
    for _ in $(seq 200); do [[ -s "$dir/url" ]] && break; sleep 0.05; done
    export CLOUDFLARE_BASE_URL
    CLOUDFLARE_BASE_URL=$(sed -n 's/^export CLOUDFLARE_BASE_URL=//p' "$dir/url")
    strace -f -qq -s 0 -y -e trace=write,pwrite64,writev,pwritev -o "$dir/trace" \
      "$root/target/release/psk" apply -c "$dir/psk.yaml" --rate-limit 1000000/1s \
      --auto-approve --json >/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true
    bytes=$(grep -E '\(([0-9]+)<[^>]*psk\.state\.json[^>]*>' "$dir/trace" |
      sed -nE 's/.*= ([0-9]+)$/\1/p' | awk '{ s += $1 } END { print s + 0 }')
    printf '%s\t%s\t%s\t%.0f\t%s\n' "$n" "$gen" "$bytes" "$(echo "$bytes / $n" | bc -l)" \
      "$(stat -c %s "$dir/psk.state.json")"
  done
done
