#!/usr/bin/env bash
# Two builds of the facade on one host, for a change that must not cost speed (a refactor): calls/s
# at concurrency 64 and the facade's CPU per call, in interleaved rounds so that a drift of the
# shared machine hits both builds alike. Prints a Markdown table of every round and the medians.
#
#   scripts/compare_builds.sh BEFORE_DIR AFTER_DIR [ROUNDS] [SECONDS]
#
# Each DIR holds an optimised `connect-facade` (e.g. a `git worktree`'s target/dist). The load
# generator and the simulator come from AFTER_DIR (`cargo build --profile dist --workspace` builds
# both); the facade runs pinned to CPU 0, the simulator and the load generator share CPU 1, as in
# scripts/bench.sh, so every figure is per core of the facade.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: scripts/compare_builds.sh BEFORE_DIR AFTER_DIR [ROUNDS] [SECONDS]" >&2; exit 2; }
before=$1 after=$2 rounds=${3:-5} seconds=${4:-10}
for bin in "$before/connect-facade" "$after/connect-facade" "$after/loadgen"; do
  [ -x "$bin" ] || { echo "no $bin" >&2; exit 1; }
done
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
if [ "$(nproc)" -ge 2 ]; then app_cpu=0 load_cpu=1; else app_cpu=0 load_cpu=0; fi
cpu_s() { awk '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / 100 }' "/proc/$1/stat"; }

taskset -c "$load_cpu" "$after/connect-facade" simulate --listen 127.0.0.1:0 \
  --fixtures fixtures/bench.yaml --log-format json >"$work/sim.out" 2>"$work/sim.err" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/sim.out" ] && break; sleep 0.1; done
sim_url=$(head -n1 "$work/sim.out"); sim_url=${sim_url##* }

# start NAME DIR: that build's facade on the application CPU; sets URL_NAME and PID_NAME.
start() {
  local name=$1 dir=$2 port
  port=$(free_port)
  env AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret AWS_EC2_METADATA_DISABLED=true \
    RUST_LOG=info taskset -c "$app_cpu" "$dir/connect-facade" serve --listen "127.0.0.1:$port" \
    --region us-east-1 --endpoint-url "$sim_url" --rate-limit 1000000 --rate-burst 1000000 \
    --log-format json >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  printf -v "PID_$name" %s "$!"
  printf -v "URL_$name" %s "http://127.0.0.1:$port"
  wait_port "$port" 60
}
start before "$before"
start after "$after"

# run NAME ROUND: one measured run; appends "NAME ROUND calls_per_s cpu_us_per_call".
run() {
  local name=$1 round=$2 pid url cpu0 cpu1
  pid=PID_$name url=URL_$name
  taskset -c "$load_cpu" "$after/loadgen" run --quiet --target grpc --url "${!url}" --concurrency 64 \
    --duration 2s --warmup 0 >/dev/null
  cpu0=$(cpu_s "${!pid}")
  taskset -c "$load_cpu" "$after/loadgen" run --quiet --target grpc --url "${!url}" --concurrency 64 \
    --duration "${seconds}s" --warmup 0 --json "$work/$name-$round.json" >/dev/null
  cpu1=$(cpu_s "${!pid}")
  python3 - "$work/$name-$round.json" "$cpu0" "$cpu1" "$name" "$round" >>"$work/rows" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
cpu = float(sys.argv[3]) - float(sys.argv[2])
assert not report["errors"], f"errors: {report['errors']}"
print(sys.argv[4], sys.argv[5], round(report["throughput_per_s"]), round(cpu / report["calls"] * 1e6, 1))
EOF
}
for round in $(seq 1 "$rounds"); do
  # Alternate which build goes first, so neither always meets the warmer machine.
  if [ $((round % 2)) = 1 ]; then run before "$round"; run after "$round"; else run after "$round"; run before "$round"; fi
done
python3 - "$work/rows" "$before" "$after" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
print(f"| round | before: calls/s | after: calls/s | before: CPU µs/call | after: CPU µs/call |")
print("|---|---|---|---|---|")
by = {(name, r): (float(rate), float(cpu)) for name, r, rate, cpu in rows}
rounds = sorted({int(r) for _, r, _, _ in rows})
for r in rounds:
    b, a = by[("before", str(r))], by[("after", str(r))]
    print(f"| {r} | {b[0]:,.0f} | {a[0]:,.0f} | {b[1]} | {a[1]} |")
med = lambda name, i: statistics.median(by[(name, str(r))][i] for r in rounds)
print(f"| median | {med('before', 0):,.0f} | {med('after', 0):,.0f} | {med('before', 1)} | {med('after', 1)} |")
print()
print(f"before: {sys.argv[2]}; after: {sys.argv[3]}; calls/s {100 * (med('after', 0) / med('before', 0) - 1):+.1f}%, "
      f"CPU per call {100 * (med('after', 1) / med('before', 1) - 1):+.1f}%")
EOF
