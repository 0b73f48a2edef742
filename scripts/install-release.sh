#!/usr/bin/env bash
# Install what scripts/release.sh and its test (tests/image/test_release.py) need on a Debian 12
# machine, as root, idempotently: skopeo (pushes the images), docker-registry (the distribution
# project's registry: the test's loopback registry; its systemd service is not used) and cosign
# (signs and verifies; built from its Go module by scripts/build-cosign.sh, cached). Building the
# images needs scripts/install-image.sh; helm comes from scripts/build-k8s.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

say() { printf '[install-release] %s\n' "$*"; }

apt_pkgs=(skopeo docker-registry)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package enables its own service, a registry on :5000; the test starts its own on loopback.
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
  fi
fi
"$root/scripts/build-cosign.sh" >/dev/null
