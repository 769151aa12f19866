#!/usr/bin/env bash
# Redraws docs/images/rotation-calendar.png: the rotation calendar of a
# 24-tunnel fleet (twelve sites of two paths, a weekend window, keys
# spread over three weeks) as `psk plan --format markdown` writes it,
# drawn by Mermaid (the version the calendar test pins, tests/mermaid/)
# in Debian's headless Chromium. Made once and committed, not a CI step.
# Needs cargo, node and npm, and chromium (`apt-get install chromium`).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/docs/images/rotation-calendar.png}
cd "$root"
cargo build --quiet --locked
target=$(cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')
psk=$target/debug/psk
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp tests/mermaid/package.json tests/mermaid/package-lock.json "$work/"
(cd "$work" && npm ci --no-audit --no-fund --loglevel=error)

# The fleet, its keys made today in the sandbox (two applies: one path of
# each site per apply; the weekend ones wait for their window), then
# planned 80 days on: some keys due now, the
# rest falling due over the weeks after, by their spread slots.
{
  printf 'version: 1\naccount_id: 023e105f4ecef8ad9ca31a8372d0c353\n'
  printf 'recipients:\n  - age1hulcwrj8drla6mh0v9udwl0q98pgp45sn8l8c6483wg2ktqld38qershhj   # the public demo key\n'
  printf 'policies:\n  default: {rotate_every: 90d, spread: 21d}\n'
  printf '  weekend:\n    rotate_every: 90d\n    spread: 21d\n'
  printf '    window: {days: [sat, sun], start: "02:00", end: "06:00", timezone: Europe/Berlin}\n'
  printf 'tunnels:\n'
  i=0
  for site in fra ams lhr cdg mad mxp zrh vie waw arn cph osl; do
    for path in 1 2; do
      printf '  - {name: %s-ipsec-%s, id: %032x, site: %s%s}\n' "$site" "$path" $((0xabc00000 + i)) "$site" \
        "$([ $((i % 6)) -lt 2 ] && printf ', policy: weekend')"
      i=$((i + 1))
    done
  done
} > "$work/psk.yaml"
(cd "$work" && "$psk" apply --sandbox --auto-approve >/dev/null 2>&1)
(cd "$work" && "$psk" apply --sandbox --auto-approve >/dev/null 2>&1)
(cd "$work" && "$psk" plan --offline --format markdown --at +80d) > "$work/plan.md"

# The diagram alone, on a page that loads Mermaid from the install above.
awk '/^```mermaid$/{on=1; next} /^```$/{if(on){exit}} on' "$work/plan.md" > "$work/calendar.mmd"
{
  printf '<!doctype html><html><head><meta charset="utf-8"><style>body{margin:16px;background:#fff;font-family:sans-serif}</style></head><body>\n'
  printf '<pre class="mermaid">\n'
  sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' "$work/calendar.mmd"
  printf '</pre>\n<script src="node_modules/mermaid/dist/mermaid.min.js"></script>\n'
  printf '<script>mermaid.initialize({startOnLoad: true, theme: "default", gantt: {useWidth: 1360}});</script>\n'
  printf '</body></html>\n'
} > "$work/page.html"
mkdir -p "$(dirname "$out")"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run \
  --user-data-dir="$work/profile" --hide-scrollbars --window-size=1400,880 \
  --virtual-time-budget=10000 --screenshot="$out" "file://$work/page.html" 2>/dev/null
echo "wrote $out"
