"""A bug inside a decision keeps each endpoint's stance and is counted as an error.

FAKES (named as such): a Sidecar-gate reader and a Kubernetes client that raise a plain bug
(`RuntimeError`), which no real dependency is meant to; they stand for a defect in our code.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from kubelab.reviews import make_review
from tests.webhook.launcher_pods import IMAGE, launcher_pod
from tests.webhook.vmis import vmi
from webhook.app import create_app
from webhook.config import WebhookConfig
from webhook.kube import SidecarGateCache
from webhook.metrics import WebhookMetrics
from webhook.orchestration import Runtime


class BuggyGate(SidecarGateCache):
    async def current(self) -> bool | None:
        raise RuntimeError("fake bug in the gate reader")


class BuggyKube:
    async def get_vmi(self, namespace: str, name: str) -> dict[str, Any]:
        raise RuntimeError("fake bug in the API client")

    async def aclose(self) -> None:
        return None


def migration() -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "move", "namespace": "demo"},
        "spec": {"vmiName": "web-1"},
    }


def post(rt: Runtime, path: str, review: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async def go() -> tuple[int, dict[str, Any]]:
        transport = httpx.ASGITransport(app=create_app(rt, background=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answer = await client.post(path, json=review)
            return answer.status_code, answer.json()

    return asyncio.run(go())


def errors(metrics: WebhookMetrics, endpoint: str) -> float:
    return (
        metrics.registry.get_sample_value(
            "bridge_migration_webhook_requests_total", {"endpoint": endpoint, "verdict": "error"}
        )
        or 0.0
    )


def test_a_bug_in_the_vmi_mutator_admits_the_vmi_unchanged_and_counts_an_error() -> None:
    metrics = WebhookMetrics()
    rt = Runtime(config=WebhookConfig(), gate=BuggyGate(None, forced=None, refresh_s=30), metrics=metrics)
    status, body = post(rt, "/mutate/virtualmachineinstances", make_review(vmi()))
    assert status == 200
    assert body["response"]["allowed"] is True and "patch" not in body["response"]
    assert "internal error, object admitted unchanged" in body["response"]["warnings"][0]
    assert errors(metrics, "mutate/virtualmachineinstances") == 1


def test_a_bug_in_strict_migration_validation_refuses_and_counts_an_error() -> None:
    metrics = WebhookMetrics()
    rt = Runtime(
        config=WebhookConfig(validation="strict"),
        gate=SidecarGateCache(None, forced=True, refresh_s=30),
        kube=BuggyKube(),  # type: ignore[arg-type]
        metrics=metrics,
    )
    status, body = post(rt, "/validate/virtualmachineinstancemigrations", make_review(migration()))
    assert status == 200  # an AdmissionReview answer, not an HTTP error
    assert body["response"]["allowed"] is False
    assert "refused (strict validation)" in body["response"]["status"]["message"]
    assert errors(metrics, "validate/virtualmachineinstancemigrations") == 1


def test_a_bug_in_warn_mode_validation_admits_with_a_warning() -> None:
    rt = Runtime(
        config=WebhookConfig(validation="warn"),
        gate=SidecarGateCache(None, forced=True, refresh_s=30),
        kube=BuggyKube(),  # type: ignore[arg-type]
    )
    _status, body = post(rt, "/validate/virtualmachineinstancemigrations", make_review(migration()))
    assert body["response"]["allowed"] is True
    assert "internal error" in body["response"]["warnings"][0]


def test_a_bug_on_the_target_pod_route_refuses_the_target_pod_and_counts_an_error() -> None:
    """``/mutate/migration-target-pods`` fails closed inside the server as its chart entry does
    outside it: admitted unchanged, a target pod would run the guest without a working fixer.
    ``/mutate/pods`` keeps admitting the same pod unchanged (first pods: a VM start never waits)."""
    metrics = WebhookMetrics()
    rt = Runtime(
        config=WebhookConfig(sidecar_image=IMAGE),
        gate=SidecarGateCache(None, forced=True, refresh_s=30),
        kube=BuggyKube(),  # type: ignore[arg-type]
        metrics=metrics,
    )
    review = make_review(launcher_pod(target=True))  # no macs on the pod: the VMI is read, and that raises
    _status, body = post(rt, "/mutate/migration-target-pods", review)
    assert body["response"]["allowed"] is False and "patch" not in body["response"]
    assert body["response"]["status"]["code"] == 500
    message = body["response"]["status"]["message"]
    assert message.startswith("bridge-migration: internal error; migration target pod refused")
    assert "the migration stays Pending" in message and "keeps running on its source" in message
    assert errors(metrics, "mutate/migration-target-pods") == 1

    _status, body = post(rt, "/mutate/pods", review)
    assert body["response"]["allowed"] is True and "patch" not in body["response"]
    assert "internal error, object admitted unchanged" in body["response"]["warnings"][0]
    assert errors(metrics, "mutate/pods") == 1
