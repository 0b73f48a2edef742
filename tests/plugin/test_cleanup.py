"""The uninstall cleanup's decisions (kubectl_bridge_migration/cleanup.py), from objects the real
webhook mutation made: the patch it computes, the user's hook entries kept, --keep-allow's warning,
and a dry run that sends nothing but GETs."""

from __future__ import annotations

import copy
import json
import ssl
from typing import Any

import httpx
import jsonpatch
import pytest

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, DEFAULT_KEYS, HOOK_SIDECARS
from kubectl_bridge_migration import cleanup
from kubectl_bridge_migration.cleanup import LAST_APPLIED, Api, Options, plan, record_keys
from webhook.config import WebhookConfig
from webhook.kube import ApiTarget
from webhook.vm_mutation import mutate_vm
from webhook.vmi_mutation import mutate_vmi

IMAGE = "registry.example.org/bridge-migration-sidecar:0.1.0"
USER_HOOK = {"image": "registry.example.org/my-hook:1", "args": ["--version", "v1alpha2"]}
REMOVE = Options(DEFAULT_KEYS, remove_allow=True)
KEEP = Options(DEFAULT_KEYS, remove_allow=False)


def _spec() -> dict[str, Any]:
    return {
        "domain": {"devices": {"interfaces": [{"name": "default", "bridge": {}}]}},
        "networks": [{"name": "default", "pod": {}}],
    }


