#!/usr/bin/env bash
# Measures the facade against the alternatives and writes docs/BENCHMARKS.md.
#
#   scripts/bench.sh            # full run, release builds (about 30 minutes with the soak, after a 2-7 minute build)
#   scripts/bench.sh --smoke    # a few seconds per path with the debug build CI already has;
#                               # writes target/bench/BENCHMARKS.md and fails if any path fails
#
# Paths, one after the other (at the fixed rates, in interleaved rounds), against the same simulator
# (fixtures/bench.yaml: no faults, no quota):
#   facade  connect-facade serve (limiter high enough not to interfere)      the product
#   direct  aws-sdk-connect straight to the simulator (loadgen --target sdk)  the floor
#   bare    a tonic server answering at once (loadgen bare-server)            the gRPC hop alone
#   python  grpcio + boto3 (bench/python/server.py)                           the obvious alternative
# The application side runs pinned to CPU 0; the simulator and the load generator share CPU 1, so
# every figure is per core of application.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

smoke=0
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --out) out=$2; shift ;;
    *) echo "usage: scripts/bench.sh [--smoke] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done

if [ "$smoke" = 1 ]; then
  duration=1s warmup=300ms soak_s=4 soak_sample=2 idle_max=2 callgrind_calls=(5 15) callgrind_reps=1 burst_s=1 profile=debug
  lat_rounds=2 lat_s=1s lat_warmup=300ms
  out=${out:-target/bench/BENCHMARKS.md}
else
  # idle_max: the SDK's pooled connections close after 90 s idle, checked every 90 s.
  duration=10s warmup=2s soak_s=300 soak_sample=60 idle_max=200 callgrind_calls=(300 1300) callgrind_reps=3 burst_s=15 profile=dist
  lat_rounds=11 lat_s=5s lat_warmup=1s
  out=${out:-docs/BENCHMARKS.md}
fi
work=$root/target/bench
results=$work/results
rm -rf "$results"
mkdir -p "$results"

echo "== build ($profile)"
if [ "$profile" = dist ]; then
  # The shipped binary's profile (whole-program optimisation), as the image builds it.
  cargo build --profile dist --locked --workspace
else
  # The same feature set `cargo test --workspace` builds: nothing is compiled twice in CI.
  cargo test --workspace --locked --no-run
fi
bin=$root/target/$profile
[ -x "$bin/connect-facade" ] && [ -x "$bin/loadgen" ] || { echo "missing binaries in $bin" >&2; exit 1; }

echo "== tools"
venv=${BENCH_VENV:-$work/venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import grpc, grpc_tools, boto3, jinja2" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "boto3==1.44.8" "grpcio==1.85.1" "grpcio-tools==1.85.1" -r scripts/requirements-reports.txt
fi
if ! command -v h2load >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq nghttp2-client >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq nghttp2-client >/dev/null 2>&1; }) || true
  fi
fi
command -v h2load >/dev/null || echo "h2load unavailable: the cross-check is skipped"
# perf: the native profile (callgrind's virtual CPU lacks some instructions, e.g. SHA, so its
# profile alone can point at the wrong place).
perf_works() { perf record -q -o /dev/null -- true >/dev/null 2>&1; }
if ! perf_works && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get install -y -qq linux-perf >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq linux-perf >/dev/null 2>&1; }) || true
fi
perf_works || echo "perf unavailable (or not permitted): the native profile is skipped"

