#!/usr/bin/env bash
# The quick start: plan and apply examples/quickstart/psk.yaml against the
# sandbox built into psk (no Cloudflare account, no token). Works in a temp
# folder, so the repository stays clean.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

cargo build --locked --quiet --manifest-path "$root/Cargo.toml"
psk="$root/target/debug/psk"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/psk.yaml" "$work/psk.yaml"
# An identity file is private, like an SSH key (psk warns otherwise).
install -m 600 "$here/demo-identity.txt" "$work/demo-identity.txt"
cd "$work"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step psk validate
"$psk" validate

step psk --sandbox plan
"$psk" --sandbox plan

step psk --sandbox apply --auto-approve
"$psk" --sandbox apply --auto-approve

step "psk --sandbox apply --auto-approve   # again: one tunnel of site fra per apply"
"$psk" --sandbox apply --auto-approve

step psk --sandbox plan --detailed-exitcode
"$psk" --sandbox plan --detailed-exitcode

step "psk plan --offline --at $(date -u -d '+100 days' +%Y-%m-%d)   # what is due in 100 days?"
"$psk" plan --offline --at "$(date -u -d '+100 days' +%Y-%m-%d)"

step "psk status --at $(date -u -d '+100 days' +%Y-%m-%d)   # where every key stands then"
"$psk" status --at "$(date -u -d '+100 days' +%Y-%m-%d)"

step "psk show fra-primary --identity demo-identity.txt | wc -c   # the PSK opens (not printed here)"
"$psk" show fra-primary --identity demo-identity.txt | wc -c

printf '\nThe quick start worked. The state it wrote (PSKs sealed with age) was in %s and is now removed.\n' "$work"
