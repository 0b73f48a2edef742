#!/usr/bin/env bash
# Generate the structural schemas of KubeVirt's CRDs for kubelab, from KubeVirt's API types.
#
# KubeVirt makes its CRD schemas by running controller-gen (sigs.k8s.io/controller-tools) with
# `crd:allowDangerousTypes=true` over its kubevirt.io/api packages; virt-operator then puts the
# schema of each generated CRD into the CRD it installs (docs/kubevirt-facts.md K8, P1). This
# script does the same, pinned: it builds controller-gen from the Go module proxy, fetches
# kubevirt.io/api (also from the proxy) into a throwaway module and runs controller-gen once over
# all the packages asked for. Nothing of either project enters the repo.
#
# Output, outside the repo:
#   /var/cache/bridge-migration/kubevirt-crds/api-<v>_controller-gen-<v>_<packages>/
# (<packages>: the sorted package list, `/` as `-`, joined by `+`) with controller-gen's own
# output, one <group>_<plural>.yaml per kind. kubelab/crds.py reads the schemas from there and
# keeps its own names, versions, scope and subresources. A run whose output directory is complete
# (its .complete stamp names the same versions, options and packages) does nothing.
#
# Usage: build-crds.sh [PACKAGE...]
#   PACKAGE: a package of kubevirt.io/api, as core/v1 or kubevirt.io/api/core/v1
#   (default: core/v1 plugin/v1alpha1, the ones kubelab installs; kubelab/tools.py API_PACKAGES).
# Prints the output directory on its last line of stdout; progress goes to stderr.
set -euo pipefail

# The newest KubeVirt release we support; kubelab/tools.py names the same versions.
KUBEVIRT_API_VERSION=${KUBEVIRT_API_VERSION:-v1.9.0}
# The controller-gen release KubeVirt's own builder image uses for that release.
CONTROLLER_TOOLS_VERSION=${CONTROLLER_TOOLS_VERSION:-v0.20.1}
CRD_OPTIONS="crd:allowDangerousTypes=true"
API_MODULE=kubevirt.io/api
DEFAULT_PACKAGES=(core/v1 plugin/v1alpha1)

say() { printf '[build-crds %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# The CRD files a complete run has for a package kubelab installs (others: whatever
# controller-gen writes, at least one file).
expected_files() {
  case $1 in
    core/v1)
      echo kubevirt.io_virtualmachineinstances.yaml kubevirt.io_virtualmachines.yaml \
        kubevirt.io_virtualmachineinstancemigrations.yaml kubevirt.io_kubevirts.yaml
      ;;
    plugin/v1alpha1) echo plugin.kubevirt.io_plugins.yaml ;;
  esac
}

(($#)) || set -- "${DEFAULT_PACKAGES[@]}"
packages=()
for p in "$@"; do
  p=${p#"$API_MODULE/"}
  [[ $p =~ ^[a-z0-9]+(/[a-z0-9]+)*$ ]] || { say "not a package of $API_MODULE: $p"; exit 2; }
  packages+=("$p")
done
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)

cache_root=${BM_CACHE_ROOT:-/var/cache/bridge-migration}
tool_dir=$cache_root/controller-gen-$CONTROLLER_TOOLS_VERSION
controller_gen=$tool_dir/bin/controller-gen
key=$(printf '%s\n' "${packages[@]}" | tr / - | paste -sd+)
out=$cache_root/kubevirt-crds/api-${KUBEVIRT_API_VERSION}_controller-gen-${CONTROLLER_TOOLS_VERSION}_$key
# controller-gen takes several paths= options and loads them as one set of package roots.
path_args=()
expected=()
for p in "${packages[@]}"; do
  path_args+=("paths=$API_MODULE/$p")
  read -ra files <<<"$(expected_files "$p")"
  expected+=("${files[@]}")
done
stamp_text="controller-gen $CONTROLLER_TOOLS_VERSION $CRD_OPTIONS $API_MODULE@$KUBEVIRT_API_VERSION ${path_args[*]}"

export GOMODCACHE=$cache_root/go/mod
export GOCACHE=$cache_root/go/build
export GOFLAGS="-buildvcs=false -trimpath"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

# Complete: the stamp's first line is this run's, and every file it lists (those controller-gen
# wrote) and every expected file is there and not empty.
is_complete() {
  [[ -f $out/.complete && $(head -n1 "$out/.complete") == "$stamp_text" ]] || return 1
  local f listed
  mapfile -t listed < <(tail -n +2 "$out/.complete")
  ((${#listed[@]})) || return 1
  for f in "${listed[@]}" "${expected[@]}"; do
    [[ -s $out/$f ]] || return 1
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
# packages and everything they import. The blank imports keep `go mod tidy` from dropping it.
work=$out.work
rm -rf "$work" "$out"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
printf 'module bridgemigration.local/build/kubevirt-crds\n\ngo %s\n\nrequire %s %s\n' \
  "$go_minor" "$API_MODULE" "$KUBEVIRT_API_VERSION" >"$work/go.mod"
printf 'package crds\n\nimport (\n%s\n)\n' "$(printf '\t_ "%s"\n' "${packages[@]/#/$API_MODULE/}")" >"$work/deps.go"
say "$API_MODULE@$KUBEVIRT_API_VERSION: resolving"
(cd "$work" && go mod tidy 2>"$work/tidy.log") || {
  cat "$work/tidy.log" >&2
  say "go mod tidy failed"
  exit 1
}
say "running controller-gen $CRD_OPTIONS ${path_args[*]}"
(cd "$work" && "$controller_gen" "$CRD_OPTIONS" "${path_args[@]}" "output:crd:dir=$work/out")
mapfile -t written < <(cd "$work/out" 2>/dev/null && find . -maxdepth 1 -name '*.yaml' -printf '%f\n' | sort)
((${#written[@]})) || { say "controller-gen wrote no CRD"; exit 1; }
for f in "${expected[@]}"; do
  [[ -s $work/out/$f ]] || { say "controller-gen wrote no $f"; exit 1; }
done
printf '%s\n' "$stamp_text" "${written[@]}" >"$work/out/.complete"
mv "$work/out" "$out"
rm -rf "$work"
say "${#written[@]} CRD files ready in $((SECONDS - start)) s: $out"
echo "$out"
