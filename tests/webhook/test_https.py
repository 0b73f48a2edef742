"""The webhook process over real HTTPS, called the way kube-apiserver calls it."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
from cryptography import x509

from kubelab.reviews import make_review
from lab.process import wait_for
from tests.webhook.server import RunningWebhook, running_webhook
from tests.webhook.vmis import masquerade_vmi, vmi

IMAGE = "registry.example/bridge-migration:test"


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWebhook]:
    with running_webhook(
        tmp_path_factory.mktemp("webhook"), "--sidecar-image", IMAGE, "--sidecar-gate", "on"
    ) as running:
        yield running


def post(hook: RunningWebhook, path: str, body: Any) -> httpx.Response:
    with hook.client() as client:
        if isinstance(body, bytes):
            return client.post(path, content=body, headers={"content-type": "application/json"})
        return client.post(path, json=body)


def test_a_bridge_vmi_comes_back_with_a_patch_the_apiserver_can_apply(hook: RunningWebhook) -> None:
    obj = vmi()
    review = make_review(obj, uid="3f0a")
    resp = post(hook, "/mutate/virtualmachineinstances", review)
    assert resp.status_code == 200
    body = resp.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    answer = body["response"]
    assert answer["uid"] == "3f0a" and answer["allowed"] is True and answer["patchType"] == "JSONPatch"
    stored = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(answer["patch"])))
    assert stored["metadata"]["annotations"]["kubevirt.io/allow-pod-bridge-network-live-migration"] == "true"
    # The apiserver would call again after other mutators (reinvocationPolicy IfNeeded): no patch then.
    again = post(hook, "/mutate/virtualmachineinstances", make_review(stored))
    assert "patch" not in again.json()["response"]


def test_a_masquerade_vmi_is_allowed_without_a_patch(hook: RunningWebhook) -> None:
    answer = post(hook, "/mutate/virtualmachineinstances", make_review(masquerade_vmi())).json()["response"]
    assert answer["allowed"] is True and "patch" not in answer and "warnings" not in answer


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not an AdmissionReview"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "no 'request'"),
        ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}, "apiVersion"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}}, "uid"),
    ],
)
def test_malformed_requests_get_400_with_a_one_line_message(hook: RunningWebhook, body: Any, message: str) -> None:
    resp = post(hook, "/mutate/virtualmachineinstances", body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert message in error and "\n" not in error


def test_an_object_of_the_wrong_kind_gets_400(hook: RunningWebhook) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "demo"}, "spec": {}}
    resp = post(hook, "/mutate/virtualmachineinstances", make_review(pod))
    assert resp.status_code == 400 and "VirtualMachineInstance" in resp.json()["error"]


def test_annotations_that_are_not_strings_get_400(hook: RunningWebhook) -> None:
    obj = vmi()
    obj["metadata"]["annotations"] = {"bridge-migration.kubevirt.io/enabled": False}
    resp = post(hook, "/mutate/virtualmachineinstances", make_review(obj))
    assert resp.status_code == 400 and "not a string" in resp.json()["error"]


def test_a_body_over_3_mib_is_refused(hook: RunningWebhook) -> None:
    obj = vmi(annotations={"big": "x" * (3 * 1024 * 1024)})
    resp = post(hook, "/mutate/virtualmachineinstances", make_review(obj))
    assert resp.status_code == 413


def test_without_api_access_a_migration_is_let_through_with_a_warning(hook: RunningWebhook) -> None:
    mig = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "m", "namespace": "demo"},
        "spec": {"vmiName": "web-1"},
    }
    answer = post(hook, "/validate/virtualmachineinstancemigrations", make_review(mig)).json()["response"]
    assert answer["allowed"] is True
    assert "no Kubernetes API access" in answer["warnings"][0]


def test_health_readiness_and_metrics(hook: RunningWebhook) -> None:
    post(hook, "/mutate/virtualmachineinstances", make_review(vmi()))
    with hook.client() as client:
        assert client.get("/healthz").json() == {"ok": True}
        ready = client.get("/readyz").json()
        assert ready["ready"] is True
        assert ready["api"] == "not configured"  # this webhook runs without a kubeconfig
        text = client.get("/metrics").text
    assert (
        'bridge_migration_webhook_requests_total{endpoint="mutate/virtualmachineinstances",verdict="patched"}' in text
    )
    assert 'verdict="bad_request"' in text
    assert "bridge_migration_webhook_request_seconds_bucket" in text


def _client_ctx(hook: RunningWebhook, *, max_version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(hook.files.ca))
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = max_version
    ctx.set_ciphers(ciphers or "ALL:@SECLEVEL=0")
    return ctx


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_below_1_2_and_weak_ciphers_are_refused(hook: RunningWebhook) -> None:
    # The same permissive client succeeds once it may speak TLS 1.2 with a modern suite.
    assert httpx.get(hook.url + "/healthz", verify=_client_ctx(hook, max_version=ssl.TLSVersion.TLSv1_2)).is_success
    with pytest.raises(httpx.ConnectError):
        httpx.get(hook.url + "/healthz", verify=_client_ctx(hook, max_version=ssl.TLSVersion.TLSv1_1))
    weak = _client_ctx(hook, max_version=ssl.TLSVersion.TLSv1_2, ciphers="AES128-SHA:@SECLEVEL=0")
    with pytest.raises(httpx.ConnectError):
        httpx.get(hook.url + "/healthz", verify=weak)


def test_the_server_refuses_to_start_without_tls_files() -> None:
    proc = subprocess.run([sys.executable, "-m", "webhook"], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no TLS certificate" in proc.stderr


def served_serial(hook: RunningWebhook) -> int:
    host, port = "localhost", int(hook.url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=str(hook.files.ca))
    with socket.create_connection((host, port)) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def tls_reloads(hook: RunningWebhook, result: str) -> float:
    """The webhook's count of new certificate pairs seen on disk with that result, from /metrics."""
    with hook.client() as client:
        text = client.get("/metrics").text
    name = f'bridge_migration_webhook_tls_reloads_total{{result="{result}"}} '
    return next((float(line.removeprefix(name)) for line in text.splitlines() if line.startswith(name)), 0.0)


