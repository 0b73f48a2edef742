#!/usr/bin/env bash
# Build the image from the Dockerfile without a Docker engine (buildah), as root:
#   scripts/build-image.sh [extra buildah bud arguments, e.g. --no-cache]
# Registry images cannot be pulled here, so the Dockerfile's PYTHON_IMAGE (python:3.11-slim-bookworm
# upstream) is replaced by a stand-in: a minbase Debian 12 with python3, venv, pip and the C headers,
# made by mmdebstrap once, cached as a tarball under /var/cache/bridge-migration/image and imported
# into podman's store when missing. The image is tagged with the chart's default repository and the
# package version, the reference the chart and the webhook use. Prints the reference last.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf '[build-image] %s\n' "$*" >&2; }

cache=${BM_CACHE_ROOT:-/var/cache/bridge-migration}/image
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
image=${BM_IMAGE_REPOSITORY:-ghcr.io/kubevirt-bridge-migration/bridge-migration}:$version

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
  mmdebstrap --quiet --variant=minbase --include="$include" bookworm "$tar.tmp"
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
say "buildah bud $image (base $base)"
buildah bud --isolation chroot --network host --layers --quiet \
  --build-arg PYTHON_IMAGE="$base" \
  --volume "$ca:$ca:ro" --build-arg PIP_CERT="$ca" \
  --tag "$image" "$@" -f Dockerfile . >&2
echo "$image"
