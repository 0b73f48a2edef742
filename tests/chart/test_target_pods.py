"""Migration target pods of VMIs whose fixer comes from the pod webhook have their own webhook
entry, and it fails closed (issue 25): a target pod created while the webhook is down would carry
no fixer (hook delivery: no libvirt-runtime mount for our sidecar; inject delivery: no container at
all) while the VMI's allow annotation lets KubeVirt migrate it anyway. Refused, the target pod is
retried by virt-controller and the guest stays, working, on its source (docs/kubevirt-facts.md
L8, L9).

The routing is CEL (``matchConditions``), evaluated by the API server; the kube test
(tests/kube/test_target_pods_fail_closed.py) shows what it does there. Here: the shape, the route
each entry calls (one the webhook serves for that kind), and the one
part CEL evaluates with RE2, the image pattern, checked against the webhook's own ``is_our_image``
with Python's ``re`` (the pattern is anchors, literals, classes and ``?``: the same in both).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.chart.conftest import Render, by_kind, one
from webhook.app import create_app
from webhook.config import WebhookConfig
from webhook.hook_sidecars import image_repository, is_our_image
from webhook.kube import SidecarGateCache
from webhook.orchestration import Runtime

TARGET_ENTRY = "migration-target-pods"
LAUNCHER_ENTRY = "virt-launcher-pods"
_IMAGE_PATTERN = re.compile(r"c\.image\.matches\(r'([^']*)'\)")


def _mutators(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {h["name"].split(".")[0]: h for h in one(objects, "MutatingWebhookConfiguration")["webhooks"]}


def _sidecar_image(objects: list[dict[str, Any]]) -> str:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    (image,) = [str(a).split("=", 1)[1] for a in container["args"] if str(a).startswith("--sidecar-image=")]
    return image


def _expression(hook: dict[str, Any]) -> str:
    (condition,) = hook["matchConditions"]
    return str(condition["expression"])


def test_target_pods_of_vmis_with_a_pod_fixer_go_to_an_entry_of_their_own_that_fails_closed(render: Render) -> None:
    hooks = _mutators(render())
    target, launcher = hooks[TARGET_ENTRY], hooks[LAUNCHER_ENTRY]
    assert target["failurePolicy"] == "Fail"
    assert launcher["failurePolicy"] == "Ignore"  # first pods (a VM starting) never wait on us
    assert target["objectSelector"] == {
        "matchLabels": {"kubevirt.io": "virt-launcher"},
        "matchExpressions": [{"key": "kubevirt.io/migrationJobUID", "operator": "Exists"}],
    }
    # The same server path, scope, rules and namespaces as the launcher entry: only who goes where differs.
    for field in ("rules", "namespaceSelector", "timeoutSeconds", "sideEffects", "admissionReviewVersions"):
        assert target[field] == launcher[field], field
    # The same Service; the route of its own fails closed inside the server too (a deadline, a
    # bug, a pod the fixer cannot work in: refused, where /mutate/pods admits unchanged).
    service, launcher_service = target["clientConfig"]["service"], launcher["clientConfig"]["service"]
    assert {**service, "path": None} == {**launcher_service, "path": None}
    assert service["path"] == "/mutate/migration-target-pods"
    assert launcher_service["path"] == "/mutate/pods"
    assert target["reinvocationPolicy"] == "Never"


def test_the_two_launcher_entries_split_launcher_pods_without_overlap_or_gap(render: Render) -> None:
    """Every launcher pod reaches exactly one entry: the launcher entry takes what the target entry
    does not, by the same condition negated (the API server calls both when both match)."""
    hooks = _mutators(render())
    fixer = _expression(hooks[TARGET_ENTRY])
    launcher = _expression(hooks[LAUNCHER_ENTRY])
    target_label = "has(object.metadata.labels) && 'kubevirt.io/migrationJobUID' in object.metadata.labels"
    assert launcher == f"!(({target_label}) && ({fixer}))"
    assert hooks[LAUNCHER_ENTRY]["objectSelector"] == {"matchLabels": {"kubevirt.io": "virt-launcher"}}


def test_the_condition_names_inject_delivery_but_not_node(render: Render) -> None:
    """Node delivery's fixer is the node agent (a DaemonSet called by virt-handler), not anything the
    pod patch adds: its target pods stay fail-open. Inject delivery's fixer is the container the pod
    patch adds: fail-closed. The record's key follows annotationPrefix."""
    fixer = _expression(_mutators(render())[TARGET_ENTRY])
    assert "object.metadata.annotations['bridge-migration.kubevirt.io/delivery'].trim() == 'inject'" in fixer
    assert "'node'" not in fixer
    other = _expression(_mutators(render({"annotationPrefix": "vmnet.example.org/"}))[TARGET_ENTRY])
    assert "object.metadata.annotations['vmnet.example.org/delivery']" in other


