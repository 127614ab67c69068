#!/usr/bin/env bash
# Replicas sharing one AWS quota, measured: writes docs/SCALING.md (see scripts/scaling.py for what is
# run). Needs redis-server (each run starts its own on a free port) and taskset.
# Usage: scripts/scaling.sh            the full run on a release build (about 10 minutes)
#        scripts/scaling.sh --smoke    every path for a few seconds on the debug build; writes nothing
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--smoke" ]; then
  cargo build --workspace --locked --quiet
  out=$(mktemp)
  trap 'rm -f "$out"' EXIT
  python3 scripts/scaling.py --bin target/debug --out "$out" --duration 3 --replicas 2 \
    --cost-rounds 1 --cost-duration 1 --failure-phase 3 --sharing-duration 3 --fleet-duration 3 --replay-duration 3 \
    --tokens 2000
  grep -q "^| 2 | Redis |" "$out" || { echo "FAIL: no Redis row for 2 replicas"; cat "$out"; exit 1; }
  for row in "^| cluster |" "^| sentinel |" "^| killed | redis | 4 |" "^| hung |" "^| failover | sentinel |" \
    "^| failover | cluster |"; do
    grep -q "$row" "$out" || { echo "FAIL: no row $row"; cat "$out"; exit 1; }
  done
  grep -q "^| heavy and light" "$out" || { echo "FAIL: no sharing section"; cat "$out"; exit 1; }
  grep -q "^| 3 replicas, weights 3:1:1" "$out" || { echo "FAIL: no fleet section"; cat "$out"; exit 1; }
  grep -q "^| on (10m) |" "$out" || { echo "FAIL: no replay section"; cat "$out"; exit 1; }
  grep -q "^| redis | unique |" "$out" || { echo "FAIL: no replay cost"; cat "$out"; exit 1; }
  echo "scaling smoke run: every path ran"
else
  cargo build --workspace --profile dist --locked
  python3 scripts/scaling.py --bin target/dist "$@"
fi
