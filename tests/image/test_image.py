"""The image, built from the Dockerfile and run: what a cluster admin's nodes will pull.

No Docker engine here: `scripts/build-image.sh --from-scratch` builds both images (targets
`webhook` and `sidecar`) with buildah from scratch
on a stand-in for python:3.11-slim-bookworm (mmdebstrap, cached under
/var/cache/bridge-migration/image), and podman runs it the way the chart and KubeVirt do: uid
107, read-only root filesystem, every capability dropped, no_new_privs. The webhook is driven
over TLS from outside its container; the lab's fixer on the migration target runs from the
image, in a container sharing the target pod's network namespace, and fixes a migrated guest.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from packaging.utils import canonicalize_name
from packaging.version import Version

from kubelab.ports import free_port
from kubelab.reviews import make_review
from kubelab.tools import REPO_ROOT
from lab import container
from lab.cluster import Lab, Vm
from lab.process import LabProcess, wait_for
from tests.sidecar.guest import wait_guest_nic
from tests.test_packaging import lock_pins
from tests.webhook.vmis import vmi
from webhook.certs import CertificateAuthority
from webhook.config import DEFAULT_SIDECAR_IMAGE

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]

CHART = REPO_ROOT / "charts" / "bridge-migration"


def podman(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*container.PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)


def in_image(image: str, *command: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    argv = container.run_argv(image, command, **kwargs)
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


@pytest.fixture(scope="module")
def images() -> tuple[str, str]:
    """(webhook, sidecar), built from scratch (no cached layers; the stand-in base comes from the cache)."""
    started = time.monotonic()
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "build-image.sh"), "--from-scratch"],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    webhook, sidecar = result.stdout.strip().splitlines()[-2:]
    print(f"built {webhook} and {sidecar} in {time.monotonic() - started:.0f} s")
    for ref in (webhook, sidecar):
        print(ref, podman("history", "--format", "{{.Size}}\t{{.CreatedBy}}", ref).stdout, sep="\n")
    return webhook, sidecar


@pytest.fixture(scope="module")
def image(images: tuple[str, str]) -> str:
    """The webhook image."""
    return images[0]


@pytest.fixture(scope="module")
def sidecar_image(images: tuple[str, str]) -> str:
    return images[1]


def test_the_chart_and_the_webhook_default_to_the_images_the_build_tags(image: str, sidecar_image: str) -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == version
    assert image == f"{values['image']['repository']}:{version}"  # tag "" = appVersion
    assert sidecar_image == f"{values['sidecar']['image']['repository']}:{version}"
    assert sidecar_image == DEFAULT_SIDECAR_IMAGE


@pytest.mark.parametrize("which", ["webhook", "sidecar"])
def test_it_runs_as_uid_107_read_only_without_capabilities(images: tuple[str, str], which: str) -> None:
    ref = images[0] if which == "webhook" else images[1]
    result = in_image(ref, "sh", "-c", "id; grep -E '^(Cap|NoNewPrivs)' /proc/self/status; touch /x")
    print(ref, result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0] == "uid=107(qemu) gid=107(qemu) groups=107(qemu)"
    caps = dict(line.split(":\t") for line in lines[1:])
    assert {k: int(v, 16) for k, v in caps.items() if k.startswith("Cap")} == dict.fromkeys(
        ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), 0
    )
    assert caps["NoNewPrivs"] == "1"
    assert "Read-only file system" in result.stderr


@pytest.mark.parametrize("which", ["webhook", "sidecar"])
def test_each_image_is_its_lock_and_says_its_version_and_commit(images: tuple[str, str], which: str) -> None:
    ref = images[0] if which == "webhook" else images[1]
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    labels = json.loads(podman("image", "inspect", ref).stdout)[0]["Config"]["Labels"]
    print(ref, json.dumps(labels, indent=1))
    prefix = "org.opencontainers.image."
    oci = {k.removeprefix(prefix): v for k, v in labels.items() if k.startswith(prefix)}
    assert oci["title"] == ("bridge-migration" if which == "webhook" else "bridge-migration-sidecar")
    assert oci["version"] == version
    assert oci["revision"].removesuffix("-dirty") == head.stdout.strip()
    assert oci["licenses"] == "Apache-2.0"
    assert oci["source"].startswith("https://") and oci["description"]
    # What is in the venv: the lock's pins, the project, and nothing else (pip and setuptools left).
    script = "import importlib.metadata as m, json; print(json.dumps({d.name: d.version for d in m.distributions()}))"
    listing = in_image(ref, "python", "-c", script)
    assert listing.returncode == 0, listing.stderr
    installed = {canonicalize_name(name): Version(v) for name, v in json.loads(listing.stdout).items()}
    expected = {name: pin for name, (pin, _hashes) in lock_pins(which).items()}
    assert installed == {**expected, "kubevirt-bridge-migration": Version(version)}
    said = in_image(ref, "python", "-c", f"import {which}; print({which}.__version__)")
    assert said.stdout.strip() == version, said.stderr


@pytest.mark.parametrize("which", ["webhook", "sidecar"])
def test_the_image_has_no_build_tools_and_no_build_settings(images: tuple[str, str], which: str) -> None:
    ref = images[0] if which == "webhook" else images[1]
    config = json.loads(podman("image", "inspect", ref).stdout)[0]["Config"]
    assert not [e for e in config["Env"] if e.startswith("PIP_")], config["Env"]
    assert config["User"] == "107:107"
    result = in_image(ref, "sh", "-c", "command -v gcc; ls /opt/venv/bin; ls /var/cache/apt")
    assert "gcc" not in result.stdout
    assert "pip" not in result.stdout.split()
    assert ".bin" not in result.stdout


def test_each_image_carries_only_its_own_stack(image: str, sidecar_image: str) -> None:
    assert in_image(image, "python", "-c", "import libvirt").returncode != 0
    assert in_image(sidecar_image, "python", "-c", "import libvirt").returncode == 0
    assert in_image(sidecar_image, "python", "-c", "import fastapi").returncode != 0


def test_both_entry_points_start(image: str, sidecar_image: str) -> None:
    sidecar = in_image(sidecar_image, "python", "-m", "sidecar", "serve", "--help")
    assert sidecar.returncode == 0, sidecar.stderr
    assert "--libvirt-uri" in sidecar.stdout
    webhook = in_image(image, "python", "-m", "webhook", "--help")
    assert webhook.returncode == 0, webhook.stderr
    assert "--sidecar-image" in webhook.stdout


@pytest.fixture(scope="module")
def webhook(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The webhook container serving TLS with a certificate from a test CA, mounted read-only
    as the chart mounts its Secret; the client is this test process, outside the container."""
    tls = tmp_path_factory.mktemp("tls")
    ca = CertificateAuthority(tls)
    pair = ca.issue("tls", common_name="bridge-migration", hosts=("127.0.0.1", "localhost"))
    for path in (tls, pair.cert, pair.key):
        os.chown(path, container.IMAGE_UID, container.IMAGE_UID)  # a Secret volume with fsGroup
    port = free_port()
    argv = container.run_argv(
        image,
        ["python", "-m", "webhook", "--host", "127.0.0.1", "--port", str(port),
         "--tls-cert", "/tls/tls.crt", "--tls-key", "/tls/tls.key", "--sidecar-gate", "on"],
        name=f"bm-image-test-webhook-{port}",
        network="host",
        volumes=[f"{tls}:/tls:ro"],
    )  # fmt: skip
    process = LabProcess(name="webhook container", argv=argv, log_path=tls.parent / "webhook.log")
    base = f"https://127.0.0.1:{port}"

    def up() -> bool:
        if not process.alive():
            raise RuntimeError(process.log_tail(40))
        try:
            return httpx.get(f"{base}/healthz", verify=trust(ca.ca_path), timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=120, interval=0.5, what="the webhook container's /healthz")
        yield base, ca.ca_path
    finally:
        process.stop()
        container.remove(f"bm-image-test-webhook-{port}")