if [ "$(nproc)" -ge 2 ]; then app_cpu=0 load_cpu=1; else app_cpu=0 load_cpu=0; fi
app() { taskset -c "$app_cpu" "$@"; }
load() { taskset -c "$load_cpu" "$@"; }

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
cpu_s() { awk '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / 100 }' "/proc/$1/stat"; }
status_kib() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
# start_printing_addr LOG CPU COMMAND...: COMMAND in the background on CPU; its first stdout line is
# its address. Sets PID (the command's own, taskset execs it) and LINE.
start_printing_addr() {
  local log=$1 cpu=$2; shift 2
  taskset -c "$cpu" "$@" >"$log.out" 2>"$log.err" &
  PID=$!; pids+=("$PID")
  for _ in $(seq 1 300); do
    LINE=$(head -n1 "$log.out" 2>/dev/null || true)
    [ -n "$LINE" ] && return 0
    kill -0 "$PID" 2>/dev/null || { cat "$log.err" >&2; return 1; }
    sleep 0.1
  done
  echo "no address from $*" >&2; return 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# loadgen LABEL URL TARGET ARGS...: a measured run, its JSON in results/LABEL.json.
loadgen() {
  local label=$1 url=$2 target=$3; shift 3
  load "$bin/loadgen" run --quiet --label "$label" --target "$target" --url "$url" \
    --json "$results/$label.json" "$@" >>"$results/loadgen.log"
}
# direct_run LABEL ARGS...: aws-sdk-connect straight to the simulator, the load generator itself the
# application (on the application's CPU), its JSON in results/LABEL.json.
direct_run() {
  local label=$1; shift
  app "$bin/loadgen" run --quiet --label "$label" --target sdk --url "$sim_url" \
    --json "$results/$label.json" "$@" >>"$results/loadgen.log"
}
# app_run LABEL PID URL ARGS...: a measured run against a server PID, with the server's CPU time.
app_run() {
  local label=$1 pid=$2 url=$3; shift 3
  local before after
  before=$(cpu_s "$pid")
  loadgen "$label" "$url" grpc --warmup 0 "$@"
  after=$(cpu_s "$pid")
  printf '{"cpu_s": %s, "rss_kib": %s, "peak_rss_kib": %s}\n' \
    "$(awk "BEGIN { print $after - $before }")" "$(status_kib "$pid" VmRSS)" "$(status_kib "$pid" VmHWM)" \
    >"$results/$label.app.json"
}

echo "== simulator (CPU $load_cpu)"
start_printing_addr "$work/simulator" "$load_cpu" "$bin/connect-facade" simulate --listen 127.0.0.1:0 \
  --fixtures fixtures/bench.yaml --log-format json
sim_url=${LINE##* }
echo "$sim_url"

facade_env=(env AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret AWS_EC2_METADATA_DISABLED=true)
facade_log=info
# limiter_flags FLAGS...: sets `rate` to the flags that set the limiter high enough not to interfere,
# unless FLAGS set it themselves.
limiter_flags() {
  rate=(--rate-limit 1000000 --rate-burst 1000000)
  case " $* " in *" --rate-limit "*) rate=() ;; esac
}
# start_facade LOG FLAGS...: the facade on CPU 0; sets FACADE_PID, FACADE_URL, METRICS_PORT.
start_facade() {
  local log=$1; shift
  local port; port=$(free_port); METRICS_PORT=$(free_port)
  local rate; limiter_flags "$@"
  "${facade_env[@]}" RUST_LOG="$facade_log" taskset -c "$app_cpu" "$bin/connect-facade" serve --listen "127.0.0.1:$port" \
    --metrics-listen "127.0.0.1:$METRICS_PORT" --region us-east-1 --endpoint-url "$sim_url" \
    "${rate[@]}" --log-format json "$@" >"$work/$log.out" 2>"$work/$log.err" &
  FACADE_PID=$!; pids+=("$FACADE_PID")
  wait_port "$port" 60
  FACADE_URL=http://127.0.0.1:$port
}
closed_loops() { # PREFIX PID URL
  for c in 1 16 64; do app_run "$1-c$c" "$2" "$3" --concurrency "$c" --duration "$duration"; done
}

echo "== facade"
start_facade facade
status_kib "$FACADE_PID" VmRSS >"$results/facade.idle_rss_kib"
loadgen warmup-facade "$FACADE_URL" grpc --concurrency 64 --duration "$warmup" --warmup 0
closed_loops facade "$FACADE_PID" "$FACADE_URL"
facade_max=$(python3 -c "import json,sys; print(max(json.load(open(f'$results/facade-c{c}.json'))['throughput_per_s'] for c in (1,16,64)))")
rate=$(python3 -c "print(max(1, int($facade_max / 2)))")
echo "$rate" >"$results/fixed_rate"

if command -v h2load >/dev/null; then
  echo "== h2load cross-check (facade, 16 streams over 4 connections)"
  "$bin/loadgen" frame --out "$work/request.bin"
  app_run facade-c16x4 "$FACADE_PID" "$FACADE_URL" --concurrency 16 --connections 4 --duration "$duration"
  n=$(python3 -c "import json; print(max(200, int(json.load(open('$results/facade-c16x4.json'))['throughput_per_s'] * ${duration%s})))")
  ok_before=$(curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^grpc_server_handled_total.*grpc_code="OK"/ { print $2 }')
  load h2load -n "$n" -c 4 -m 4 -t 1 --data="$work/request.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "$FACADE_URL/amazonconnect.v1.ContactService/CreatePersistentContactAssociation" >"$results/h2load.txt"
  ok_after=$(curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^grpc_server_handled_total.*grpc_code="OK"/ { print $2 }')
  echo "$n $((${ok_after:-0} - ${ok_before:-0}))" >"$results/h2load.counts"
fi
if perf_works; then
  echo "== native profile (perf samples of the facade at concurrency 64)"
  # perf itself runs beside the load generator, not on the facade's core. Not through `load`: a
  # function in the background is a subshell, and the signal below must reach perf itself.
  taskset -c "$load_cpu" perf record -q -F 999 -p "$FACADE_PID" -o "$work/perf.data" >"$work/perf.out" 2>&1 &
  perf_pid=$!
  app_run facade-profile "$FACADE_PID" "$FACADE_URL" --concurrency 64 --duration "$duration"
  kill -TERM "$perf_pid" 2>/dev/null || true
  wait "$perf_pid" 2>/dev/null || true
  perf report -i "$work/perf.data" --no-children --sort dso,sym --stdio -g none -t '|' \
    >"$results/perf.facade.txt" 2>/dev/null || true
fi
stop "$FACADE_PID"

# layer_flags LAYER: sets `flags` to the facade flags that leave LAYER out of the stack.
layer_flags() {
  case $1 in
    retry) flags=(--max-attempts 1) ;;
    breaker) flags=(--breaker-failures 0) ;;
    limiter) flags=(--rate-limit 0) ;;
    all) flags=(--max-attempts 1 --breaker-failures 0 --rate-limit 0) ;;
  esac
}
echo "== layers (facade at concurrency 64, one layer left out at a time)"
for layer in retry breaker limiter all; do
  layer_flags "$layer"
  start_facade "facade-no-$layer" "${flags[@]}"
  loadgen "warmup-no-$layer" "$FACADE_URL" grpc --concurrency 64 --duration "$warmup" --warmup 0
  app_run "layers-no-$layer-c64" "$FACADE_PID" "$FACADE_URL" --concurrency 64 --duration "$duration"
  stop "$FACADE_PID"
