"""A NAMED FAKE of kube-apiserver for the in-process webhook tests: an ``httpx.MockTransport``
serving one KubeVirt CR (feature gates and observed version as a test sets them) and the VMIs and
VMs a test puts in, recording every request. A real apiserver cannot be made to fail or to list a given
CR on demand in the fast lane; the kube tests use the real one (tests/kube)."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from kubelab.reviews import make_review
from webhook.app import create_app
from webhook.config import WebhookConfig
from webhook.kube import ApiTarget, KubeClient, SidecarGateCache
from webhook.orchestration import Runtime

KUBEVIRTS = "/apis/kubevirt.io/v1/kubevirts"


@dataclass
class FakeKubeVirtApi:
    """FAKE kube-apiserver: the KubeVirt CR list with ``gates``, the VMIs in ``vmis`` and the VMs in
    ``vms`` by ``namespace/name``; ``status`` other than 200 answers every request with it."""

    gates: Iterable[str] = ()
    version: str | None = "v1.9.0"
    vmis: dict[str, dict[str, Any]] = field(default_factory=dict)
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: int = 200
    paths: list[str] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.paths.append(path)
        if self.status != 200:
            return httpx.Response(self.status, json={"kind": "Status", "code": self.status})
        if path == KUBEVIRTS:
            cr: dict[str, Any] = {
                "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
                "spec": {"configuration": {"developerConfiguration": {"featureGates": list(self.gates)}}},
            }
            if self.version:
                cr["status"] = {"observedKubeVirtVersion": self.version}
            return httpx.Response(200, json={"items": [cr]})
        parts = path.split("/")
        if len(parts) == 8 and parts[6] == "virtualmachineinstances" and f"{parts[5]}/{parts[7]}" in self.vmis:
            return httpx.Response(200, json=self.vmis[f"{parts[5]}/{parts[7]}"])
        if len(parts) == 8 and parts[6] == "virtualmachines" and f"{parts[5]}/{parts[7]}" in self.vms:
            return httpx.Response(200, json=self.vms[f"{parts[5]}/{parts[7]}"])
        return httpx.Response(404, json={"kind": "Status", "code": 404})

    def vmi_reads(self) -> list[str]:
        return [p for p in self.paths if "/virtualmachineinstances/" in p]

    def vm_reads(self) -> list[str]:
        return [p for p in self.paths if "/virtualmachines/" in p]


def runtime(config: WebhookConfig, api: FakeKubeVirtApi) -> Runtime:
    """The webhook's runtime against ``api`` (its ``handle``, sync or async); the gates are read
    from it as the config says."""
    target = ApiTarget(server="https://apiserver.invalid", ssl_context=ssl.create_default_context())
    kube = KubeClient(target, timeout_s=2, transport=httpx.MockTransport(api.handle))
    forced = {"on": True, "off": False}.get(config.sidecar_gate)
    return Runtime(config=config, gate=SidecarGateCache(kube, forced=forced, refresh_s=30), kube=kube)


async def post_review(rt: Runtime, path: str, review: Mapping[str, Any]) -> dict[str, Any]:
    """POST ``review`` (any AdmissionReview) to ``path`` of the in-process app; its ``response``."""
    app = create_app(rt, background=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://webhook") as client:
        reply = await client.post(path, json=review)
    assert reply.status_code == 200, reply.text
    response: dict[str, Any] = reply.json()["response"]
    return response


async def admit(rt: Runtime, endpoint: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """POST one CREATE review of ``obj`` to ``endpoint`` of the in-process app; its ``response``."""
    return await post_review(rt, f"/{endpoint}", make_review(obj))


def patch_of(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch of a review's response, decoded; [] when there is none."""
    raw = response.get("patch")
    return json.loads(base64.b64decode(raw)) if raw else []


async def admit_once(
    config: WebhookConfig, api: FakeKubeVirtApi, endpoint: str, obj: Mapping[str, Any]
) -> dict[str, Any]:
    rt = runtime(config, api)
    try:
        return await admit(rt, endpoint, obj)
    finally:
        assert rt.kube is not None
        await rt.kube.aclose()
