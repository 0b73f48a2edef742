"""Migration target pods whose fixer the pod patch completes fail closed inside the server too
(issue 25). The chart sends them to ``/mutate/migration-target-pods`` (``failurePolicy: Fail``),
which decides as ``/mutate/pods`` does, but where ``/mutate/pods`` admits a pod unchanged (right
for a VM's first pod) it refuses the target pod: when the server hits its own deadline or a bug,
and when the pod cannot be given a working fixer (no ``libvirt-runtime`` volume, a root launcher
for inject delivery, a container of our name that is not ours). Admitted, such a target pod would
run the guest without a fixer; refused, the migration stays Pending, virt-controller creates the
pod again with backoff and the guest runs on, on its source (docs/kubevirt-facts.md L8, L9). The
refusal is what virt-controller records on the VMI (a FailedCreate event), so it says all that.

Through the real process over HTTPS where the server's own behaviour is at stake (its deadline,
against a NAMED FAKE hung API server: tests/webhook/server.py), at the decider otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubelab.fake_virt_controller import render_launcher_pod
from kubelab.reviews import make_review
from tests.webhook.kubevirt_api import FakeKubeVirtApi, admit_once, patch_of
from tests.webhook.launcher_pods import IMAGE, launcher_pod
from tests.webhook.server import RunningWebhook, hung_apiserver, running_webhook
from webhook.config import WebhookConfig
from webhook.pod_mutation import mutate_launcher_pod

HINT = "cni.projectcalico.org/hwAddr"
CONFIG = WebhookConfig(sidecar_image=IMAGE, cni_mac_annotation=HINT)
PODS = "mutate/pods"
TARGETS = "mutate/migration-target-pods"
MACS = '{"default":"02:00:00:00:00:01"}'
MIGRATION = {"name": "move-it", "uid": "7f3e2a10-0000-4000-8000-000000000001"}
WAITS = (
    "the migration stays Pending and KubeVirt creates the target pod again with backoff, "
    "while the VM keeps running on its source"
)


def inject_vmi() -> dict[str, Any]:
    """A VMI as stored after our VMI webhook chose delivery inject (what virt-controller renders from)."""
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": "web-1",
            "namespace": "demo",
            "uid": "0b4c6f0e-0000-4000-8000-000000000001",
            "annotations": {
                "bridge-migration.kubevirt.io/delivery": "inject",
                "bridge-migration.kubevirt.io/macs": MACS,
            },
        },
        "spec": {
            "domain": {"devices": {"interfaces": [{"name": "default", "bridge": {}}]}},
            "networks": [{"name": "default", "pod": {}}],
        },
    }


def no_libvirt_runtime(*, target: bool) -> dict[str, Any]:
    """A launcher pod with our hook sidecar (delivery hook) but no ``libvirt-runtime`` volume."""
    pod = launcher_pod(target=target, annotations={"bridge-migration.kubevirt.io/macs": MACS})
    pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if v["name"] != "libvirt-runtime"]
    return pod


def root_launcher(*, target: bool) -> dict[str, Any]:
    """Delivery inject in a root launcher pod, as virt-controller renders one (facts L6, L11)."""
    return render_launcher_pod(inject_vmi(), non_root=False, migration=MIGRATION if target else None)


def name_clash(*, target: bool) -> dict[str, Any]:
    """Delivery inject, and a container named as ours that is not ours (another webhook's)."""
    pod = render_launcher_pod(inject_vmi(), migration=MIGRATION if target else None)
    pod["spec"]["initContainers"].append({"name": "bridge-migration", "image": "example.org/other:1"})
    return pod


NO_FIXER: dict[str, tuple[Callable[..., dict[str, Any]], str, str]] = {
    # pod, the reason the refusal gives, what the user is told to do
    "no-libvirt-runtime": (
        no_libvirt_runtime,
        "the pod has no libvirt-runtime volume, so the fixer could not reach libvirt",
        "look for another mutating webhook that removes it",
    ),
    "root-launcher": (
        root_launcher,
        "it is a root virt-launcher pod, where the injected fixer cannot reach libvirt",
        "A VMI's launcher pods stay root for its life: restart the VM with KubeVirt's Root feature gate off, "
        "or with the annotation bridge-migration.kubevirt.io/delivery: hook (or node) on its template.",
    ),
    "name-clash": (
        name_clash,
        "it already has a container named bridge-migration that is not ours, so ours cannot be added",
        "Find what adds a container of that name (another mutating webhook) and rename it",
    ),
}


# --- the decider: the same pod, admitted with a warning on /mutate/pods, refused on the target route


@pytest.mark.parametrize("case", sorted(NO_FIXER))
def test_a_target_pod_that_cannot_get_a_working_fixer_is_refused_saying_why_and_that_the_migration_waits(
    case: str,
) -> None:
    make, reason, advice = NO_FIXER[case]
    pod = make(target=True)
    decision = mutate_launcher_pod(pod, config=CONFIG, fail_closed=True)
    assert decision.allowed is False and decision.patch == []
    assert decision.code == 403
    message = decision.message or ""
    assert message.startswith("bridge-migration: migration target pod of VMI demo/web-1 refused: ")
    assert reason in message and WAITS in message and advice in message
    if case != "no-libvirt-runtime":  # the rendered pods carry virt-controller's migration name (facts L7)
        assert "`kubectl delete vmim move-it -n demo` cancels the migration" in message
    # The route all other launcher pods take still admits it as it is, with the warning as before.
    fail_open = mutate_launcher_pod(pod, config=CONFIG)
    assert fail_open.allowed is True and fail_open.patch == [] and len(fail_open.warnings) == 1


@pytest.mark.parametrize("case", sorted(NO_FIXER))
def test_a_first_pod_is_never_refused_even_on_the_target_route(case: str) -> None:
    """The chart sends only target pods there; a first pod that came anyway is a VM starting."""
    make, _, _ = NO_FIXER[case]
    decision = mutate_launcher_pod(make(target=False), config=CONFIG, fail_closed=True)
    assert decision.allowed is True and decision.patch == [] and len(decision.warnings) == 1


def test_a_target_pod_that_gets_its_fixer_is_patched_alike_on_both_routes() -> None:
    pod = render_launcher_pod(inject_vmi(), migration=MIGRATION)
    closed = mutate_launcher_pod(pod, config=CONFIG, kubevirt_version="v1.9.0", fail_closed=True)
    assert closed.allowed is True and closed.warnings == []
    assert closed.patch and closed.patch == mutate_launcher_pod(pod, config=CONFIG, kubevirt_version="v1.9.0").patch


def test_both_routes_answer_alike_through_the_app_when_the_fixer_is_there() -> None:
    api = FakeKubeVirtApi(gates=["Sidecar"])
    pod = render_launcher_pod(inject_vmi(), migration=MIGRATION)
    on_pods = asyncio.run(admit_once(CONFIG, api, PODS, pod))
    on_targets = asyncio.run(admit_once(CONFIG, api, TARGETS, pod))
    assert on_targets["allowed"] is True and patch_of(on_targets) == patch_of(on_pods) != []


# --- the real process over HTTPS ------------------------------------------------------------------


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWebhook]:
    args = ("--sidecar-image", IMAGE, "--sidecar-gate", "on", "--cni-mac-annotation", HINT)
    with running_webhook(tmp_path_factory.mktemp("webhook"), *args) as running:
        yield running


