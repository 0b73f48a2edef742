#!/usr/bin/env bash
# The Kubernetes demo: a local etcd + kube-apiserver (built from the Go module proxy on first
# run, about 17 minutes on 2 cores, then cached), the webhook behind the chart's webhook
# configurations, and `kubectl apply` of a bridge VMI that comes back mutated.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/install.sh
./scripts/build-k8s.sh >/dev/null
./scripts/build-crds.sh >/dev/null
# shellcheck disable=SC1091
source .venv/bin/activate
python -m kubelab demo "$@"