@pytest.mark.parametrize(
    "sidecar",
    [
        {},
        {"image": {"registry": "registry.example.org:5000/mirror", "repository": "bm/sidecar", "tag": "1.2.3"}},
        {"image": {"repository": "bm.sidecar", "digest": "sha256:" + "ab" * 32}},
    ],
)
def test_the_image_pattern_knows_our_sidecar_as_the_webhook_does(render: Render, sidecar: dict[str, Any]) -> None:
    objects = render({"sidecar": sidecar} if sidecar else {})
    (pattern,) = _IMAGE_PATTERN.findall(_expression(_mutators(objects)[TARGET_ENTRY]))
    ours = _sidecar_image(objects)
    repository = image_repository(ours)
    candidates = [
        ours,
        f"{repository}:0.0.9",  # an earlier release's entry (a VMI admitted before `helm upgrade`)
        f"{repository}@sha256:{'cd' * 32}",
        f"{repository}:0.0.9@sha256:{'cd' * 32}",
        repository,
        f"{repository}-other:1",
        f"{repository}x:1",
        f"other/{repository}:1",
        f"{repository}/sub:1",
        "quay.io/kubevirt/virt-launcher:v1.9.0",
        f"{repository.replace('.', 'X')}:1",  # a dot is a dot, not any character
    ]
    for image in candidates:
        assert (re.fullmatch(pattern, image) is not None) == is_our_image(image, ours), image
    assert re.fullmatch(pattern, ours)


def test_fail_closed_can_be_turned_off_for_availability(render: Render) -> None:
    hooks = _mutators(render({"webhook": {"failurePolicy": {"migrationTargetPods": "Ignore"}}}))
    assert hooks[TARGET_ENTRY]["failurePolicy"] == "Ignore"
    with pytest.raises(RuntimeError, match="values don't meet the specifications of the schema"):
        render({"webhook": {"failurePolicy": {"migrationTargetPods": "Sometimes"}}})


KIND_OF = {
    "pods": "Pod",
    "virtualmachineinstances": "VirtualMachineInstance",
    "virtualmachines": "VirtualMachine",
    "virtualmachineinstancemigrations": "VirtualMachineInstanceMigration",
}


def test_every_entry_calls_a_route_the_webhook_serves_for_the_kind_it_sends(render: Render) -> None:
    """The chart and the webhook ship in one release: each entry's path is an admission route of
    this webhook, and that route parses the kind the entry's rules send (its OpenAPI request body,
    webhook/openapi.py, names the kind the parser expects)."""
    app = create_app(Runtime(config=WebhookConfig(), gate=SidecarGateCache(None, forced=True, refresh_s=30)))
    paths = app.openapi()["paths"]
    objects = render()
    hooks = [h for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
             for config in by_kind(objects, kind) for h in config["webhooks"]]  # fmt: skip
    assert len(hooks) == 5
    for hook in hooks:
        path = hook["clientConfig"]["service"]["path"]
        assert path in paths, (hook["name"], path)
        request = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["request"]
        ((resource,),) = {tuple(rule["resources"]) for rule in hook["rules"]}
        assert request["properties"]["kind"]["properties"]["kind"]["enum"] == [KIND_OF[resource]], hook["name"]
