#!/usr/bin/env bash
# The contract's hygiene with buf: lint (versioned package, UNSPECIFIED enum zero values, a comment on
# every element) and no breaking change against the published image, proto/published.binpb.
# Each check is also run once on a deliberately bad copy, so a check that cannot fail is caught too.
# Usage: scripts/check_proto.sh   (buf must be on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."

buf lint
echo "ok   buf lint"
buf breaking --against proto/published.binpb
echo "ok   buf breaking against proto/published.binpb"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r buf.yaml proto "$scratch/"
file="$scratch/proto/amazonconnect/v1/contact_service.proto"

# Renumbering a field breaks every deployed client.
sed -i 's/string source_contact_id = 4;/string source_contact_id = 6;/' "$file"
if (cd "$scratch" && buf breaking --against "$OLDPWD/proto/published.binpb" >/dev/null 2>&1); then
  echo "FAIL buf breaking accepted a renumbered field" >&2
  exit 1
fi
echo "ok   buf breaking refuses a renumbered field"

# An undocumented element fails the COMMENTS rules.
cp proto/amazonconnect/v1/contact_service.proto "$file"
printf '\nmessage Undocumented {\n  string field = 1;\n}\n' >>"$file"
if (cd "$scratch" && buf lint >/dev/null 2>&1); then
  echo "FAIL buf lint accepted an undocumented message" >&2
  exit 1
fi
echo "ok   buf lint refuses an undocumented message"
