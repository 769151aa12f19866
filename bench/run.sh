#!/usr/bin/env bash
# End-to-end benchmark of psk against the sandbox on 127.0.0.1 (issue 9).
#
#   bench/run.sh                      # 100 and 1,000 tunnels, 0 and 20 ms
#   bench/run.sh --sizes "100 1000 10000" --latencies "0 20"
#   bench/run.sh --baseline-max 1000  # largest fleet the bash loop runs on
#   bench/run.sh --rate               # only the rate-limit run (120/30 s)
#   bench/run.sh --rate-tunnels 300
#   bench/run.sh --limits "300 2000" # the reviewed flow at psk's defaults
#                                    # against Cloudflare's limits (issue 20)
#
# For each latency, fleet size and generator: a fresh sandbox, then
# `plan --offline`, `plan --out FILE`, `apply FILE` (the saved plan), `plan
# --offline` again; then a fresh sandbox and state for `apply
# --auto-approve --json` (plan and apply in one), each timed,
# with the API requests it made and 429s it got (the sandbox's counters),
# its peak RSS (/usr/bin/time) and the bytes it wrote (wchar from
# /proc/PID/io, minus its stdout/stderr: state, backup, journal and lock).
# The baseline loop (bench/baseline.sh) runs against the same sandbox.
# psk runs at its defaults against a sandbox with Cloudflare's limits
# (1,200 per 5 minutes per token, announced in headers; 200/s per IP),
# unless --lifted: then the sandbox limits nothing and psk runs with
# --rate-limit 1000000/1s --ip-limit 1000000/1, to measure psk's own cost
# (rows measured so must say so). --parallelism N overrides psk's default.
# Output: one TSV line per measurement on stdout and in $OUT/results.tsv.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
sizes="100 1000" latencies="0 20" baseline_max=1000 rate_only=0 rate_tunnels=300
parallelism="" out="" limits="" limits_latency=20 lifted=0
while (($#)); do
  case $1 in
    --sizes) sizes=$2; shift 2 ;;
    --latencies) latencies=$2; shift 2 ;;
    --baseline-max) baseline_max=$2; shift 2 ;;
    --rate) rate_only=1; shift ;;
    --rate-tunnels) rate_tunnels=$2; shift 2 ;;
    --parallelism) parallelism=$2; shift 2 ;;
    --limits) limits=$2; shift 2 ;;
    --lifted) lifted=1; shift ;;
    --limits-latency) limits_latency=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown option $1 (see the top of $0)" >&2; exit 1 ;;
  esac
done
out=${out:-$(mktemp -d /tmp/psk-bench.XXXXXX)}
mkdir -p "$out"
(cd "$root" && cargo build --release --quiet --bin psk --example bench_sandbox)
psk=$root/target/release/psk
sandbox=$root/target/release/examples/bench_sandbox
account=0123456789abcdef0123456789abcdef
export CLOUDFLARE_API_TOKEN=sandbox-token # the only token the sandbox accepts
age-keygen -o "$out/identity.txt" 2>/dev/null
recipient=$(age-keygen -y "$out/identity.txt")
results=$out/results.tsv
printf 'tunnels\tlatency_ms\tgenerator\tcommand\twall_s\trequests\tstatus_429\tpeak_rss_kb\tbytes_written\n' | tee "$results"

sandbox_pid=""
start_sandbox() { # config latency rate counters [ip-rate]
  : >"$4"
  "$sandbox" "$1" "$2" "$3" "$4" ${5:+"$5"} >"$4.url" &
  sandbox_pid=$!
  for _ in $(seq 200); do
    [[ -s "$4.url" && -s "$4" ]] && break
    sleep 0.05
  done
  export CLOUDFLARE_BASE_URL
  CLOUDFLARE_BASE_URL=$(sed -n 's/^export CLOUDFLARE_BASE_URL=//p' "$4.url")
}
stop_sandbox() {
  [[ -n $sandbox_pid ]] && kill "$sandbox_pid" 2>/dev/null && wait "$sandbox_pid" 2>/dev/null || true
  sandbox_pid=""
}
trap stop_sandbox EXIT

