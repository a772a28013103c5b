#!/usr/bin/env bash
# Regenerates the gRPC code into a scratch copy and fails if it differs from the checked-in files.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"  # absolute, venv symlink kept
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/protos"
cp protos/hostagent.proto "$scratch/protos/"
(cd "$scratch" && "$py" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. protos/hostagent.proto)
for f in hostagent_pb2.py hostagent_pb2.pyi hostagent_pb2_grpc.py; do
  if ! diff -q "protos/$f" "$scratch/protos/$f" >/dev/null; then
    echo "protos/$f is stale: run 'make protos' and commit the result" >&2
    exit 1
  fi
done
echo "generated gRPC code is up to date"
