#!/usr/bin/env bash
# Install what the project needs on a Debian 12 machine, as root: Debian packages and a
# virtualenv in .venv with the project (editable) and its dev tools. Idempotent and quick
# when everything is already there, so every entry point (demo, tests, CI) calls it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf '[install] %s\n' "$*"; }

apt_pkgs=(python3 python3-venv python3-dev gcc pkg-config libvirt-dev openssl iproute2 ca-certificates hey shellcheck)
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

# The venv is keyed on pyproject.toml so a dependency change rebuilds what it must.
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -f $stamp ]]; then
  say "creating .venv with the project and its dev tools"
  [[ -x .venv/bin/python ]] || /usr/bin/python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[sidecar,dev,bench]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