counter() { jq -r ".$2" "$1"; }

# measure LABEL-PREFIX N LATENCY GENERATOR COMMAND-NAME COUNTERS -- argv...
measure() {
  local prefix=$1 n=$2 lat=$3 gen=$4 name=$5 counters=$6
  shift 7
  sleep 0.12 # the counters file is rewritten every 50 ms
  local req0 r4290 t0 t1 req1 r4291 rss io wrote
  req0=$(counter "$counters" requests) r4290=$(counter "$counters" rate_limited)
  t0=$(date +%s.%N)
  # sh reaps /usr/bin/time, which reaps the command, so sh's /proc/PID/io
  # holds the command's totals when cat reads it.
  sh -c '/usr/bin/time -f %M -o "$0.rss" "$@" >"$0.out" 2>"$0.err" || echo "exit $?" >"$0.failed"; cat /proc/$$/io' \
    "$prefix" "$@" >"$prefix.io"
  t1=$(date +%s.%N)
  sleep 0.12
  req1=$(counter "$counters" requests) r4291=$(counter "$counters" rate_limited)
  rss=$(grep -Eo '^[0-9]+$' "$prefix.rss" | tail -1)
  io=$(sed -n 's/^wchar: //p' "$prefix.io")
  wrote=$((io - $(stat -c %s "$prefix.out") - $(stat -c %s "$prefix.err") - $(stat -c %s "$prefix.rss")))
  if [[ -e "$prefix.failed" ]]; then
    echo "FAILED: $name ($(cat "$prefix.failed")), see $prefix.err" >&2
    name="$name(FAILED)"
  fi
  printf '%s\t%s\t%s\t%s\t%.3f\t%s\t%s\t%s\t%s\n' "$n" "$lat" "$gen" "$name" \
    "$(echo "$t1 - $t0" | bc -l)" $((req1 - req0)) $((r4291 - r4290)) "$rss" "$wrote" | tee -a "$results"
}

if [[ -n $limits ]]; then
  # psk's defaults (no --rate-limit, --parallelism or --ip-limit) against a
  # sandbox with Cloudflare's limits: 1,200 per 5 minutes per token,
  # announced in Ratelimit headers, and 200 per second per IP.
  for n in $limits; do
    dir=$out/limits-$n
    mkdir -p "$dir"
    "$here/fleet.sh" "$n" cloudflare "$recipient" >"$dir/psk.yaml"
    start_sandbox "$dir/psk.yaml" "$limits_latency" 1200/300 "$dir/counters.json" 200/1
    measure "$dir/plan" "$n" "$limits_latency" cloudflare plan@defaults "$dir/counters.json" -- \
      "$psk" plan -c "$dir/psk.yaml" --out "$dir/saved.plan"
    measure "$dir/apply-saved" "$n" "$limits_latency" cloudflare apply-saved-plan@defaults "$dir/counters.json" -- \
      "$psk" apply -c "$dir/psk.yaml" "$dir/saved.plan" --json
    stop_sandbox
    # Requests / (time x the binding rate): 200/s while the run fits the
    # 1,200-request window, 1,200 per 300 s beyond it.
    tail -2 "$results" | awk -F'\t' -v n="$n" '{ w += $5; r += $6; e += $7 }
      END { rate = (r <= 1200) ? 200 : 4;
        printf "limits: %d tunnels, plan --out + apply FILE: %d requests in %.3f s, %d 429s, %.2f requests per rotated tunnel, %.0f%% of the binding limit (%s/s)\n",
          n, r, w, e, r / n, 100 * r / (w * rate), rate }' | tee -a "$out/limits.txt"
  done
  exit 0
fi