done
echo "== facade logging every call (successful calls log at debug by default)"
facade_log=info,connect_facade::calls=debug
start_facade facade-log-all
facade_log=info
loadgen warmup-log-all "$FACADE_URL" grpc --concurrency 64 --duration "$warmup" --warmup 0
app_run "layers-logs-all-c64" "$FACADE_PID" "$FACADE_URL" --concurrency 64 --duration "$duration"
stop "$FACADE_PID"

echo "== direct: aws-sdk-connect straight to the simulator (CPU $app_cpu)"
for c in 1 16 64; do
  direct_run "direct-c$c" --concurrency "$c" --duration "$duration" --warmup "$warmup"
done

echo "== bare tonic hop"
start_printing_addr "$work/bare" "$app_cpu" "$bin/loadgen" bare-server --listen 127.0.0.1:0
bare_pid=$PID bare_url=http://$LINE
status_kib "$bare_pid" VmRSS >"$results/bare.idle_rss_kib"
loadgen warmup-bare "$bare_url" grpc --concurrency 64 --duration "$warmup" --warmup 0
closed_loops bare "$bare_pid" "$bare_url"

echo "== latency: $lat_rounds interleaved rounds of facade, direct and bare hop at $rate/s and 500/s"
# The added latency compares paths measured apart in time; one path after another would meet the
# shared machine's drift at different times. Short rounds in a rotating order spread it over all
# three, and the report takes the median over rounds. 11 rounds: with 5, a sign test can only pass a
# target that all five rounds meet, and one host stall in any of them left it undecided.
start_facade facade-latency
loadgen warmup-latency "$FACADE_URL" grpc --concurrency 64 --duration "$warmup" --warmup 0
# latency_run PATH LABEL RATE: one round of PATH at RATE, in results/LABEL.json (and .app.json).
latency_run() {
  local path=$1 label=$2 r=$3 pid url
  case $path in
    direct)
      direct_run "$label" --rate "$r" --duration "$lat_s" --warmup "$lat_warmup"
      return ;;
    facade) pid=$FACADE_PID url=$FACADE_URL ;;
    bare) pid=$bare_pid url=$bare_url ;;
  esac
  # The warm-up is a run of its own: the server's CPU is counted over the measured calls only.
  loadgen "warmup-$label" "$url" grpc --rate "$r" --duration "$lat_warmup" --warmup 0
  app_run "$label" "$pid" "$url" --rate "$r" --duration "$lat_s"
}
paths=(facade direct bare)
for suffix in "" 500; do
  r=$rate; [ "$suffix" = 500 ] && r=500
  for round in $(seq 1 "$lat_rounds"); do
    for i in 0 1 2; do
      path=${paths[$(((round - 1 + i) % 3))]}
      latency_run "$path" "$path-rate$suffix.r$round" "$r"
    done
  done
