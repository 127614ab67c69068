#!/usr/bin/env bash
# The contract seen from other languages: runs examples/python (grpcio), examples/node (@grpc/grpc-js),
# examples/grpcurl, examples/connect-node and examples/connect-python (the official Connect clients,
# each with its Connect JSON, Connect binary and gRPC-Web transports) and examples/curl (Connect JSON over HTTP/1.1 and HTTP/2) against
# the real facade over its simulator, and checks what each one saw:
# RESOURCE_EXHAUSTED with reason THROTTLED and a 1 s RetryInfo, the retry with the returned
# client_token answered OK from C3 with that same token, and INVALID_ARGUMENT naming the bad fields.
# The gRPC examples run once more as a workload with an identity (python-jwt, node-jwt): the facade
# has an auth file whose caller is known by a JWT like a projected service account token
# (scripts/workload_token.py), which each call reads from CONNECT_FACADE_TOKEN_FILE; a call without
# it is refused (Connect's 401).
# Usage: scripts/conformance.sh path/to/connect-facade   (python with examples/python's,
# examples/connect-python's and scripts/requirements-identities.txt's requirements,
# node with examples/node's and examples/connect-node's packages installed, grpcurl, curl and jq on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
facade=${1:-target/debug/connect-facade}

fixtures=$(mktemp --suffix=.yaml)
log=$(mktemp)
pid=""
identity=$(mktemp -d)
trap 'rm -rf "$fixtures" "$log" "$identity"; [ -n "$pid" ] && kill "$pid" 2>/dev/null; true' EXIT
# The demo session, and AWS throttling the first request; one attempt, so the caller sees it.
{ cat fixtures/demo.yaml; printf 'faults:\n  - { kind: error, code: ThrottlingException, times: 1 }\n'; } >"$fixtures"

python3 scripts/workload_token.py "$identity"

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
port=$(free_port)
failed=0
for client in python node grpcurl node-connect-json node-connect-binary node-grpc-web \
  python-connect-json python-connect-binary python-grpc-web curl-http1 curl-http2 python-jwt node-jwt; do
  auth=()
  case $client in *-jwt) auth=(--auth-file "$identity/callers.yaml") ;; esac
  "$facade" serve --simulator --simulator-fixtures "$fixtures" --max-attempts 1 \
    --listen "127.0.0.1:$port" --log-format json "${auth[@]}" 2>"$log" &
  pid=$!
  # Not ready in time: the client's own failure below says what went wrong.
  wait_port "$port" 10 2>/dev/null || true
  case $client in
    *-jwt)
      example=examples/python/client.py; [ "$client" = node-jwt ] && example=examples/node/client.js
      runner=python3; [ "$client" = node-jwt ] && runner=node
      output=$(CONNECT_FACADE_TOKEN_FILE="$identity/token" "$runner" "$example" "127.0.0.1:$port" 2>&1) || true
      # Without the token: refused before the body is read.
      unauthenticated=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d '{}' \
        "http://127.0.0.1:$port/amazonconnect.v1.ContactService/CreatePersistentContactAssociation")
      [ "$unauthenticated" = 401 ] || output="$output
without a token: HTTP $unauthenticated, not 401"
      ;;
    python) output=$(python3 examples/python/client.py "127.0.0.1:$port" 2>&1) || true ;;
    node) output=$(node examples/node/client.js "127.0.0.1:$port" 2>&1) || true ;;
    grpcurl) output=$(examples/grpcurl/call.sh "127.0.0.1:$port" 2>&1) || true ;;
    python-*) output=$(python3 examples/connect-python/client.py "127.0.0.1:$port" "${client#python-}" 2>&1) || true ;;
    node-*) output=$(node examples/connect-node/client.js "127.0.0.1:$port" "${client#node-}" 2>&1) || true ;;
    curl-*) output=$(examples/curl/call.sh "127.0.0.1:$port" "${client#curl-}" 2>&1) || true ;;
  esac
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  if python3 - "$output" "$client" <<'PY'
import re, sys
lines = sys.argv[1].splitlines()
# The gRPC examples end with a call through gRPC's built-in retry (a service config).
if sys.argv[2] in ("python", "node", "python-jwt", "node-jwt"):
    assert lines[3:] == ["built-in retry: OK continued_from_contact_id=C2"], lines[3:]
    lines = lines[:3]
assert len(lines) == 3, f"expected 3 lines, got {lines}"
first = re.fullmatch(r"call 1: RESOURCE_EXHAUSTED \(THROTTLED\): retry in 1\.000s with client_token=([0-9a-f-]{36})", lines[0])
assert first, f"first call: {lines[0]!r}"
assert lines[1] == f"call 2: OK continued_from_contact_id=C3 client_token={first.group(1)}", f"retry: {lines[1]!r}"
assert lines[2] == "invalid: INVALID_ARGUMENT fields=initial_contact_id,source_contact_id,rehydration_type", lines[2]
PY
  then
    echo "ok   $client: RESOURCE_EXHAUSTED + RetryInfo, retry with the token OK, INVALID_ARGUMENT fields"
  else
    echo "FAIL $client:"; echo "$output" | sed 's/^/     /'; failed=1
  fi
done
exit $failed