def admitted_vm(name: str = "web", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A VM as the webhook stores it (hook delivery, MAC pinned), through the real mutation."""
    vm: dict[str, Any] = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"template": {"metadata": {"annotations": dict(annotations or {})}, "spec": _spec()}},
    }
    decision = mutate_vm(vm, namespace="demo", config=WebhookConfig(sidecar_image=IMAGE), sidecar_gate_on=True)
    assert decision.patch
    out: dict[str, Any] = jsonpatch.apply_patch(vm, decision.patch)
    return out


def admitted_vmi(delivery: str = "auto", gate: bool = True) -> dict[str, Any]:
    vmi: dict[str, Any] = {"metadata": {"name": "web", "namespace": "demo"}, "spec": _spec()}
    config = WebhookConfig(sidecar_image=IMAGE, delivery=delivery)  # type: ignore[arg-type]
    decision = mutate_vmi(vmi, namespace="demo", config=config, sidecar_gate_on=gate)
    assert decision.patch
    out: dict[str, Any] = jsonpatch.apply_patch(vmi, decision.patch)
    return out


def template_annotations(vm: dict[str, Any]) -> dict[str, str]:
    return dict(vm["spec"]["template"]["metadata"].get("annotations") or {})


def test_a_vm_loses_our_hook_entry_records_and_allow_annotation_and_keeps_its_mac() -> None:
    vm = admitted_vm()
    mac = vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"]
    change = plan(vm, "VirtualMachine", REMOVE)
    assert change is not None
    after = jsonpatch.apply_patch(vm, change.ops)
    assert template_annotations(after) == {}
    assert after["spec"]["template"]["spec"] == vm["spec"]["template"]["spec"]  # the pinned MAC stays
    assert any(f"default={mac}" in line and "changes the guest's NIC" in line for line in change.lines)
    assert change.warnings == []
    # Every op is guarded by a test of the value read: a concurrent edit makes the patch fail, not clobber.
    removed = [op["path"] for op in change.ops if op["op"] == "remove"]
    tested = [op["path"] for op in change.ops if op["op"] == "test"]
    assert removed == tested
    assert "/spec/template/metadata/annotations/hooks.kubevirt.io~1hookSidecars" in removed


def test_the_users_own_hook_entries_are_kept_in_their_order() -> None:
    vm = admitted_vm(annotations={HOOK_SIDECARS: json.dumps([USER_HOOK])})
    assert len(json.loads(template_annotations(vm)[HOOK_SIDECARS])) == 2  # theirs and ours
    change = plan(vm, "VirtualMachine", REMOVE)
    assert change is not None
    after = template_annotations(jsonpatch.apply_patch(vm, change.ops))
    assert json.loads(after[HOOK_SIDECARS]) == [USER_HOOK]
    assert ALLOW_POD_BRIDGE_MIGRATION not in after
    assert not set(record_keys(DEFAULT_KEYS)) & set(after)


def test_an_entry_of_another_release_of_ours_is_recognised_by_its_command_or_image() -> None:
    older = {"image": "mirror.example/bridge-migration-sidecar:0.0.9", "command": ["python", "-m", "sidecar", "serve"]}
    by_image = {"image": "mirror.example/bridge-migration-sidecar@sha256:" + "a" * 64, "command": ["/bin/fix"]}
    ann = {HOOK_SIDECARS: json.dumps([USER_HOOK, older, by_image]), DEFAULT_KEYS.macs: "{}"}
    vm = {"metadata": {"name": "v", "namespace": "demo"}, "spec": {"template": {"metadata": {"annotations": ann}}}}
    only_command = plan(vm, "VirtualMachine", REMOVE)
    assert only_command is not None
    left = template_annotations(jsonpatch.apply_patch(vm, only_command.ops))
    assert json.loads(left[HOOK_SIDECARS]) == [USER_HOOK, by_image]
    with_image = plan(vm, "VirtualMachine", Options(DEFAULT_KEYS, True, "mirror.example/bridge-migration-sidecar"))
    assert with_image is not None
    left = template_annotations(jsonpatch.apply_patch(vm, with_image.ops))
    assert json.loads(left[HOOK_SIDECARS]) == [USER_HOOK]


def test_keep_allow_keeps_it_and_warns_for_that_vm() -> None:
    vm = admitted_vm()
    change = plan(vm, "VirtualMachine", KEEP)
    assert change is not None
    after = template_annotations(jsonpatch.apply_patch(vm, change.ops))
    assert after == {ALLOW_POD_BRIDGE_MIGRATION: "true"}
    assert len(change.warnings) == 1
    assert change.warnings[0].startswith(
        "WARNING: VM demo/web keeps kubevirt.io/allow-pod-bridge-network-live-migration"
    )
    assert "old IP address" in change.warnings[0]


def test_an_allow_annotation_the_user_applied_is_kept() -> None:
    vm = admitted_vm(annotations={ALLOW_POD_BRIDGE_MIGRATION: "true"})
    applied = {"spec": {"template": {"metadata": {"annotations": {ALLOW_POD_BRIDGE_MIGRATION: "true"}}}}}
    vm["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(applied)}
    change = plan(vm, "VirtualMachine", REMOVE)
    assert change is not None
    after = template_annotations(jsonpatch.apply_patch(vm, change.ops))
    assert after == {ALLOW_POD_BRIDGE_MIGRATION: "true"}
    assert any("the user wrote it" in line for line in change.lines)


def test_objects_without_anything_of_ours_get_no_change_even_with_an_allow_annotation() -> None:
    vm = {
        "metadata": {"name": "theirs", "namespace": "demo"},
        "spec": {"template": {"metadata": {"annotations": {ALLOW_POD_BRIDGE_MIGRATION: "true"}}}},
    }
    assert plan(vm, "VirtualMachine", REMOVE) is None
    assert plan({"metadata": {"name": "bare"}, "spec": {}}, "VirtualMachineInstance", REMOVE) is None


@pytest.mark.parametrize(("delivery", "gate"), [("auto", True), ("inject", False)])
def test_a_running_vmi_loses_them_from_its_metadata(delivery: str, gate: bool) -> None:
    vmi = admitted_vmi(delivery, gate)
    if delivery == "inject":
        assert template_ann_keys(vmi) >= {DEFAULT_KEYS.delivery, DEFAULT_KEYS.interfaces}
    change = plan(vmi, "VirtualMachineInstance", REMOVE)
    assert change is not None
    after = jsonpatch.apply_patch(vmi, change.ops)
    assert after["metadata"]["annotations"] == {}
    assert after["spec"] == vmi["spec"]
    assert any("launcher pod keeps" in line for line in change.lines)


def template_ann_keys(vmi: dict[str, Any]) -> set[str]:
    return set(vmi["metadata"]["annotations"])


def test_the_users_settings_are_left_alone() -> None:
    vm = admitted_vm(annotations={DEFAULT_KEYS.skip_multus_bridges: "*"})
    change = plan(vm, "VirtualMachine", REMOVE)
    assert change is not None
    assert template_annotations(jsonpatch.apply_patch(vm, change.ops)) == {DEFAULT_KEYS.skip_multus_bridges: "*"}


class FakeApi:
    """The API through an httpx.MockTransport: one VM and its VMI, every request recorded."""

    def __init__(self, vm: dict[str, Any], vmi: dict[str, Any]) -> None:
        self.objects = {"virtualmachines": vm, "virtualmachineinstances": vmi}
        self.requests: list[tuple[str, str]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        resource = request.url.path.rstrip("/").split("/")[-1]
        if request.method == "GET" and resource in self.objects:
            return httpx.Response(200, json={"items": [self.objects[resource]], "metadata": {}})
        if request.method == "PATCH":
            resource = request.url.path.split("/")[-2]
            self.objects[resource] = jsonpatch.apply_patch(self.objects[resource], json.loads(request.content))
            return httpx.Response(200, json=self.objects[resource])
        return httpx.Response(404)


def fake_api(fake: FakeApi) -> Api:
    api = Api(ApiTarget(server="https://kube.invalid", ssl_context=ssl.create_default_context()))
    api._client = httpx.Client(base_url="https://kube.invalid", transport=httpx.MockTransport(fake.handle))
    return api


def test_dry_run_prints_the_objects_and_changes_and_sends_no_patch() -> None:
    vm = admitted_vm()
    vmi = admitted_vmi()
    fake = FakeApi(copy.deepcopy(vm), copy.deepcopy(vmi))
    lines: list[str] = []
    assert cleanup.run(fake_api(fake), None, REMOVE, dry_run=True, out=lines.append) == 0
    assert {method for method, _ in fake.requests} == {"GET"}
    assert fake.objects == {"virtualmachines": vm, "virtualmachineinstances": vmi}
    assert lines[0].startswith("bridge-migration cleanup (dry run, nothing is changed): 2 object(s)")
    assert "VM demo/web:" in lines and "VMI demo/web:" in lines
    assert f"  - remove {DEFAULT_KEYS.macs}: " + template_annotations(vm)[DEFAULT_KEYS.macs] in lines


def test_a_real_run_patches_both_and_a_second_run_finds_nothing() -> None:
    fake = FakeApi(admitted_vm(), admitted_vmi())
    lines: list[str] = []
    assert cleanup.run(fake_api(fake), "demo", REMOVE, dry_run=False, out=lines.append) == 0
    assert lines[-1] == "done: 2 object(s) cleaned up, 0 failed"
    assert template_annotations(fake.objects["virtualmachines"]) == {}
    assert fake.objects["virtualmachineinstances"]["metadata"]["annotations"] == {}
    assert ("GET", "/apis/kubevirt.io/v1/namespaces/demo/virtualmachines") in fake.requests
    again: list[str] = []
    assert cleanup.run(fake_api(fake), "demo", REMOVE, dry_run=False, out=again.append) == 0
    assert again[0].endswith(": 0 object(s) in namespace demo carry what the add-on wrote")


def test_the_command_line_refuses_both_allow_flags() -> None:
    with pytest.raises(SystemExit) as exc:
        cleanup.main(["--remove-allow", "--keep-allow"])
    assert exc.value.code == 2