def test_the_webhook_answers_over_tls_from_outside_the_container(image: str, webhook: tuple[str, Path]) -> None:
    base, ca = webhook
    with httpx.Client(base_url=base, verify=trust(ca), timeout=30) as client:
        health = client.get("/healthz")
        print("GET /healthz ->", health.status_code, health.text)
        assert health.status_code == 200
        answer = client.post("/mutate/virtualmachineinstances", json=make_review(vmi(), uid="img-1")).json()
    response = answer["response"]
    assert (response["uid"], response["allowed"], response["patchType"]) == ("img-1", True, "JSONPatch")


def test_the_webhook_dev_mode_starts_with_a_tmpfs(image: str) -> None:
    """--dev writes a throw-away certificate under /tmp: with a read-only root it needs an
    emptyDir (here a tmpfs), and then serves /healthz."""
    port = free_port()
    name = f"bm-image-test-dev-{port}"
    argv = container.run_argv(
        image,
        ["python", "-m", "webhook", "--dev", "--host", "127.0.0.1", "--port", str(port), "--sidecar-gate", "on"],
        name=name,
        network="host",
        extra=["--tmpfs", "/tmp:rw,size=16m,mode=1777"],
    )
    log = Path(f"/tmp/{name}.log")
    process = LabProcess(name="webhook --dev container", argv=argv, log_path=log)

    def up() -> bool:
        if not process.alive():
            raise RuntimeError(process.log_tail(40))
        try:
            return httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=120, interval=0.5, what="the --dev webhook container's /healthz")
    finally:
        process.stop()
        container.remove(name)
        log.unlink(missing_ok=True)


