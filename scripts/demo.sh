#!/usr/bin/env bash
# The project's demo, no cluster needed (README's first command). Installs what is missing,
# then shows the admission webhook answering over real TLS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/install.sh
# shellcheck disable=SC1091
source .venv/bin/activate
echo "== 1. the admission webhook, over HTTPS, as kube-apiserver calls it"
python -m webhook.demo
