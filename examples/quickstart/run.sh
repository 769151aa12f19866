#!/usr/bin/env bash
# The quick start: plan and apply examples/quickstart/psk.yaml against the
# sandbox built into psk (no Cloudflare account, no token). Works in a temp
# folder, so the repository stays clean.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

# Not --quiet: a first build takes minutes, and cargo shows how far it is.
echo "Building psk (the first build takes two to three minutes on two cores)..." >&2
cargo build --locked --manifest-path "$root/Cargo.toml"
# Where cargo put it: CARGO_TARGET_DIR (relative to where cargo runs, as
# cargo reads it), a `build.target-dir` in a cargo config, or target/.
target=$(cargo metadata --locked --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
psk="$target/debug/psk"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/psk.yaml" "$work/psk.yaml"
# An identity file is private, like an SSH key (psk warns otherwise).
install -m 600 "$here/demo-identity.txt" "$work/demo-identity.txt"
cd "$work"

# Each command in bold on a terminal; plain text in a log or a pipe, and
# under NO_COLOR (no-color.org), as psk itself does.
if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
  step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
else
  step() { printf '\n$ %s\n' "$*"; }
fi

step psk validate
"$psk" validate

step psk plan --sandbox
"$psk" plan --sandbox

step psk apply --sandbox --auto-approve
"$psk" apply --sandbox --auto-approve

step "psk apply --sandbox --auto-approve   # again: one tunnel of site fra per apply"
"$psk" apply --sandbox --auto-approve

step psk plan --sandbox --detailed-exitcode
"$psk" plan --sandbox --detailed-exitcode

step "psk plan --offline --at +100d   # what is due in 100 days?"
"$psk" plan --offline --at +100d

step "psk status --at +100d   # where every key stands then"
"$psk" status --at +100d

step "psk show fra-primary --identity demo-identity.txt | wc -c   # the PSK opens (not printed here)"
"$psk" show fra-primary --identity demo-identity.txt | wc -c

printf '\nThe quick start worked. The state it wrote (PSKs sealed with age) was in %s and is now removed.\n' "$work"
