#!/usr/bin/env bash
# Build both images from the Dockerfile without a Docker engine (buildah), as root:
#   scripts/build-image.sh [--from-scratch]
# --from-scratch: no cached layers (the stand-in base still comes from the cache).
# Registry images cannot be pulled here, so the Dockerfile's PYTHON_IMAGE (python:3.11-slim-bookworm
# upstream, pinned by digest) is replaced by a stand-in: a minbase Debian 12 with python3, venv, pip and the C headers,
# made by mmdebstrap once, cached as a tarball under /var/cache/bridge-migration/image and imported
# into podman's store when missing. The images are tagged with the chart's default repositories and
# the package version, the references the chart and the webhook use. Prints them last, one a line:
# the webhook image (target webhook), then the sidecar image (target sidecar). Both carry the OCI
# labels version (the package's) and revision (the git commit, "-dirty" with uncommitted changes).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf '[build-image] %s\n' "$*" >&2; }

cache=${BM_CACHE_ROOT:-/var/cache/bridge-migration}/image
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
repository=${BM_IMAGE_REPOSITORY:-ghcr.io/kubevirt-bridge-migration/bridge-migration}
webhook_image=$repository:$version
sidecar_image=$repository-sidecar:$version
revision=unknown
if git rev-parse --git-dir >/dev/null 2>&1; then
  revision=$(git rev-parse HEAD)
  git diff --quiet HEAD -- || revision+=-dirty
fi
first_build=(--layers)
case ${1:-} in
  --from-scratch) first_build=(--no-cache) ;;
  "") ;;
  *)
    say "usage: $0 [--from-scratch]"
    exit 2
    ;;
esac

# The stand-in for python:3.11-slim-bookworm, keyed on what goes into it.
base_pkgs=(python3 python3-venv python3-pip python-is-python3 python3-dev)
base_key=$(printf '%s\n' bookworm minbase "${base_pkgs[@]}" | sha256sum | cut -c1-12)
base=localhost/bridge-migration-base:bookworm-$base_key
tar=$cache/base-bookworm-$base_key.tar
mkdir -p "$cache"
if [[ ! -f $tar ]]; then
  say "mmdebstrap: base image stand-in $tar"
  include=$(
    IFS=,
    echo "${base_pkgs[*]}"
  )
  # --format=tar: mmdebstrap picks the format from the file name, and "$tar.tmp" would be a directory.
  rm -rf "$tar.tmp" "$tar"
  mmdebstrap --quiet --format=tar --variant=minbase --include="$include" bookworm "$tar.tmp"
  mv "$tar.tmp" "$tar"
  find "$cache" -maxdepth 1 -name 'base-bookworm-*.tar' ! -name "$(basename "$tar")" -delete
fi
if ! podman image exists "$base"; then
  say "podman import $tar as $base"
  podman import --quiet "$tar" "$base" >/dev/null
fi

# This machine's package access needs its own CA bundle inside the build: mounted read-only and
# named by PIP_CERT (a build ARG of the build stage), so none of it ends up in the image.
ca=/etc/ssl/certs/ca-certificates.crt
bud() {
  buildah bud --isolation chroot --network host --quiet \
    --build-arg PYTHON_IMAGE="$base" \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    --volume "$ca:$ca:ro" --build-arg PIP_CERT="$ca" \
    "$@" -f Dockerfile . >/dev/null
}
say "buildah bud --target webhook $webhook_image (base $base)"
bud "${first_build[@]}" --target webhook --tag "$webhook_image"
# No layer cache under --from-scratch for this one either: with --layers buildah reused the
# sidecar's cached LABEL layer of an earlier commit although REVISION had changed (CI, 2026-12-02).
say "buildah bud --target sidecar $sidecar_image"
bud "${first_build[@]:---layers}" --target sidecar --tag "$sidecar_image"
echo "$webhook_image"
echo "$sidecar_image"
