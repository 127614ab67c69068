#!/usr/bin/env bash
# Smoke test from a grpcurl user's seat: the README's grpcurl commands (grpcurl 1.8.6, v1alpha
# reflection) and buf curl (v1 reflection) against `connect-facade serve --simulator`.
# Usage: scripts/grpc_smoke.sh [path/to/connect-facade]   (grpcurl and buf must be on PATH)
set -euo pipefail
binary=${1:-target/debug/connect-facade}
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
port=$(free_port)
addr=127.0.0.1:$port
log=$(mktemp)
"$binary" serve --simulator --listen "$addr" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT

fail() { echo "FAIL: $*"; echo "--- server log"; cat "$log"; exit 1; }
check() { # check NAME EXPECTED OUTPUT
  if grep -q -- "$2" <<<"$3"; then echo "ok   $1"; else echo "$3"; fail "$1: expected '$2'"; fi
}

for _ in $(seq 1 100); do
  grpcurl -plaintext "$addr" grpc.health.v1.Health/Check >/dev/null 2>&1 && break
  sleep 0.1
done

instance=11111111-2222-3333-4444-555555555555
method=amazonconnect.v1.ContactService/CreatePersistentContactAssociation

check "grpcurl list" "amazonconnect.v1.ContactService" "$(grpcurl -plaintext "$addr" list)"
check "grpcurl describe" "rpc CreatePersistentContactAssociation" \
  "$(grpcurl -plaintext "$addr" describe amazonconnect.v1.ContactService)"
check "grpcurl health" '"SERVING"' "$(grpcurl -plaintext "$addr" grpc.health.v1.Health/Check)"
check "grpcurl call succeeds" '"continuedFromContactId": "C3"' "$(grpcurl -plaintext -d "{
  \"instance_id\": \"$instance\", \"initial_contact_id\": \"new-chat-1\",
  \"rehydration_type\": \"REHYDRATION_TYPE_ENTIRE_PAST_SESSION\", \"source_contact_id\": \"C1\"}" \
  "$addr" "$method")"

set +e
failed=$(grpcurl -plaintext -d '{"instance_id": "no-such-instance", "initial_contact_id": "new-chat-2",
  "rehydration_type": "REHYDRATION_TYPE_FROM_SEGMENT", "source_contact_id": "C2"}' "$addr" "$method" 2>&1)
code=$?
set -e
[ $code -ne 0 ] || fail "the failing call succeeded"
check "grpcurl failure code" "Code: NotFound" "$failed"
check "grpcurl decodes ErrorInfo" '"reason":"RESOURCE_NOT_FOUND"' "$failed"

check "buf curl lists methods (v1 reflection)" "$method" \
  "$(buf curl --protocol grpc --http2-prior-knowledge --list-methods "http://$addr")"
check "buf curl call succeeds" '"continuedFromContactId": "C2"' "$(buf curl --protocol grpc \
  --http2-prior-knowledge -d "{\"instance_id\": \"$instance\", \"initial_contact_id\": \"new-chat-2\",
  \"rehydration_type\": \"REHYDRATION_TYPE_FROM_SEGMENT\", \"source_contact_id\": \"C2\"}" \
  "http://$addr/$method")"
echo "grpc smoke: all checks passed"
