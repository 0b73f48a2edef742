#!/usr/bin/env bash
# Install what building and running the image needs on a Debian 12 machine without a Docker
# engine, as root, idempotently: buildah (build), podman + runc (run), mmdebstrap (the base
# image stand-in). See docs/install.md ("The image") and scripts/build-image.sh.
set -euo pipefail

say() { printf '[install-image] %s\n' "$*"; }

apt_pkgs=(buildah podman runc mmdebstrap ca-certificates)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