def test_certificate_rotation_under_load_loses_no_request_and_a_bad_file_keeps_the_old_cert(tmp_path: Path) -> None:
    # Files looked at every 0.5 s instead of 5: the same rotation, seen sooner.
    with running_webhook(
        tmp_path, "--sidecar-image", IMAGE, "--sidecar-gate", "on", "--tls-reload-seconds", "0.5"
    ) as hook:
        before = served_serial(hook)
        failures: list[str] = []
        done = threading.Event()
        count = 0

        def load() -> None:
            nonlocal count
            body = make_review(vmi())
            while not done.is_set():
                try:
                    # A new connection each time, so every request does a fresh handshake.
                    with hook.client() as client:
                        resp = client.post("/mutate/virtualmachineinstances", json=body)
                    if resp.status_code != 200:
                        failures.append(f"HTTP {resp.status_code}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                count += 1

        worker = threading.Thread(target=load)
        worker.start()
        try:
            time.sleep(1)
            hook.ca.issue(hosts=("localhost", "127.0.0.1"))  # same file names: a rotation on disk
            wait_for(lambda: served_serial(hook) != before, timeout=30, interval=0.5, what="the new certificate served")
            rotated = served_serial(hook)
            time.sleep(1)
        finally:
            done.set()
            worker.join()
        assert failures == [] and count > 0
        assert tls_reloads(hook, "reloaded") >= 1  # an operator sees the rotation in /metrics
        reloaded, rejected = tls_reloads(hook, "reloaded"), tls_reloads(hook, "rejected")

        hook.files.cert.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        wait_for(
            lambda: "rejected" in hook.log.read_text(), timeout=30, interval=0.5, what="the bad certificate noticed"
        )
        assert served_serial(hook) == rotated
        assert tls_reloads(hook, "rejected") > rejected  # and the refused pair
        assert tls_reloads(hook, "reloaded") == reloaded
        with hook.client() as client:
            assert client.post("/mutate/virtualmachineinstances", json=make_review(vmi())).status_code == 200


def test_an_update_of_a_vmi_is_never_retrofitted_whoever_sends_it(hook: RunningWebhook) -> None:
    """A running VMI (created before the install, or while the gate was off) that comes by in an
    UPDATE, e.g. virt-handler writing its status, gets no MAC, no allow annotation and no sidecar
    entry: its guest and its pod have none of them, and the next migration would strand it."""
    running = vmi()
    running["status"] = {"phase": "Running", "interfaces": [{"name": "default", "mac": "0a:58:0a:f4:00:07"}]}
    answer = post(hook, "/mutate/virtualmachineinstances", make_review(running, operation="UPDATE")).json()
    assert answer["response"]["allowed"] is True
    assert "patch" not in answer["response"]
    assert "warnings" not in answer["response"]


def test_an_update_that_lost_a_mac_we_pinned_gets_only_that_back(hook: RunningWebhook) -> None:
    """kubectl apply of the same manifest again replaces the interfaces list (JSON merge patch on
    a custom resource), dropping the pinned MAC: the UPDATE puts that MAC back, and nothing else."""
    obj = vmi()
    stored = jsonpatch.apply_patch(
        obj,
        json.loads(
            base64.b64decode(
                post(hook, "/mutate/virtualmachineinstances", make_review(obj)).json()["response"]["patch"]
            )
        ),
    )
    reapplied = json.loads(json.dumps(stored))
    reapplied["spec"]["domain"]["devices"]["interfaces"] = [{"name": "default", "bridge": {}}]
    review = make_review(reapplied, operation="UPDATE", old=stored)
    answer = post(hook, "/mutate/virtualmachineinstances", review).json()["response"]
    restored = jsonpatch.apply_patch(reapplied, json.loads(base64.b64decode(answer["patch"])))
    assert restored == stored
    assert "warnings" not in answer