@pytest.mark.lab
def test_the_sidecar_from_the_image_fixes_a_migrated_guest(sidecar_image: str) -> None:
    """The lab's migration with the fixer on the target node running from the image, in a
    container joined to the target pod's network namespace, as uid 107 without capabilities."""
    # KubeVirt v1.8: its DHCP server answers the target pod's MAC, so follow-pod reattaches
    # (the path this test wants the image to take; facts D2).
    with Lab(sidecar_image=sidecar_image, kubevirt_version="v1.8.0") as lab:
        lab.add_nodes("a", "b")
        vm: Vm = lab.start_vm(name="image", node="a", policy="follow-pod", sidecar=True)
        vm.console.wait("dhcp-ack", nic="eth0", timeout=180)
        since = time.time()
        lab.migrate(vm, to_node="b")
        target = vm.pod
        sidecar = target.sidecar
        assert sidecar is not None and sidecar.container_name is not None
        inspect = json.loads(podman("container", "inspect", sidecar.container_name).stdout)[0]
        assert inspect["Config"]["Image"] == sidecar_image
        assert inspect["HostConfig"]["ReadonlyRootfs"] is True
        assert inspect["HostConfig"]["NetworkMode"] == f"ns:/run/netns/{target.net.netns}"
        status = Path(f"/proc/{inspect['State']['Pid']}/status").read_text()
        assert f"Uid:\t{container.IMAGE_UID}\t" in status
        assert "CapEff:\t0000000000000000" in status

        def done() -> dict[str, Any] | None:
            records = [r for r in sidecar.fixups() if r["trigger"] in ("resumed-migrated", "postcopy-completed")]
            return records[-1] if records else None

        wait_for(done, timeout=120, interval=0.5, what="the container sidecar's automatic fixup")
        record = done()
        print("fixup record from the container sidecar:", json.dumps(record, indent=1))
        assert record is not None and record["result"] == "unverified", record
        [iface] = record["interfaces"]
        assert (iface["action"], iface["result"], iface["newMac"]) == ("reattach", "done", target.cni_mac)
        assert vm.domain_mac() == target.cni_mac
        wait_guest_nic(vm, mac=target.cni_mac, since=since)
        wait_for(
            lambda: (vm.guest_address() or "").startswith(target.ip + "/"),
            timeout=90,
            what="guest lease from the target pod",
        )