def answer(hook: RunningWebhook, path: str, pod: dict[str, Any]) -> dict[str, Any]:
    with hook.client() as client:
        resp = client.post(f"/{path}", json=make_review(pod))
    assert resp.status_code == 200, resp.text
    response: dict[str, Any] = resp.json()["response"]
    return response


@pytest.mark.parametrize("case", sorted(NO_FIXER))
def test_the_real_server_refuses_such_a_target_pod_on_the_target_route_only(hook: RunningWebhook, case: str) -> None:
    make, reason, _ = NO_FIXER[case]
    refused = answer(hook, TARGETS, make(target=True))
    assert refused["allowed"] is False and "patch" not in refused
    assert refused["status"]["code"] == 403
    assert reason in refused["status"]["message"] and WAITS in refused["status"]["message"]
    admitted = answer(hook, PODS, make(target=True))
    assert admitted["allowed"] is True and "patch" not in admitted and len(admitted["warnings"]) == 1


def test_the_real_server_patches_a_good_target_pod_on_the_target_route(hook: RunningWebhook) -> None:
    pod = launcher_pod(target=True, annotations={"bridge-migration.kubevirt.io/macs": MACS})
    patched = answer(hook, TARGETS, pod)
    assert patched["allowed"] is True and "warnings" not in patched
    ops = json.loads(base64.b64decode(patched["patch"]))
    assert {
        "op": "add",
        "path": "/metadata/annotations/cni.projectcalico.org~1hwAddr",
        "value": "02:00:00:00:00:01",
    } in ops
    assert ops == json.loads(base64.b64decode(answer(hook, PODS, pod)["patch"]))


def test_a_target_pod_the_server_cannot_answer_within_its_deadline_is_refused_not_admitted_unchanged(
    tmp_path: Path,
) -> None:
    """The VMI read hangs (a NAMED FAKE hung API server); the server's own deadline ends the
    review. ``/mutate/pods`` admits unchanged (fail-open: a VM starting never waits on us), the
    target route refuses: before, both admitted, and the target pod ran without its fixer."""
    pod = launcher_pod(target=True)  # no macs on the pod: the VMI is read, and that read hangs
    with hung_apiserver(tmp_path) as (kubeconfig, _):
        args = ("--kubeconfig", str(kubeconfig), "--api-timeout", "30", "--request-deadline", "1")
        with (
            running_webhook(tmp_path, "--sidecar-image", IMAGE, "--sidecar-gate", "on", *args) as real,
            real.client() as client,
        ):
            replies = {p: client.post(f"/{p}", json=make_review(pod)) for p in (PODS, TARGETS)}
    assert {p: r.status_code for p, r in replies.items()} == {PODS: 200, TARGETS: 200}
    on_pods, on_targets = (replies[p].json()["response"] for p in (PODS, TARGETS))
    assert on_pods["allowed"] is True and "patch" not in on_pods
    assert "no answer within 1.0s" in on_pods["warnings"][0]
    assert on_targets["allowed"] is False and "patch" not in on_targets
    assert on_targets["status"]["code"] == 504
    message = on_targets["status"]["message"]
    assert message.startswith("bridge-migration: no answer within 1.0s; migration target pod refused")
    assert WAITS in message


def test_the_target_route_is_in_the_openapi_document_as_a_pod_admission(hook: RunningWebhook) -> None:
    with hook.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    body = paths[f"/{TARGETS}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["request"]["properties"]["kind"]["properties"]["kind"]["enum"] == ["Pod"]
