#!/usr/bin/env bash
# Regenerate the Python gRPC stubs (and their .pyi type stubs) from our .proto files.
# Run from anywhere; needs the dev extra (grpcio-tools, mypy-protobuf) in .venv.
# The generated *_pb2*.py files are committed; ruff skips them, mypy reads the .pyi.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
py=${PYTHON:-.venv/bin/python}
plugin=$(dirname "$py")/protoc-gen-mypy
grpc_plugin=$(dirname "$py")/protoc-gen-mypy_grpc
# -I . makes the generated imports absolute (from sidecar.hookapi import ...).
"$py" -m grpc_tools.protoc -I . \
  --python_out=. --grpc_python_out=. \
  --plugin=protoc-gen-mypy="$plugin" --mypy_out=. \
  --plugin=protoc-gen-mypy_grpc="$grpc_plugin" --mypy_grpc_out=. \
  sidecar/hookapi/hook_info.proto sidecar/hookapi/hook_v1alpha2.proto sidecar/hookapi/hook_v1alpha3.proto