done
stop "$FACADE_PID"
# The bare hop stays up, idle, for the host-drift run at the end.

echo "== python: grpcio + boto3"
start_printing_addr "$work/python" "$app_cpu" "$venv/bin/python" bench/python/server.py --endpoint-url "$sim_url"
py_pid=$PID py_url=http://$LINE
status_kib "$py_pid" VmRSS >"$results/python.idle_rss_kib"
loadgen warmup-python "$py_url" grpc --concurrency 64 --duration "$warmup" --warmup 0
closed_loops python "$py_pid" "$py_url"
py_max=$(python3 -c "import json; print(max(json.load(open(f'$results/python-c{c}.json'))['throughput_per_s'] for c in (1,16,64)))")
# Open loop past a server's capacity measures only its queue: the fixed rates it cannot sustain are skipped.
if python3 -c "import sys; sys.exit(0 if $rate <= 0.8 * $py_max else 1)"; then
  app_run python-rate "$py_pid" "$py_url" --rate "$rate" --duration "$duration"
fi
if python3 -c "import sys; sys.exit(0 if 500 <= 0.8 * $py_max else 1)"; then
  app_run python-rate500 "$py_pid" "$py_url" --rate 500 --duration "$duration"
fi
stop "$py_pid"

echo "== callgrind: instructions per call (facade, each layer left out, direct, bare hop), ${callgrind_calls[*]} calls"
# callgrind_facade NAME CALLS FLAGS...: the facade's instructions over CALLS calls at c=1, in
# results/callgrind.NAME.CALLS (then .rN for repeat N). Counting starts once it listens: its start-up includes a clock
# calibration (governor's quanta clock) that runs for a time, not a number of instructions, so it
# would not cancel out.
callgrind_facade() {
  local name=$1 n=$2; shift 2
  local port; port=$(free_port)
  local rate; limiter_flags "$@"
  "${facade_env[@]}" taskset -c "$app_cpu" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$results/callgrind.$name.$n$cg_suffix" \
    "$bin/connect-facade" serve --listen "127.0.0.1:$port" --region us-east-1 --endpoint-url "$sim_url" \
    "${rate[@]}" --log-format json "$@" >"$work/callgrind.out" 2>"$work/callgrind.err" &
  local vg_pid=$!; pids+=("$vg_pid")
  wait_port "$port" 180
  callgrind_control --instr=on "$vg_pid" >/dev/null 2>&1
  loadgen "callgrind-$name-$n" "http://127.0.0.1:$port" grpc --concurrency 1 --calls "$n" --warmup 0
  stop "$vg_pid"
}
# Repeated, so the report can take each figure's median: a layer costs about as many instructions as
# one run differs from the next (timers fire by wall time, and valgrind slows the calls 50-fold).
for ((r = 1; r <= callgrind_reps; r++)); do
  cg_suffix=$([ "$r" = 1 ] || echo ".r$r")
  for n in "${callgrind_calls[@]}"; do
    callgrind_facade facade "$n"
    for layer in retry breaker limiter all; do
      layer_flags "$layer"
      callgrind_facade "facade-no-$layer" "$n" "${flags[@]}"
    done
    app valgrind --tool=callgrind --callgrind-out-file="$results/callgrind.direct.$n$cg_suffix" \
      "$bin/loadgen" run --quiet --target sdk --url "$sim_url" --concurrency 1 --calls "$n" --warmup 0 \
      >>"$results/loadgen.log" 2>"$work/callgrind-direct.err"
    start_printing_addr "$work/callgrind-bare" "$app_cpu" valgrind --tool=callgrind --instr-atstart=no \
      --callgrind-out-file="$results/callgrind.bare.$n$cg_suffix" "$bin/loadgen" bare-server --listen 127.0.0.1:0
    callgrind_control --instr=on "$PID" >/dev/null 2>&1
    loadgen "callgrind-bare-$n" "http://$LINE" grpc --concurrency 1 --calls "$n" --warmup 0
    stop "$PID"
  done
