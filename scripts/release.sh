#!/usr/bin/env bash
# Build both images and the chart, push them to an OCI registry, as root (buildah/podman store):
#   scripts/release.sh [--plain-http] [--sign KEY] REGISTRY
# REGISTRY is a registry host with an optional path, e.g. ghcr.io/kubevirt-bridge-migration or
# 127.0.0.1:5000. What is pushed:
#   REGISTRY/bridge-migration:<version>          the webhook image (scripts/build-image.sh)
#   REGISTRY/bridge-migration-sidecar:<version>  the sidecar image
#   oci://REGISTRY/charts/bridge-migration       the chart, version <version>, whose values name
#                                                both images as REGISTRY/...@sha256:<digest>
# Images go with skopeo (their digests are those of the manifests the registry stored), the chart
# with `helm package` + `helm push`. --sign KEY: cosign signs both images and the chart by digest
# with the cosign private key KEY (COSIGN_PASSWORD from the environment), without a transparency
# log upload (--tlog-upload=false; verify with --insecure-ignore-tlog). --plain-http: the registry
# speaks HTTP without TLS (a loopback registry), for skopeo, helm and cosign alike.
# Progress goes to stderr; stdout ends with one KEY=VALUE a line: webhook_image, sidecar_image
# (by digest), chart (the oci:// reference), chart_version, chart_digest.
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

mapfile -t built < <("$root/scripts/build-image.sh" | tail -n 2)
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
fi

echo "webhook_image=$webhook_image"
echo "sidecar_image=$sidecar_image"
echo "chart=oci://$registry/charts/bridge-migration"
echo "chart_version=$version"
echo "chart_digest=$chart_digest"
