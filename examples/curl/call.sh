#!/usr/bin/env bash
# Calling connect-facade with curl and jq: the Connect protocol, JSON over HTTP/1.1 or HTTP/2. No
# gRPC tool, no proto file: a POST to the RPC's path with a JSON body.
#
#   examples/curl/call.sh [localhost:50051] [http1|http2]
#
# A call; when it is resource_exhausted or unavailable (HTTP 429 or 503), the RetryInfo delay and the
# ErrorInfo clientToken are read from the error's details (each has a readable `debug`) and the call
# is retried with that client_token (so a retry can never apply the association twice); then a
# validation error's BadRequest fields.
set -euo pipefail
addr=${1:-localhost:50051}
version=$([ "${2:-http1}" = http2 ] && echo --http2-prior-knowledge || echo --http1.1)
url="http://$addr/amazonconnect.v1.ContactService/CreatePersistentContactAssociation"
token=""

call() { # prints the body, then the HTTP status on a line of its own
  curl -sS "$version" -H 'content-type: application/json' -H 'connect-timeout-ms: 10000' \
    -w '\n%{http_code}' --data "$1" "$url"
}

for attempt in 1 2 3 4 5; do
  request=$(jq -cn --arg token "$token" '{instanceId: "11111111-2222-3333-4444-555555555555",
    initialContactId: "new-chat-1", rehydrationType: "REHYDRATION_TYPE_ENTIRE_PAST_SESSION",
    sourceContactId: "C1", clientToken: $token}')
  answer=$(call "$request")
  status=$(tail -n1 <<<"$answer")
  body=$(sed '$d' <<<"$answer")
  if [ "$status" = 200 ]; then
    jq -r --arg n "$attempt" '"call \($n): OK continued_from_contact_id=\(.continuedFromContactId) client_token=\(.clientToken)"' <<<"$body"
    break
  fi
  code=$(jq -r .code <<<"$body")
  if [ "$code" != resource_exhausted ] && [ "$code" != unavailable ]; then
    echo "$body" >&2
    exit 1
  fi
  delay=$(jq -r '.details[] | select(.type == "google.rpc.RetryInfo") | .debug.retryDelay | rtrimstr("s")' <<<"$body")
  reason=$(jq -r '.details[] | select(.type == "google.rpc.ErrorInfo") | .debug.reason' <<<"$body")
  token=$(jq -r '.details[] | select(.type == "google.rpc.ErrorInfo") | .debug.metadata.clientToken' <<<"$body")
  printf 'call %s: %s (%s): retry in %.3fs with client_token=%s\n' \
    "$attempt" "$(tr a-z A-Z <<<"$code")" "$reason" "${delay:-1}" "$token"
  sleep "${delay:-1}"
done

answer=$(call '{"instanceId": "11111111-2222-3333-4444-555555555555"}')
body=$(sed '$d' <<<"$answer")
jq -r '"invalid: \(.code | ascii_upcase) fields=\([.details[] | select(.type == "google.rpc.BadRequest") | .debug.fieldViolations[].field] | join(","))"' <<<"$body"
