"""Strict validation never blocks a drain: a migration KubeVirt created itself (node evacuation,
workload update; docs/kubevirt-facts.md K4) is admitted from the object alone, before and without
any read of the API, so an API that errors or hangs cannot refuse it (issue 25).

The API is the NAMED FAKE of tests/webhook/kubevirt_api.py: it fails or hangs on demand.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import httpx
import pytest

from tests.webhook.kubevirt_api import FakeKubeVirtApi, admit_once
from webhook.config import WebhookConfig

MIGRATIONS = "validate/virtualmachineinstancemigrations"
STRICT = WebhookConfig(dev=True, validation="strict")
EVACUATION = {"kubevirt.io/evacuationMigration": "node-1"}
WORKLOAD_UPDATE = {"kubevirt.io/workloadUpdateMigration": ""}


def migration(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": name, "namespace": "demo", "annotations": annotations},
        "spec": {"vmiName": "web-1"},
    }


KUBEVIRTS_OWN = [
    pytest.param(migration("kubevirt-evacuation-x7k2p", EVACUATION), id="evacuation"),
    pytest.param(migration("kubevirt-workload-update-q9z4m", WORKLOAD_UPDATE), id="workload-update"),
]


@pytest.mark.parametrize("obj", KUBEVIRTS_OWN)
@pytest.mark.parametrize("status", [500, 403])
def test_strict_mode_admits_kubevirts_own_migration_with_the_api_failing_and_reads_nothing(
    obj: dict[str, Any], status: int
) -> None:
    api = FakeKubeVirtApi(status=status)
    response = asyncio.run(admit_once(STRICT, api, MIGRATIONS, obj))
    assert response["allowed"] is True
    assert "status" not in response
    assert api.paths == []


@pytest.mark.parametrize("obj", KUBEVIRTS_OWN)
def test_strict_mode_admits_kubevirts_own_migration_with_the_api_hanging(obj: dict[str, Any]) -> None:
    """A hung apiserver: before, the read ran into the review's deadline and strict mode answered 504."""

    class Hung(FakeKubeVirtApi):
        async def handle(self, request: httpx.Request) -> httpx.Response:  # type: ignore[override]
            self.paths.append(request.url.path)
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    api = Hung()
    response = asyncio.run(admit_once(replace(STRICT, request_deadline_s=0.5), api, MIGRATIONS, obj))
    assert response["allowed"] is True
    assert api.paths == []


def test_a_users_migration_is_still_checked_and_strict_mode_still_refuses_when_the_api_fails() -> None:
    api = FakeKubeVirtApi(status=500)
    response = asyncio.run(admit_once(STRICT, api, MIGRATIONS, migration("move", {})))
    assert response["allowed"] is False
    assert response["status"]["code"] == 503
    assert api.vmi_reads() == ["/apis/kubevirt.io/v1/namespaces/demo/virtualmachineinstances/web-1"]


def test_a_name_like_kubevirts_without_its_annotation_is_a_users_migration() -> None:
    api = FakeKubeVirtApi(status=500)
    response = asyncio.run(admit_once(STRICT, api, MIGRATIONS, migration("kubevirt-evacuation-mine", {})))
    assert response["allowed"] is False
