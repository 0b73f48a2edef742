#!/usr/bin/env bash
# Generate charts/bridge-migration/README.md from README.md.gotmpl and values.yaml's `# --`
# comments with helm-docs (built, pinned, by scripts/build-k8s.sh into the cache). Extra arguments
# go to helm-docs: tests/chart/test_readme.py runs this with --dry-run and compares the output with
# the committed README.
#
# helm-docs lists each value that has a `# --` comment, or has no child with one; the test also
# fails on a listed value without a description.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BM_K8S_BIN:-$("$root/scripts/build-k8s.sh" helm-docs)}
exec "$bin/helm-docs" \
  --chart-search-root="$root/charts" \
  --template-files=README.md.gotmpl \
  --sort-values-order=file \
  --skip-version-footer \
  --log-level=warning \
  "$@"