done
# Every function's self instructions in both facade runs: their difference is the per-call profile.
for n in "${callgrind_calls[@]}"; do
  callgrind_annotate --inclusive=no --auto=no --threshold=100 "$results/callgrind.facade.$n" \
    >"$results/callgrind.facade.$n.annotated" 2>/dev/null
done

echo "== memory soak: ${soak_s}s at the fixed rate ($rate/s), then idle until the connections close"
start_facade facade-soak
# sample LABEL: RSS KiB, open descriptors, threads, live Tokio tasks (the facade's own gauge).
sample() {
  local tasks
  tasks=$(curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '$1 == "connect_facade_runtime_alive_tasks" { print $2 }')
  echo "$1 $(status_kib "$FACADE_PID" VmRSS) $(fds "$FACADE_PID") $(status_kib "$FACADE_PID" Threads) ${tasks:-0}" \
    >>"$results/soak.samples"
}
sample idle
read -r _ _ idle_fds _ <"$results/soak.samples"
loadgen soak "$FACADE_URL" grpc --rate "$rate" --duration "${soak_s}s" --warmup 0 &
soak_pid=$!
for ((t = soak_sample; t < soak_s; t += soak_sample)); do
  sleep "$soak_sample"
  sample "${t}s"
done
wait "$soak_pid"
sample end
waited=0 step=$((idle_max < 5 ? idle_max : 5))
until [ "$waited" -ge "$idle_max" ]; do
  [ "$(fds "$FACADE_PID")" -le "$idle_fds" ] && break
  sleep "$step"; waited=$((waited + step))
done
sample "idle+${waited}s"
# A leak grows with each burst; a cache (the allocator's, the connection pool's) plateaus. Three
# rounds of the fixed rate, then 300 calls in flight (past the overload bound, as a stall makes).
for round in 1 2 3; do
  loadgen "burst-steady-$round" "$FACADE_URL" grpc --rate "$rate" --duration "${burst_s}s" --warmup 0
  echo "$round steady $(status_kib "$FACADE_PID" VmRSS) $(fds "$FACADE_PID")" >>"$results/bursts.samples"
  loadgen "burst-$round" "$FACADE_URL" grpc --concurrency 300 --connections 16 --duration 4s --warmup 0 || true
  echo "$round burst $(status_kib "$FACADE_PID" VmRSS) $(fds "$FACADE_PID")" >>"$results/bursts.samples"
done
stop "$FACADE_PID"

echo "== host drift: the bare hop at c=64 again"
# The same run on the same server as at the start: on a shared machine a neighbour can slow every
# figure between two runs (2.5-fold here once), and the report shows how much the speed moved within this one.
loadgen warmup-bare-end "$bare_url" grpc --concurrency 64 --duration "$warmup" --warmup 0
app_run bare-c64-end "$bare_pid" "$bare_url" --concurrency 64 --duration "$duration"
stop "$bare_pid"

echo "== report"
{
  echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)"
  echo "cores=$(nproc)"
  echo "kernel=$(uname -r)"
  echo "rustc=$(rustc -V)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
  echo "profile=$profile"
  echo "duration=$duration"
  echo "soak=${soak_s}s"
  echo "soak_sample=${soak_sample}s"
  echo "idle_max=${idle_max}s"
  echo "callgrind_calls=${callgrind_calls[*]}"
  echo "callgrind_reps=$callgrind_reps"
  echo "lat_s=$lat_s"
  echo "app_cpu=$app_cpu"
  echo "load_cpu=$load_cpu"
} >"$results/machine.env"
mkdir -p "$(dirname "$out")"
"$venv/bin/python" scripts/bench_report.py "$results" "$out" $([ "$smoke" = 1 ] && echo --smoke)
echo "wrote $out"
