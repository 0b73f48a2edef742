#!/usr/bin/env bash
# Build the Kubernetes tools the kube tests and the demo run, from the Go module proxy, pinned:
# kube-apiserver and kubectl (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server/v3), helm, and
# helm-docs (github.com/norwoodj/helm-docs: the chart README is generated from values.yaml with it).
#
# Binaries land in /var/cache/bridge-migration/k8s-<version>/bin, outside the repo, and are
# re-used on later runs (a tool is rebuilt only when its binary is missing). Each tool is built in
# a throwaway module directory under the cache so the repo never holds Go code of other projects.
# GOMODCACHE and GOCACHE live under /var/cache/bridge-migration/go so CI re-uses them.
#
# Usage: build-k8s.sh [TOOL...]   (TOOL: kube-apiserver kubectl etcd helm helm-docs; default: all five)
# Prints the bin directory on its last line of stdout; progress goes to stderr.
set -euo pipefail
wanted=${*:-kube-apiserver kubectl etcd helm helm-docs}
want() { [[ " $wanted " == *" $1 "* ]]; }

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
HELM_DOCS_VERSION=${HELM_DOCS_VERSION:-v1.14.2}

cache_root=${BM_CACHE_ROOT:-/var/cache/bridge-migration}
out=$cache_root/k8s-$K8S_VERSION
bin=$out/bin
export GOMODCACHE=$cache_root/go/mod
export GOCACHE=$cache_root/go/build
# -buildvcs=false: the throwaway module dirs are not repositories; -trimpath keeps cache paths out.
export GOFLAGS="-buildvcs=false -trimpath"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

say() { printf '[build-k8s %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

command -v go >/dev/null || { say "go is not installed (need Go >= 1.25)"; exit 1; }
mkdir -p "$bin" "$GOMODCACHE" "$GOCACHE"

# Build one main package out of a throwaway module. Arguments:
#   name  binary name in $bin
#   mod   module path to require, version
#   pkg   main package to build
#   ldflags
#   extra go.mod lines (replace directives), may be empty
build_tool() {
  local name=$1 mod=$2 ver=$3 pkg=$4 ldflags=$5 extra=$6
  if ! want "$name"; then
    return 0
  fi
  if [[ -x $bin/$name ]]; then
    say "$name: cached ($bin/$name)"
    return 0
  fi
  local dir=$out/src-$name start=$SECONDS
  rm -rf "$dir"
  mkdir -p "$dir"
  say "$name: resolving $mod@$ver"
  {
    printf 'module bridgemigration.local/build/%s\n\ngo %s\n\nrequire %s %s\n' \
      "$name" "$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')" "$mod" "$ver"
    printf '%s\n' "$extra"
  } >"$dir/go.mod"
  # A blank import of a main package is not allowed, so `go get` the package itself: it records
  # every module the package needs in go.mod/go.sum.
  (cd "$dir" && go get "$pkg@$ver" >&2 2>"$dir/get.log") || {
    cat "$dir/get.log" >&2
    say "$name: go get failed"
    return 1
  }
  if [[ $ldflags == *@CLIENT_GO_MINOR@* ]]; then
    # helm reports the Kubernetes version it was built against (client-go v0.X -> 1.X) as the
    # default for `helm template`/`lint`; its Makefile sets it, so do the same.
    local cg
    cg=$(cd "$dir" && go list -m -f '{{.Version}}' k8s.io/client-go)
    cg=${cg#v0.}
    ldflags=${ldflags//@CLIENT_GO_MINOR@/${cg%%.*}}
  fi
  say "$name: compiling $pkg (this is the slow part)"
  (cd "$dir" && go build -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  say "$name: built in $((SECONDS - start)) s"
}

# k8s.io/kubernetes points every k8s.io staging module at ./staging in its go.mod; as a dependency
# those replace lines do not apply, so pin each staging module to the matching published v0.X.Y.
k8s_replaces() {
  local gomod staging_ver
  staging_ver=v0.${K8S_VERSION#v1.}
  gomod=$(cd "$out" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f $gomod ]] || { say "cannot download k8s.io/kubernetes@$K8S_VERSION"; return 1; }
  echo 'replace ('
  grep -oE '^[[:space:]]*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" |
    awk -v v="$staging_ver" '{print "\t" $1 " => " $1 " " v}'
  echo ')'
}

total_start=$SECONDS
say "target: kubernetes $K8S_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION, helm-docs $HELM_DOCS_VERSION -> $bin"
say "GOMODCACHE=$GOMODCACHE GOCACHE=$GOCACHE ($(go version))"

need_k8s=0
for t in kube-apiserver kubectl; do
  if want $t && [[ ! -x $bin/$t ]]; then need_k8s=1; fi
done
if ((need_k8s)); then
  replaces=$(k8s_replaces)
  minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  k8s_ld="-s -w"
  for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ld+=" -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor"
    k8s_ld+=" -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
  done
  build_tool kube-apiserver k8s.io/kubernetes "$K8S_VERSION" k8s.io/kubernetes/cmd/kube-apiserver \
    "$k8s_ld" "$replaces"
  build_tool kubectl k8s.io/kubernetes "$K8S_VERSION" k8s.io/kubernetes/cmd/kubectl "$k8s_ld" "$replaces"
fi

# etcd's own go.mod replaces its sibling modules with ../api etc.; pin them to the same release.
etcd_replaces="replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
)"
build_tool etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3 \
  "-s -w" "$etcd_replaces"

helm_ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=@CLIENT_GO_MINOR@"
done
build_tool helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "$helm_ld" ""

# helm-docs prints the version its goreleaser build stamps into main.version.
build_tool helm-docs github.com/norwoodj/helm-docs "$HELM_DOCS_VERSION" github.com/norwoodj/helm-docs/cmd/helm-docs \
  "-s -w -X main.version=${HELM_DOCS_VERSION#v}" ""

want kube-apiserver && "$bin/kube-apiserver" --version >&2
want kubectl && "$bin/kubectl" version --client >&2
# sed reads to the end: `head` would exit early and, under pipefail, fail the build with SIGPIPE.
want etcd && "$bin/etcd" --version 2>&1 | sed -n 1p >&2
want helm && "$bin/helm" version --short >&2
want helm-docs && "$bin/helm-docs" --version >&2
say "$wanted ready in $((SECONDS - total_start)) s"
echo "$bin"
