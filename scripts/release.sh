#!/usr/bin/env bash
# Build both images and the chart, push them to an OCI registry, as root (buildah/podman store):
#   scripts/release.sh [--plain-http] [--sign KEY] REGISTRY
# REGISTRY is a registry host with an optional path, e.g. ghcr.io/kubevirt-bridge-migration or
# 127.0.0.1:5000. What is pushed:
#   REGISTRY/bridge-migration:<version>          the webhook image (scripts/build-image.sh)
#   REGISTRY/bridge-migration-sidecar:<version>  the sidecar image
#   oci://REGISTRY/charts/bridge-migration       the chart, version <version>, whose values name
#                                                both images as REGISTRY/...@sha256:<digest>
# The images are built without cached layers (scripts/build-image.sh --from-scratch) and pushed with
# skopeo (their digests are those of the manifests the registry stored), the chart with
# `helm package` + `helm push`. --sign KEY: cosign signs both images and the chart by digest
# with the cosign private key KEY (COSIGN_PASSWORD from the environment), without a transparency
# log upload (--tlog-upload=false; verify with --insecure-ignore-tlog). --plain-http: the registry
# speaks HTTP without TLS (a loopback registry), for skopeo, helm and cosign alike.
# SBOMs: one CycloneDX document per image (its venv's Python distributions, i.e. its hash-locked
# requirements file and the project, and its dpkg packages, read from the image with podman run),
# written to dist/release/<image>.cdx.json ($BM_RELEASE_OUT); with --sign also pushed as a signed
# attestation of the image (cosign attest --type cyclonedx). docs/install.md, "A release".
# Progress goes to stderr; stdout ends with one KEY=VALUE a line: webhook_image, sidecar_image
# (by digest), chart (the oci:// reference), chart_version, chart_digest, webhook_sbom, sidecar_sbom.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf '[release] %s\n' "$*" >&2; }
usage() {
  say "usage: $0 [--plain-http] [--sign KEY] REGISTRY"
  exit 2
}

plain_http=0
key=""
registry=""
while (($#)); do
  case $1 in
    --plain-http) plain_http=1 ;;
    --sign)
      (($# >= 2)) || usage
      key=$2
      shift
      ;;
    -*) usage ;;
    *)
      [[ -z $registry ]] || usage
      registry=${1%/}
      ;;
  esac
  shift
done
[[ -n $registry ]] || usage
[[ -z $key || -f $key ]] || { say "no such key: $key"; exit 2; }

bin=${BM_K8S_BIN:-$("$root/scripts/build-k8s.sh" helm)}
helm=$bin/helm
cosign=""
[[ -z $key ]] || cosign=$("$root/scripts/build-cosign.sh")

out=${BM_RELEASE_OUT:-$root/dist/release}
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

skopeo_tls=()
helm_tls=()
cosign_tls=()
if ((plain_http)); then
  skopeo_tls=(--dest-tls-verify=false)
  helm_tls=(--plain-http)
  cosign_tls=(--allow-insecure-registry --allow-http-registry)
fi

