#!/usr/bin/env bash
# Generate the structural schema of KubeVirt v1.9's Plugin CRD (plugin.kubevirt.io/v1alpha1) for
# kubelab, the way scripts/build-crds.sh does for kubevirt.io/api/core/v1: controller-gen, pinned,
# over kubevirt.io/api's plugin/v1alpha1 package (virt-operator's NewPluginCrd takes the schema from
# the same generator's output; docs/kubevirt-facts.md P1, K8). Uses the controller-gen that
# build-crds.sh builds (run first; a no-op when cached). Nothing of KubeVirt's enters the repo.
#
# Output, outside the repo: /var/cache/bridge-migration/kubevirt-crds/plugin-api-<v>_controller-gen-<v>/
# plugin.kubevirt.io_plugins.yaml. A complete output directory for the same versions is kept.
#
# Usage: build-plugin-crd.sh   Prints the output directory on its last line of stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

KUBEVIRT_API_VERSION=${KUBEVIRT_API_VERSION:-v1.9.0}
CONTROLLER_TOOLS_VERSION=${CONTROLLER_TOOLS_VERSION:-v0.20.1}
CRD_OPTIONS="crd:allowDangerousTypes=true"
API_PACKAGE=kubevirt.io/api/plugin/v1alpha1

cache_root=${BM_CACHE_ROOT:-/var/cache/bridge-migration}
controller_gen=$cache_root/controller-gen-$CONTROLLER_TOOLS_VERSION/bin/controller-gen
out=$cache_root/kubevirt-crds/plugin-api-${KUBEVIRT_API_VERSION}_controller-gen-$CONTROLLER_TOOLS_VERSION
stamp_text="controller-gen $CONTROLLER_TOOLS_VERSION $CRD_OPTIONS paths=$API_PACKAGE@$KUBEVIRT_API_VERSION"
file=plugin.kubevirt.io_plugins.yaml

export GOMODCACHE=$cache_root/go/mod
export GOCACHE=$cache_root/go/build
export GOFLAGS="-buildvcs=false -trimpath"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

say() { printf '[build-plugin-crd %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if [[ -f $out/.complete && $(cat "$out/.complete") == "$stamp_text" && -s $out/$file ]]; then
  say "cached ($out)"
  echo "$out"
  exit 0
fi

KUBEVIRT_API_VERSION=$KUBEVIRT_API_VERSION CONTROLLER_TOOLS_VERSION=$CONTROLLER_TOOLS_VERSION \
  "$root/scripts/build-crds.sh" >/dev/null  # builds controller-gen (and the core CRDs) if missing
command -v go >/dev/null || { say "go is not installed (need Go >= 1.25)"; exit 1; }
go_minor=$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')
start=$SECONDS

work=$out.work
rm -rf "$work" "$out"
mkdir -p "$work"
printf 'module bridgemigration.local/build/kubevirt-plugin-crd\n\ngo %s\n\nrequire kubevirt.io/api %s\n' \
  "$go_minor" "$KUBEVIRT_API_VERSION" >"$work/go.mod"
printf 'package crds\n\nimport _ "%s"\n' "$API_PACKAGE" >"$work/deps.go"
say "kubevirt.io/api@$KUBEVIRT_API_VERSION: resolving"
(cd "$work" && go mod tidy 2>"$work/tidy.log") || {
  cat "$work/tidy.log" >&2
  say "go mod tidy failed"
  exit 1
}
say "running controller-gen $CRD_OPTIONS paths=$API_PACKAGE"
(cd "$work" && "$controller_gen" "$CRD_OPTIONS" "paths=$API_PACKAGE" "output:crd:dir=$work/out")
[[ -s $work/out/$file ]] || { say "controller-gen wrote no $file"; exit 1; }
printf '%s\n' "$stamp_text" >"$work/out/.complete"
mv "$work/out" "$out"
rm -rf "$work"
say "schema ready in $((SECONDS - start)) s: $out"
echo "$out"
