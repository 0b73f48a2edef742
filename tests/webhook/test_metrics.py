"""/metrics: each review is counted under the verdict an admin would give it.

patched: the object changed; warned: admitted unchanged with a warning; allowed: admitted unchanged,
nothing said; denied: refused. Read from the real /metrics text, as Prometheus scrapes it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kubelab.reviews import make_review
from tests.webhook.vmis import masquerade_vmi, vmi
from webhook.app import Runtime, create_app
from webhook.config import WebhookConfig
from webhook.kube import SidecarGateCache

VMIS = "mutate/virtualmachineinstances"
MIGRATIONS = "validate/virtualmachineinstancemigrations"


def scrape_after(rt: Runtime, reviews: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str], float]:
    """Post the reviews, then scrape /metrics: (endpoint, verdict) -> count."""

    async def go() -> str:
        transport = httpx.ASGITransport(app=create_app(rt, background=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for path, review in reviews:
                assert (await client.post(f"/{path}", json=review)).status_code == 200
            return (await client.get("/metrics")).text

    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(asyncio.run(go())):
        for sample in family.samples:
            if sample.name == "bridge_migration_webhook_requests_total":
                counts[(sample.labels["endpoint"], sample.labels["verdict"])] = sample.value
    return counts


def runtime(*, gate: bool, **config: Any) -> Runtime:
    return Runtime(config=WebhookConfig(dev=True, **config), gate=SidecarGateCache(None, forced=gate, refresh_s=30))


def test_a_vmi_left_unchanged_with_a_warning_is_counted_as_warned() -> None:
    # delivery hook with KubeVirt's Sidecar gate off: no change, and a warning saying why.
    counts = scrape_after(runtime(gate=False, delivery="hook"), [(VMIS, make_review(vmi()))])
    assert counts[(VMIS, "warned")] == 1
    assert counts.get((VMIS, "allowed"), 0) == 0


def test_patched_warned_and_allowed_vmis_are_each_counted_once() -> None:
    counts = scrape_after(
        runtime(gate=True),
        [
            (VMIS, make_review(vmi())),  # made migratable: patched
            (VMIS, make_review(masquerade_vmi())),  # none of our business: allowed
            (VMIS, make_review(vmi(annotations={"bridge-migration.kubevirt.io/delivery": "carrier-pigeon"}))),
        ],
    )
    assert counts[(VMIS, "patched")] == 1
    assert counts[(VMIS, "allowed")] == 1
    assert counts[(VMIS, "warned")] == 1


def test_a_migration_let_through_with_a_warning_is_warned_and_a_refused_one_denied() -> None:
    migration = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "move", "namespace": "demo"},
        "spec": {"vmiName": "web-1"},
    }
    # No API access: warn mode lets it through unchecked with a warning, strict mode refuses.
    warn = scrape_after(runtime(gate=True), [(MIGRATIONS, make_review(migration))])
    strict = scrape_after(runtime(gate=True, validation="strict"), [(MIGRATIONS, make_review(migration))])
    assert warn[(MIGRATIONS, "warned")] == 1
    assert strict[(MIGRATIONS, "denied")] == 1
