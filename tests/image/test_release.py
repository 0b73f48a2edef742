"""`scripts/release.sh` against a real registry on loopback, and the chart installed from it.

The registry is the distribution project's (Debian package `docker-registry`, installed by
scripts/install-release.sh), serving plain HTTP on 127.0.0.1. release.sh builds both images,
pushes them with skopeo, signs them and the chart with cosign (a key pair made here, no
transparency log), and pushes the chart whose default images are the pushed ones by digest. The
chart is then installed with `helm install oci://...` into a kube-apiserver of its own, and every
image reference the release wrote (the webhook Deployment, the fixer image the webhook writes into
VMIs and launcher pods, the pre-delete cleanup hook) is REGISTRY/...@sha256:<the pushed digest>.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
import yaml
from packaging.utils import canonicalize_name
from packaging.version import Version

from kubelab.controlplane import ControlPlane
from kubelab.crds import install_crds
from kubelab.lab import KUBEVIRT_NAMESPACE
from kubelab.ports import free_port
from kubelab.reviews import make_review
from kubelab.tools import REPO_ROOT, find_tools
from lab import container
from lab.process import LabProcess, wait_for
from tests.test_packaging import lock_pins
from tests.webhook.vmis import vmi
from webhook.certs import CertificateAuthority

pytestmark = [pytest.mark.image, pytest.mark.kube, pytest.mark.timeout(1800)]

RELEASE = "bm"
NAMESPACE = "bridge-migration"
MANIFEST_TYPES = ",".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


def run(*argv: str | Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A distribution registry on 127.0.0.1:PORT (plain HTTP), storing under a temporary directory."""
    work = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(work / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    (work / "config.yml").write_text(yaml.safe_dump(config))
    process = LabProcess(
        name="docker-registry",
        argv=["docker-registry", "serve", str(work / "config.yml")],
        log_path=work / "registry.log",
    )

    def up() -> bool:
        if not process.alive():
            raise RuntimeError(process.log_tail(40))
        try:
            return httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.2, what="the registry's /v2/")
        yield f"127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.fixture(scope="module")
def cosign() -> Path:
    """cosign, built from its Go module by scripts/build-cosign.sh (cached)."""
    return Path(run(REPO_ROOT / "scripts" / "build-cosign.sh", timeout=1500).strip().splitlines()[-1])


