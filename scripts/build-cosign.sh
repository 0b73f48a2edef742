#!/usr/bin/env bash
# Build cosign (signing and verifying the release's images, scripts/release.sh) from its Go module
# on the module proxy, pinned, the way scripts/build-k8s.sh builds the Kubernetes tools: in a
# throwaway module directory under /var/cache/bridge-migration/cosign-<version>, outside the repo,
# with GOMODCACHE/GOCACHE under /var/cache/bridge-migration/go. Re-used while the binary exists.
#
# Usage: build-cosign.sh   Prints the binary's path on its last line of stdout; progress on stderr.
set -euo pipefail

COSIGN_VERSION=${COSIGN_VERSION:-v2.6.5}
mod=github.com/sigstore/cosign/v2
pkg=$mod/cmd/cosign

cache_root=${BM_CACHE_ROOT:-/var/cache/bridge-migration}
out=$cache_root/cosign-$COSIGN_VERSION
bin=$out/bin/cosign
export GOMODCACHE=$cache_root/go/mod
export GOCACHE=$cache_root/go/build
export GOFLAGS="-buildvcs=false -trimpath"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

say() { printf '[build-cosign %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if [[ -x $bin ]]; then
  say "cached ($bin)"
else
  command -v go >/dev/null || { say "go is not installed (need Go >= 1.25)"; exit 1; }
  start=$SECONDS
  dir=$out/src
  rm -rf "$dir"
  mkdir -p "$dir" "$out/bin" "$GOMODCACHE" "$GOCACHE"
  say "resolving $mod@$COSIGN_VERSION"
  printf 'module bridgemigration.local/build/cosign\n\ngo %s\n\nrequire %s %s\n' \
    "$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')" "$mod" "$COSIGN_VERSION" >"$dir/go.mod"
  (cd "$dir" && go get "$pkg@$COSIGN_VERSION" >"$dir/get.log" 2>&1) || {
    cat "$dir/get.log" >&2
    say "go get failed"
    exit 1
  }
  say "compiling $pkg (this is the slow part)"
  # cosign's goreleaser build stamps its version into sigs.k8s.io/release-utils/version.
  (cd "$dir" && go build -ldflags "-s -w -X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION" \
    -o "$bin.tmp" "$pkg")
  mv "$bin.tmp" "$bin"
  say "built in $((SECONDS - start)) s"
fi
"$bin" version 2>&1 | sed -n '/GitVersion/p' >&2
echo "$bin"
