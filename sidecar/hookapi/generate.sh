#!/usr/bin/env bash
# Regenerate the Python stubs from our .proto files: the messages (*_pb2.py + .pyi), the
# grpclib server bases the sidecar serves (*_grpc.py), and grpcio stubs (*_pb2_grpc.py) that only
# the tests and the lab use, as an independent client playing virt-launcher.
# Run from anywhere; needs the dev extra (grpcio-tools, mypy-protobuf, grpclib) in .venv.
# The generated *_pb2*.py files are committed; ruff skips them, mypy reads the .pyi.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
py=${PYTHON:-.venv/bin/python}
plugin=$(dirname "$py")/protoc-gen-mypy
grpc_plugin=$(dirname "$py")/protoc-gen-mypy_grpc
grpclib_plugin=$(dirname "$py")/protoc-gen-grpclib_python
# -I . makes the generated imports absolute (from sidecar.hookapi import ...).
"$py" -m grpc_tools.protoc -I . \
  --python_out=. --grpc_python_out=. \
  --plugin=protoc-gen-mypy="$plugin" --mypy_out=. \
  --plugin=protoc-gen-mypy_grpc="$grpc_plugin" --mypy_grpc_out=. \
  --plugin=protoc-gen-grpclib_python="$grpclib_plugin" --grpclib_python_out=. \
  sidecar/hookapi/hook_info.proto sidecar/hookapi/hook_v1alpha2.proto sidecar/hookapi/hook_v1alpha3.proto \
  sidecar/hookapi/node_hook_v1alpha1.proto
# The grpclib plugin's output is checked in as ruff formats it (so a rerun changes nothing).
"$(dirname "$py")/ruff" format --quiet $(ls sidecar/hookapi/*_grpc.py | grep -v _pb2_grpc)
