#!/usr/bin/env bash
# Calling connect-facade by hand with grpcurl (no proto files needed: the server has reflection).
#
#   examples/grpcurl/call.sh [localhost:50051]
#
# A call; when it is RESOURCE_EXHAUSTED or UNAVAILABLE, the RetryInfo delay and the ErrorInfo
# clientToken are read from the error details and the call is retried with that client_token (so a
# retry can never apply the association twice); then a validation error's BadRequest fields.
set -euo pipefail
addr=${1:-localhost:50051}
method=amazonconnect.v1.ContactService/CreatePersistentContactAssociation
token=""

for attempt in 1 2 3 4 5; do
  request=$(printf '{"instance_id": "11111111-2222-3333-4444-555555555555", "initial_contact_id": "new-chat-1",
    "rehydration_type": "REHYDRATION_TYPE_ENTIRE_PAST_SESSION", "source_contact_id": "C1", "client_token": "%s"}' "$token")
  # -format-error prints the status and its google.rpc details as JSON on stdout.
  if answer=$(grpcurl -plaintext -format-error -max-time 10 -d "$request" "$addr" "$method" 2>&1); then
    continued=$(sed -n 's/.*"continuedFromContactId": *"\([^"]*\)".*/\1/p' <<<"$answer")
    used=$(sed -n 's/.*"clientToken": *"\([^"]*\)".*/\1/p' <<<"$answer")
    echo "call $attempt: OK continued_from_contact_id=$continued client_token=$used"
    break
  fi
  code=$(sed -n 's/.*"code": *\([0-9]*\).*/\1/p' <<<"$answer" | head -n1)
  # 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE: retryable; anything else is the answer.
  if [ "$code" != 8 ] && [ "$code" != 14 ]; then
    echo "$answer" >&2
    exit 1
  fi
  delay=$(sed -n 's/.*"retryDelay": *"\([0-9.]*\)s".*/\1/p' <<<"$answer" | head -n1)
  reason=$(sed -n 's/.*"reason": *"\([A-Z_]*\)".*/\1/p' <<<"$answer" | head -n1)
  token=$(sed -n 's/.*"clientToken": *"\([^"]*\)".*/\1/p' <<<"$answer" | head -n1)
  name=$([ "$code" = 8 ] && echo RESOURCE_EXHAUSTED || echo UNAVAILABLE)
  printf 'call %s: %s (%s): retry in %.3fs with client_token=%s\n' "$attempt" "$name" "$reason" "${delay:-1}" "$token"
  sleep "${delay:-1}"
done

answer=$(grpcurl -plaintext -format-error -d '{"instance_id": "11111111-2222-3333-4444-555555555555"}' \
  "$addr" "$method" 2>&1 || true)
code=$(sed -n 's/.*"code": *\([0-9]*\).*/\1/p' <<<"$answer" | head -n1)
# BadRequest names each bad field.
fields=$(grep -o '"field": *"[a-z_]*"' <<<"$answer" | sed 's/.*"\([a-z_]*\)"$/\1/' | paste -sd, -)
echo "invalid: $([ "$code" = 3 ] && echo INVALID_ARGUMENT || echo "code $code") fields=$fields"
