#!/usr/bin/env bash
# The project's demo, no cluster needed (README's first command). Installs what is missing
# (Debian packages, the venv, the lab's guest kernel and initramfs), then:
#   1. the admission webhook answering over real TLS, as kube-apiserver calls it;
#   2. the seed's functional test for real: two TCG guests in bridge-binding pods on two libvirt
#      "nodes", the client live-migrated, the sidecar fixing its NIC, ping before and after.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/install.sh
./scripts/install-lab.sh
# shellcheck disable=SC1091
source .venv/bin/activate
echo "== 1. the admission webhook, over HTTPS, as kube-apiserver calls it"
python -m kubelab.webhook_demo
echo
echo "== 2. a live migration of a bridge-bound guest, fixed by the sidecar (python -m lab demo)"
python -m lab demo
