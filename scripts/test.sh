#!/usr/bin/env bash
# The project's test command (README and .ci/run both run exactly this).
# Installs what is missing, then: ruff, mypy --strict, and the whole pytest suite,
# which includes the real-libvirt migration lab and the local kube-apiserver tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/install.sh
./scripts/build-k8s.sh >/dev/null  # kube-apiserver, etcd, kubectl, helm (cached)
./scripts/build-crds.sh core/v1 plugin/v1alpha1 >/dev/null  # KubeVirt's CRD schemas (core kinds, Plugin): one controller-gen run (cached)
./scripts/install-lab.sh
./scripts/install-image.sh  # buildah, podman, runc, mmdebstrap: tests/image builds and runs the image
./scripts/install-release.sh  # skopeo, docker-registry, cosign (built, cached): tests/image/test_release.py
# shellcheck disable=SC1091
source .venv/bin/activate
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy --strict"
mypy
echo "== pytest"
# Line coverage of the product, in the pytest process only (the processes tests start are not
# measured). The floor holds for the whole suite; a run narrowed by arguments only reports.
cov=(--cov=webhook --cov=sidecar --cov=bridge_migration_contract --cov-report=term:skip-covered)
(($#)) || cov+=(--cov-fail-under=78)
pytest "${cov[@]}" "$@"
