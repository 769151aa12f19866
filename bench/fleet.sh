#!/usr/bin/env bash
# Prints a psk.yaml of N tunnels in one account, one site per tunnel, every
# tunnel due (the sandbox dates its PSKs a year back) under a 1-day policy
# using GENERATOR (cloudflare or local), sealed to RECIPIENT.
# Usage: bench/fleet.sh N GENERATOR RECIPIENT
set -euo pipefail
n=$1 generator=$2 recipient=$3
cat <<YAML
version: 1
state: psk.state.json
recipients:
  - $recipient
defaults:
  policy: bench
policies:
  bench:
    rotate_every: 1d
    generator: $generator
accounts:
  bench:
    id: 0123456789abcdef0123456789abcdef
    tunnels:
YAML
awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "      - name: t%05d\n        id: %032x\n        site: s%05d\n", i, i, i }'