if ((rate_only)); then
  dir=$out/rate-$rate_tunnels
  mkdir -p "$dir"
  "$here/fleet.sh" "$rate_tunnels" cloudflare "$recipient" >"$dir/psk.yaml"
  start_sandbox "$dir/psk.yaml" 0 120/30 "$dir/counters.json"
  measure "$dir/apply" "$rate_tunnels" 0 cloudflare "apply@120/30s" "$dir/counters.json" -- \
    "$psk" apply -c "$dir/psk.yaml" --rate-limit 120/30s --auto-approve --json ${parallelism:+--parallelism "$parallelism"}
  stop_sandbox
  line=$(tail -1 "$results")
  wall=$(cut -f5 <<<"$line") reqs=$(cut -f6 <<<"$line") r429=$(cut -f7 <<<"$line")
  echo "rate: $reqs requests in ${wall}s = $(echo "$reqs / $wall" | bc -l | cut -c1-6) req/s;" \
    "limit 120/30s = 4 req/s; achieved $(echo "100 * $reqs / $wall / 4" | bc -l | cut -c1-5)%; 429s: $r429"
  exit 0
fi

psk_limits=()
((lifted)) && psk_limits=(--rate-limit 1000000/1s --ip-limit 1000000/1)
start_fleet_sandbox() { # dir latency
  if ((lifted)); then
    start_sandbox "$1/psk.yaml" "$2" none "$1/counters.json"
  else
    start_sandbox "$1/psk.yaml" "$2" 1200/300 "$1/counters.json" 200/1
  fi
}
for lat in $latencies; do
  for n in $sizes; do
    for gen in cloudflare local; do
      dir=$out/n$n-l$lat-$gen
      mkdir -p "$dir"
      "$here/fleet.sh" "$n" "$gen" "$recipient" >"$dir/psk.yaml"
      start_fleet_sandbox "$dir" "$lat"
      # psk's options follow the command they belong to.
      common=(-c "$dir/psk.yaml" ${psk_limits[@]+"${psk_limits[@]}"} ${parallelism:+--parallelism "$parallelism"})
      measure "$dir/plan-offline" "$n" "$lat" "$gen" plan--offline "$dir/counters.json" -- "$psk" plan --offline "${common[@]}"
      # The reviewed flow: a saved plan (refresh and dry runs), applied as is.
      measure "$dir/plan" "$n" "$lat" "$gen" plan "$dir/counters.json" -- "$psk" plan --out "$dir/saved.plan" "${common[@]}"
      measure "$dir/apply-saved" "$n" "$lat" "$gen" apply-saved-plan "$dir/counters.json" -- "$psk" apply "$dir/saved.plan" --json "${common[@]}"
      measure "$dir/plan-offline-after" "$n" "$lat" "$gen" plan--offline-after-apply "$dir/counters.json" -- "$psk" plan --offline "${common[@]}"
      # `apply` alone, on a fresh edge and no state: plans (refresh and dry
      # runs), then applies.
      stop_sandbox
      rm -f "$dir"/psk.state.json*
      start_fleet_sandbox "$dir" "$lat"
      measure "$dir/apply" "$n" "$lat" "$gen" apply "$dir/counters.json" -- "$psk" apply --auto-approve --json "${common[@]}"
      if [[ $gen == cloudflare ]] && ((n <= baseline_max)); then
        # A fresh budget for the loop too.
        stop_sandbox
        start_fleet_sandbox "$dir" "$lat"
        measure "$dir/baseline" "$n" "$lat" bash-loop baseline "$dir/counters.json" -- \
          "$here/baseline.sh" "$CLOUDFLARE_BASE_URL" "$account" "$n" "$recipient" "$dir/baseline-sealed"
      fi
      stop_sandbox
    done
  done
done

echo
echo "psk apply / baseline loop (same sandbox, same run):"
awk -F'\t' 'NR > 1 && ($4 == "apply" || $4 == "apply-saved-plan") { a[$1 "\t" $2 "\t" $3 "\t" $4] = $5 }
  NR > 1 && $4 == "baseline" { b[$1 "\t" $2] = $5 }
  END { for (k in a) { split(k, p, "\t"); if ((p[1] "\t" p[2]) in b)
    printf "  %s tunnels, %s ms, %s generator, %s: %.2fs, loop %.2fs, loop/psk = %.1fx\n",
      p[1], p[2], p[3], p[4], a[k], b[p[1] "\t" p[2]], b[p[1] "\t" p[2]] / a[k] } }' "$results" | sort -n -k1
echo "results: $results"
