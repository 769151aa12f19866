#!/usr/bin/env bash
# The loop an operator would write instead of psk: per tunnel, psk_generate
# with curl, the PSK out of the answer with jq, sealed with the age CLI.
# The PSK only ever sits in a shell variable and a pipe; nothing prints it.
# Usage: bench/baseline.sh BASE_URL ACCOUNT_ID N RECIPIENT OUT_DIR
set -euo pipefail
base=$1 account=$2 n=$3 recipient=$4 out=$5
mkdir -p "$out"
for ((i = 1; i <= n; i++)); do
  id=$(printf '%032x' "$i")
  psk=$(curl -sf -X POST \
    -H "Authorization: Bearer ${CLOUDFLARE_API_TOKEN:?}" \
    -H 'Content-Type: application/json' -d '{}' \
    "$base/accounts/$account/magic/ipsec_tunnels/$id/psk_generate" |
    jq -er .result.psk)
  printf '%s' "$psk" | age -r "$recipient" -o "$out/$id.age"
done