@pytest.fixture(scope="module")
def key_pair(cosign: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("cosign")
    prefix = work / "release"
    run(cosign, "generate-key-pair", f"--output-key-prefix={prefix}", env={"COSIGN_PASSWORD": ""})
    return prefix.with_suffix(".key"), prefix.with_suffix(".pub")


@dataclass(frozen=True)
class Release:
    registry: str
    webhook_image: str
    sidecar_image: str
    chart: str
    chart_version: str
    chart_digest: str
    webhook_sbom: str
    sidecar_sbom: str


@pytest.fixture(scope="module")
def release(registry: str, key_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Release:
    started = time.monotonic()
    out = run(
        REPO_ROOT / "scripts" / "release.sh", "--plain-http", "--sign", key_pair[0], registry,
        env={"COSIGN_PASSWORD": "", "BM_RELEASE_OUT": str(tmp_path_factory.mktemp("release"))},
        timeout=1500,
    )  # fmt: skip
    print(out, f"release.sh took {time.monotonic() - started:.0f} s", sep="\n")
    said = dict(line.split("=", 1) for line in out.strip().splitlines()[-7:])
    return Release(registry=registry, **said)


def manifest(registry: str, repository: str, reference: str) -> tuple[str, dict[str, Any]]:
    """(digest, manifest) as the registry serves them."""
    response = httpx.get(
        f"http://{registry}/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.headers["Docker-Content-Digest"], response.json()


def test_release_pushes_both_images_by_digest_and_the_tags_name_the_same_manifests(release: Release) -> None:
    version = release.chart_version
    for ref, name in ((release.webhook_image, "bridge-migration"), (release.sidecar_image, "bridge-migration-sidecar")):
        repository, digest = ref.split("@")
        assert repository == f"{release.registry}/{name}"
        tagged, _ = manifest(release.registry, name, version)
        assert tagged == digest
        by_digest, body = manifest(release.registry, name, digest)
        assert by_digest == digest and body["layers"]


def test_the_pushed_images_pull_and_are_the_builds(release: Release) -> None:
    """What a node would do: pull REGISTRY/...@sha256 (podman, plain HTTP) and read its labels."""
    version = release.chart_version
    head = run("git", "-C", REPO_ROOT, "rev-parse", "HEAD").strip()
    for ref, title in (
        (release.webhook_image, "bridge-migration"),
        (release.sidecar_image, "bridge-migration-sidecar"),
    ):
        run(*container.PODMAN, "pull", "--quiet", "--tls-verify=false", ref)
        labels = json.loads(run(*container.PODMAN, "image", "inspect", ref))[0]["Config"]["Labels"]
        assert labels["org.opencontainers.image.title"] == title
        assert labels["org.opencontainers.image.version"] == version
        # Built from scratch: a cached LABEL layer would name an earlier commit.
        assert labels["org.opencontainers.image.revision"].removesuffix("-dirty") == head


def test_the_chart_is_in_the_registry_as_a_helm_oci_artifact(release: Release) -> None:
    assert release.chart == f"oci://{release.registry}/charts/bridge-migration"
    digest, body = manifest(release.registry, "charts/bridge-migration", release.chart_version)
    assert digest == release.chart_digest
    assert body["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"


def test_cosign_verifies_every_signature_with_the_public_key(
    release: Release, cosign: Path, key_pair: tuple[Path, Path]
) -> None:
    chart = f"{release.registry}/charts/bridge-migration@{release.chart_digest}"
    for ref in (release.webhook_image, release.sidecar_image, chart):
        out = run(
            cosign, "verify", "--key", key_pair[1], "--insecure-ignore-tlog",
            "--allow-insecure-registry", "--allow-http-registry", ref,
        )  # fmt: skip
        [payload] = json.loads(out)
        assert payload["critical"]["image"]["docker-manifest-digest"] == ref.split("@")[1]


def test_verify_with_another_key_fails(release: Release, cosign: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "other"
    run(cosign, "generate-key-pair", f"--output-key-prefix={prefix}", env={"COSIGN_PASSWORD": ""})
    result = subprocess.run(
        [str(cosign), "verify", "--key", str(prefix.with_suffix(".pub")), "--insecure-ignore-tlog",
         "--allow-insecure-registry", "--allow-http-registry", release.webhook_image],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with ControlPlane(tools=find_tools()) as running:
        kubectl = running.kubectl()
        install_crds(kubectl)
        kubectl.create_namespace(KUBEVIRT_NAMESPACE)
        yield running


@pytest.fixture(scope="module")
def installed(release: Release, plane: ControlPlane) -> dict[str, Any]:
    """`helm install oci://REGISTRY/charts/bridge-migration --version X`: the webhook Deployment."""
    helm = [str(plane.tools.helm), f"--kubeconfig={plane.kubeconfig}"]
    run(
        *helm, "install", RELEASE, release.chart, "--version", release.chart_version, "--plain-http",
        "--namespace", NAMESPACE, "--create-namespace", "--set", "cleanup.onUninstall=true",
    )  # fmt: skip
    [listed] = json.loads(run(*helm, "list", "-n", NAMESPACE, "-o", "json"))
    assert (listed["status"], listed["chart"]) == ("deployed", f"bridge-migration-{release.chart_version}")
    deploy: dict[str, Any] = plane.kubectl().get("deployment", f"{RELEASE}-bridge-migration", namespace=NAMESPACE)
    return deploy


def test_helm_install_from_the_registry_names_every_image_by_its_pushed_digest(
    release: Release, plane: ControlPlane, installed: dict[str, Any]
) -> None:
    [webhook] = installed["spec"]["template"]["spec"]["containers"]
    assert webhook["image"] == release.webhook_image
    # The fixer's image: what the webhook writes into hookSidecars (hook) and launcher pods (inject).
    assert f"--sidecar-image={release.sidecar_image}" in webhook["args"]
    helm = [str(plane.tools.helm), f"--kubeconfig={plane.kubeconfig}"]
    hooks = [doc for doc in yaml.safe_load_all(run(*helm, "get", "hooks", RELEASE, "-n", NAMESPACE)) if doc]
    [job] = [doc for doc in hooks if doc["kind"] == "Job"]
    [cleanup] = job["spec"]["template"]["spec"]["containers"]
    assert cleanup["image"] == release.webhook_image
    assert f"--sidecar-image={release.sidecar_image}" in cleanup["args"]


def test_the_webhook_pulled_by_digest_writes_the_sidecar_by_digest_into_a_vmi(
    release: Release, installed: dict[str, Any], tmp_path: Path
) -> None:
    """The installed Deployment's container run as a node would (the image by digest from the
    registry, its command and args; only where it listens, and the gate, which it would read from
    the KubeVirt CR, changed) admits a VMI: our hookSidecars entry names the sidecar by digest."""
    [spec] = installed["spec"]["template"]["spec"]["containers"]
    tls = tmp_path / "tls"
    tls.mkdir()
    ca = CertificateAuthority(tls)
    pair = ca.issue("tls", common_name="bridge-migration", hosts=("127.0.0.1", "localhost"))
    for path in (tls, pair.cert, pair.key):
        os.chown(path, container.IMAGE_UID, container.IMAGE_UID)
    port = free_port()
    replaced = {"--host": "127.0.0.1", "--port": str(port), "--sidecar-gate": "on"}
    args = [
        a if a.split("=")[0] not in replaced else f"{a.split('=')[0]}={replaced[a.split('=')[0]]}" for a in spec["args"]
    ]
    assert [a for a in args if a.startswith("--tls-")] == [
        "--tls-cert=/etc/bridge-migration/tls/tls.crt",
        "--tls-key=/etc/bridge-migration/tls/tls.key",
    ]
    name = f"bm-release-test-webhook-{port}"
    argv = container.run_argv(
        release.webhook_image, [*spec["command"], *args], name=name, network="host",
        volumes=[f"{tls}:/etc/bridge-migration/tls:ro"],
    )  # fmt: skip
    process = LabProcess(name="webhook from the registry", argv=argv, log_path=tmp_path / "webhook.log")
    verify = ssl.create_default_context(cafile=str(ca.ca_path))

    def up() -> bool:
        if not process.alive():
            raise RuntimeError(process.log_tail(40))
        try:
            return httpx.get(f"https://127.0.0.1:{port}/healthz", verify=verify, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=120, interval=0.5, what="the registry webhook's /healthz")
        obj = vmi()
        answer = httpx.post(
            f"https://127.0.0.1:{port}/mutate/virtualmachineinstances",
            json=make_review(obj, uid="release-1"),
            verify=verify,
            timeout=30,
        ).json()["response"]
    finally:
        process.stop()
        container.remove(name)
    assert answer["allowed"], answer
    stored = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(answer["patch"])))
    [entry] = json.loads(stored["metadata"]["annotations"]["hooks.kubevirt.io/hookSidecars"])
    print(json.dumps(entry, indent=1))
    assert entry["image"] == release.sidecar_image


@pytest.mark.parametrize("which", ["webhook", "sidecar"])
def test_each_image_has_a_signed_cyclonedx_sbom_of_its_lock_and_its_debian_packages(
    release: Release, cosign: Path, key_pair: tuple[Path, Path], which: str
) -> None:
    """The SBOM release.sh wrote next to the image is the predicate of a cyclonedx attestation of
    that digest, verified with the public key; it lists the lock's pins and the dpkg packages."""
    ref = release.webhook_image if which == "webhook" else release.sidecar_image
    written = json.loads(Path(release.webhook_sbom if which == "webhook" else release.sidecar_sbom).read_text())
    out = run(
        cosign, "verify-attestation", "--key", key_pair[1], "--insecure-ignore-tlog", "--type", "cyclonedx",
        "--allow-insecure-registry", "--allow-http-registry", ref,
    )  # fmt: skip
    [envelope] = [json.loads(line) for line in out.splitlines() if line.strip()]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicateType"] == "https://cyclonedx.org/bom"
    assert [s["digest"]["sha256"] for s in statement["subject"]] == [ref.split("sha256:")[1]]
    bom = statement["predicate"]
    assert bom == written
    assert bom["bomFormat"] == "CycloneDX"
    assert bom["metadata"]["component"]["hashes"] == [{"alg": "SHA-256", "content": ref.split("sha256:")[1]}]
    pypi = {
        canonicalize_name(c["name"]): Version(c["version"])
        for c in bom["components"]
        if c["purl"].startswith("pkg:pypi/")
    }
    expected = {name: pin for name, (pin, _hashes) in lock_pins(which).items()}
    assert pypi == {**expected, "kubevirt-bridge-migration": Version(release.chart_version)}
    deb = {c["name"] for c in bom["components"] if c["purl"].startswith("pkg:deb/debian/")}
    assert {"base-files", "python3", "libc6"} <= deb
    assert ("libvirt0" in deb) == (which == "sidecar")
