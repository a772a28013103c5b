#!/usr/bin/env bash
# Generates the gRPC code of protos/hostagent.proto, the one way `make protos` and the staleness
# check both use: messages and service by grpcio-tools (hostagent_pb2.py, hostagent_pb2_grpc.py),
# their typed stubs by mypy-protobuf (hostagent_pb2.pyi, hostagent_pb2_grpc.pyi; the service
# stubs are typed for grpc and grpc.aio alike).
# Usage: scripts/generate-protos.sh [PYTHON] [OUT_DIR]; OUT_DIR is the repository root by default.
set -euo pipefail
absolute() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }  # symlinks kept
py=$(absolute "${1:-.venv/bin/python}")
out=${2:-}
if [ -n "$out" ]; then out=$(cd "$out" && pwd); fi
cd "$(dirname "$0")/.."
out=${out:-$PWD}
# mypy-protobuf's plugins are installed beside the interpreter that has it.
bin=$(dirname "$py")
for plugin in protoc-gen-mypy protoc-gen-mypy_grpc; do
  if [ ! -x "$bin/$plugin" ]; then
    echo "$bin/$plugin not found: install requirements.txt into that environment (make setup)" >&2
    exit 1
  fi
done
"$py" -m grpc_tools.protoc -I. \
  --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  protos/hostagent.proto
