#!/usr/bin/env bash
# Generate the structural schemas of KubeVirt's CRDs for kubelab, from KubeVirt's API types.
#
# KubeVirt makes its CRD schemas by running controller-gen (sigs.k8s.io/controller-tools) with
# `crd:allowDangerousTypes=true` over the kubevirt.io/api/core/v1 package; virt-operator then puts
# the schema of each generated CRD into the CRD it installs. This script does the same, pinned:
# it builds controller-gen from the Go module proxy, fetches kubevirt.io/api (also from the proxy)
# into a throwaway module and runs controller-gen over it. Nothing of either project enters the repo.
#
# Output, outside the repo: /var/cache/bridge-migration/kubevirt-crds/api-<v>_controller-gen-<v>/
# with one kubevirt.io_<plural>.yaml per kind (controller-gen's own output). kubelab/crds.py reads
# the schema from there and keeps its own names, versions and subresources. A run whose output
# directory is complete for the same versions and options does nothing.
#
# Usage: build-crds.sh   Prints the output directory on its last line of stdout; progress on stderr.
set -euo pipefail

# The newest KubeVirt release we support; kubelab/tools.py names the same versions.
KUBEVIRT_API_VERSION=${KUBEVIRT_API_VERSION:-v1.9.0}
# The controller-gen release KubeVirt's own builder image uses for that release.
CONTROLLER_TOOLS_VERSION=${CONTROLLER_TOOLS_VERSION:-v0.20.1}
CRD_OPTIONS="crd:allowDangerousTypes=true"
API_PACKAGE=kubevirt.io/api/core/v1

cache_root=${BM_CACHE_ROOT:-/var/cache/bridge-migration}
tool_dir=$cache_root/controller-gen-$CONTROLLER_TOOLS_VERSION
controller_gen=$tool_dir/bin/controller-gen
out=$cache_root/kubevirt-crds/api-${KUBEVIRT_API_VERSION}_controller-gen-$CONTROLLER_TOOLS_VERSION
stamp_text="controller-gen $CONTROLLER_TOOLS_VERSION $CRD_OPTIONS paths=$API_PACKAGE@$KUBEVIRT_API_VERSION"
# The kinds kubelab installs; a complete run has each of them.
plurals="virtualmachineinstances virtualmachines virtualmachineinstancemigrations kubevirts"

export GOMODCACHE=$cache_root/go/mod
export GOCACHE=$cache_root/go/build
export GOFLAGS="-buildvcs=false -trimpath"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

say() { printf '[build-crds %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

is_complete() {
  [[ -f $out/.complete && $(cat "$out/.complete") == "$stamp_text" ]] || return 1
  local p
  for p in $plurals; do
    [[ -s $out/kubevirt.io_$p.yaml ]] || return 1
  done
}

if is_complete; then
  say "cached ($out)"
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { say "go is not installed (need Go >= 1.25)"; exit 1; }
mkdir -p "$GOMODCACHE" "$GOCACHE" "$tool_dir/bin"
go_minor=$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')
start=$SECONDS

if [[ ! -x $controller_gen ]]; then
  src=$tool_dir/src
  rm -rf "$src"
  mkdir -p "$src"
  printf 'module bridgemigration.local/build/controller-gen\n\ngo %s\n\nrequire %s %s\n' \
    "$go_minor" sigs.k8s.io/controller-tools "$CONTROLLER_TOOLS_VERSION" >"$src/go.mod"
  say "controller-gen: resolving sigs.k8s.io/controller-tools@$CONTROLLER_TOOLS_VERSION"
  (cd "$src" && go get "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION" \
    2>"$src/get.log") || {
    cat "$src/get.log" >&2
    say "controller-gen: go get failed"
    exit 1
  }
  say "controller-gen: compiling"
  (cd "$src" && go build -ldflags "-s -w" -o "$controller_gen.tmp" sigs.k8s.io/controller-tools/cmd/controller-gen)
  mv "$controller_gen.tmp" "$controller_gen"
  say "controller-gen: built in $((SECONDS - start)) s"
fi

# A throwaway module that requires kubevirt.io/api, so controller-gen's package loader finds the
# package and everything it imports. The blank import keeps `go mod tidy` from dropping it.
work=$out.work
rm -rf "$work" "$out"
mkdir -p "$work"
printf 'module bridgemigration.local/build/kubevirt-crds\n\ngo %s\n\nrequire kubevirt.io/api %s\n' \
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
for p in $plurals; do
  [[ -s $work/out/kubevirt.io_$p.yaml ]] || { say "controller-gen wrote no kubevirt.io_$p.yaml"; exit 1; }
done
printf '%s\n' "$stamp_text" >"$work/out/.complete"
mv "$work/out" "$out"
rm -rf "$work"
say "schemas ready in $((SECONDS - start)) s: $out"
echo "$out"
