#!/usr/bin/env bash
# Write the images' lock files from pyproject.toml: every package pinned, with the sha256 of each
# of its files on PyPI, for the Dockerfile's `pip install --require-hashes` (the install fails on
# a package or a file the lock does not name). Run it after changing a requirement in pyproject.toml
# (tests/test_packaging.py fails until the locks match) or to take newer releases:
#   scripts/lock.sh
#   requirements/webhook.txt  [project] dependencies          (the webhook image's venv)
#   requirements/sidecar.txt  [project.optional-dependencies] sidecar  (the sidecar image's venv)
#   requirements/build.txt    pip and setuptools: the project's build backend (>=77, [build-system])
#                             and libvirt-python's, for --no-build-isolation builds in the image
# Resolved by uv (the dev extra) for CPython 3.11 on Linux, the images' Python.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-.venv/bin/python}
uv=$(cd "$(dirname "$py")" && pwd)/uv
# uv reads the CA bundle from SSL_CERT_FILE; this machine's pip is given it as PIP_CERT.
if [[ -z ${SSL_CERT_FILE:-} && -n ${PIP_CERT:-} ]]; then
  export SSL_CERT_FILE=$PIP_CERT
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

section() { # pyproject.toml's requirement list at a dotted path, one a line
  "$py" -c '
import sys, tomllib
value = tomllib.load(open("pyproject.toml", "rb"))
for key in sys.argv[1].split("."):
    value = value[key]
print("\n".join(value))' "$1"
}
# The inputs are named for where they come from: the locks' "via -r NAME" comments name them.
section project.dependencies >"$tmp/pyproject-dependencies.in"
section project.optional-dependencies.sidecar >"$tmp/pyproject-sidecar-extra.in"
{
  section build-system.requires
  echo pip
} >"$tmp/build-backends.in"

lock() { # lock NAME INPUT
  (cd "$tmp" && "$uv" pip compile --quiet --generate-hashes --python-version 3.11 --python-platform linux \
    --no-config --custom-compile-command scripts/lock.sh -o "$root/requirements/$1.txt" "$2")
}
lock webhook pyproject-dependencies.in
lock sidecar pyproject-sidecar-extra.in
lock build build-backends.in
