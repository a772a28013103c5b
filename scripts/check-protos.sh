#!/usr/bin/env bash
# Regenerates the gRPC code and its typed stubs into a scratch directory and fails if any file
# differs from, or is missing beside, the checked-in ones.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if ! log=$(scripts/generate-protos.sh "$py" "$scratch" 2>&1); then
  echo "$log" >&2
  exit 1
fi
stale=0
for generated in "$scratch"/protos/*; do
  f=protos/$(basename "$generated")
  if ! diff -q "$f" "$generated" >/dev/null 2>&1; then
    echo "$f is stale: run 'make protos' and commit the result" >&2
    stale=1
  fi
done
[ "$stale" = 0 ] || exit 1
echo "generated gRPC code and stubs are up to date"