# --from-scratch: with cached layers buildah can keep the LABEL layer of an earlier commit (the
# revision label then names the wrong commit; seen 2026-12-07 on the webhook image).
mapfile -t built < <("$root/scripts/build-image.sh" --from-scratch | tail -n 2)
((${#built[@]} == 2)) || { say "build-image.sh did not print two images"; exit 1; }

# push LOCAL_REF NAME: prints REGISTRY/NAME@sha256:... of the manifest the registry stored.
push() {
  local ref=$1 name=$2 digest
  say "skopeo copy $ref -> docker://$registry/$name:$version"
  skopeo copy --quiet "${skopeo_tls[@]}" --digestfile "$work/$name.digest" \
    "containers-storage:$ref" "docker://$registry/$name:$version" >&2
  digest=$(cat "$work/$name.digest")
  [[ $digest == sha256:* ]] || { say "no digest for $name: $digest"; exit 1; }
  echo "$registry/$name@$digest"
}
webhook_image=$(push "${built[0]}" bridge-migration)
sidecar_image=$(push "${built[1]}" bridge-migration-sidecar)

# A CycloneDX SBOM per image, from the image itself: the Python distributions its venv holds (its
# hash-locked requirements file and the project) and the Debian packages of its dpkg status.
mkdir -p "$out"
sbom() {
  local ref=$1 pushed=$2 name=$3 lock=$4 file=$out/$3.cdx.json
  # podman's conmon asks for RLIMIT_NPROC 32768 unless told less (lab/container.py does the same).
  local nofile nproc
  nofile=$(ulimit -n)
  nproc=$(ulimit -u)
  [[ $nproc == unlimited || $nproc -gt 4096 ]] && nproc=4096
  local -a run=(podman --runtime runc --cgroup-manager cgroupfs run --rm --network none --read-only
    --cap-drop=all --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" "$ref")
  # (`|| exit`: errexit does not reach into the command substitution this function runs in.)
  "${run[@]}" python -c 'import importlib.metadata as m
for d in m.distributions(): print(d.name, d.version, sep="\t")' >"$work/$name.py.tsv" || exit 1
  # shellcheck disable=SC2016 # dpkg-query's own ${field} syntax
  "${run[@]}" dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n' >"$work/$name.deb.tsv" || exit 1
  python3 - "$pushed" "$name" "$version" "$lock" "$work/$name.py.tsv" "$work/$name.deb.tsv" >"$file" <<'PY'
import json
import sys
import uuid
from datetime import datetime, timezone
from urllib.parse import quote

pushed, name, version, lock, py, deb = sys.argv[1:]
components = []
for line in open(py).read().splitlines():
    dist, ver = line.split("\t")
    components.append(
        {"type": "library", "name": dist, "version": ver, "purl": f"pkg:pypi/{dist.lower().replace('_', '-')}@{ver}"}
    )
for line in open(deb).read().splitlines():
    pkg, ver, arch = line.split("\t")
    purl = f"pkg:deb/debian/{pkg}@{quote(ver)}?arch={arch}&distro=bookworm"
    components.append({"type": "library", "name": pkg, "version": ver, "purl": purl})
digest = pushed.split("@")[1]
bom = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.5",
    "serialNumber": f"urn:uuid:{uuid.uuid4()}",
    "version": 1,
    "metadata": {
        "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tools": {"components": [{"type": "application", "name": "bridge-migration scripts/release.sh"}]},
        "component": {
            "type": "container",
            "name": name,
            "version": version,
            "purl": f"pkg:oci/{name}@{quote(digest)}?repository_url={quote(pushed.split('@')[0], safe='')}",
            "hashes": [{"alg": "SHA-256", "content": digest.removeprefix("sha256:")}],
        },
        "properties": [{"name": "bridge-migration:lock", "value": lock}],
    },
    "components": sorted(components, key=lambda c: (c["purl"].split("/")[0], c["name"].lower())),
}
json.dump(bom, sys.stdout, indent=1)
print()
PY
  [[ -s $file ]] || exit 1
  say "sbom $file ($(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["components"]))' "$file") components)"
  echo "$file"
}
webhook_sbom=$(sbom "${built[0]}" "$webhook_image" bridge-migration requirements/webhook.txt)
sidecar_sbom=$(sbom "${built[1]}" "$sidecar_image" bridge-migration-sidecar requirements/sidecar.txt)

# The chart with its default images set to the pushed ones, by digest. Only those four lines of
# values.yaml change (its comments, which `helm show values` prints, stay).
cp -r charts/bridge-migration "$work/bridge-migration"
python3 - "$work/bridge-migration/values.yaml" "$registry" "${webhook_image#*@}" "${sidecar_image#*@}" <<'PY'
import re
import sys

import yaml

path, registry, webhook_digest, sidecar_digest = sys.argv[1:]
text = open(path).read()
edits = [
    (r"^(  repository: ).*/bridge-migration$", rf"\g<1>{registry}/bridge-migration"),
    (r'^(  digest: )""$', rf'\g<1>"{webhook_digest}"'),
    (r"^(    repository: ).*/bridge-migration-sidecar$", rf"\g<1>{registry}/bridge-migration-sidecar"),
    (r'^(    digest: )""$', rf'\g<1>"{sidecar_digest}"'),
]
for pattern, repl in edits:
    text, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    if n != 1:
        sys.exit(f"values.yaml: no line matches {pattern}")
values = yaml.safe_load(text)
want = {
    "webhook": (values["image"], f"{registry}/bridge-migration", webhook_digest),
    "sidecar": (values["sidecar"]["image"], f"{registry}/bridge-migration-sidecar", sidecar_digest),
}
for what, (image, repository, digest) in want.items():
    if (image["registry"], image["repository"], image["digest"]) != ("", repository, digest):
        sys.exit(f"values.yaml: the {what} image is {image}, not {repository}@{digest}")
open(path, "w").write(text)
PY
"$helm" lint --quiet "$work/bridge-migration" >&2
"$helm" package "$work/bridge-migration" --destination "$work" >&2
tgz=$work/bridge-migration-$version.tgz
say "helm push $(basename "$tgz") oci://$registry/charts"
"$helm" push "${helm_tls[@]}" "$tgz" "oci://$registry/charts" >"$work/push.log" 2>&1 || {
  cat "$work/push.log" >&2
  exit 1
}
cat "$work/push.log" >&2
chart_digest=$(sed -n 's/^Digest: *//p' "$work/push.log")
[[ $chart_digest == sha256:* ]] || { say "helm push printed no digest"; exit 1; }

if [[ -n $cosign ]]; then
  for ref in "$webhook_image" "$sidecar_image" "$registry/charts/bridge-migration@$chart_digest"; do
    say "cosign sign $ref"
    COSIGN_PASSWORD=${COSIGN_PASSWORD-} "$cosign" sign --yes --key "$key" --tlog-upload=false \
      "${cosign_tls[@]}" "$ref" >&2
  done
  # Each SBOM as a signed attestation of its image (cosign verify-attestation --type cyclonedx).
  for pair in "$webhook_image $webhook_sbom" "$sidecar_image $sidecar_sbom"; do
    say "cosign attest --type cyclonedx ${pair#* } ${pair%% *}"
    COSIGN_PASSWORD=${COSIGN_PASSWORD-} "$cosign" attest --yes --key "$key" --tlog-upload=false \
      "${cosign_tls[@]}" --type cyclonedx --predicate "${pair#* }" "${pair%% *}" >&2
  done
fi

echo "webhook_image=$webhook_image"
echo "sidecar_image=$sidecar_image"
echo "chart=oci://$registry/charts/bridge-migration"
echo "chart_version=$version"
echo "chart_digest=$chart_digest"
echo "webhook_sbom=$webhook_sbom"
echo "sidecar_sbom=$sidecar_sbom"
