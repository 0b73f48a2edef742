"""The migration validator: warn about (or refuse) moves that would strand a guest."""

from __future__ import annotations

import json
from typing import Any

from bridge_migration_contract import HOOK_SIDECARS, AnnotationKeys
from tests.webhook.vmis import masquerade_vmi, vmi
from webhook.config import WebhookConfig
from webhook.migration_validation import KUBEVIRT_INITIATED, validate_migration

IMAGE = "registry.example/bridge-migration:test"
WARN = WebhookConfig(sidecar_image=IMAGE)
STRICT = WebhookConfig(sidecar_image=IMAGE, validation="strict")


def migration(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "mig-1", "namespace": "demo", "annotations": annotations or {}},
        "spec": {"vmiName": "web-1"},
    }


WITH_SIDECAR = vmi(annotations={HOOK_SIDECARS: json.dumps([{"image": IMAGE}])})


def test_a_vmi_with_our_sidecar_migrates_silently() -> None:
    for config in (WARN, STRICT):
        decision = validate_migration(migration(), WITH_SIDECAR, namespace="demo", config=config)
        assert decision.allowed and decision.warnings == []


def test_a_masquerade_vmi_is_none_of_our_business() -> None:
    decision = validate_migration(migration(), masquerade_vmi(), namespace="demo", config=STRICT)
    assert decision.allowed and decision.warnings == []


def test_a_bridge_vmi_without_our_sidecar_is_warned_about_in_warn_mode() -> None:
    decision = validate_migration(migration(), vmi(), namespace="demo", config=WARN)
    assert decision.allowed
    (warning,) = decision.warnings
    assert "demo/web-1" in warning and "stale IP" in warning and "Restart the VM" in warning


def test_the_same_migration_is_refused_in_strict_mode_with_the_reason() -> None:
    decision = validate_migration(migration(), vmi(), namespace="demo", config=STRICT)
    assert not decision.allowed
    assert decision.message is not None and "no bridge-migration sidecar" in decision.message


def test_strict_mode_can_be_overridden_per_migration() -> None:
    mig = migration({"bridge-migration.kubevirt.io/force": "true"})
    decision = validate_migration(mig, vmi(), namespace="demo", config=STRICT)
    assert decision.allowed and decision.warnings


def test_an_opted_out_vmi_migrates_with_a_reminder() -> None:
    opted_out = vmi(annotations={"bridge-migration.kubevirt.io/enabled": "false"})
    decision = validate_migration(migration(), opted_out, namespace="demo", config=STRICT)
    assert decision.allowed and "opted out" in decision.warnings[0]


def test_kubevirts_own_migrations_are_never_refused_even_in_strict_mode() -> None:
    strict = WebhookConfig(sidecar_image="registry.example/bridge-migration:test", validation="strict")
    old_vmi = {
        "metadata": {"name": "web-1", "namespace": "demo"},
        "spec": {
            "domain": {"devices": {"interfaces": [{"name": "default", "bridge": {}}]}},
            "networks": [{"name": "default", "pod": {}}],
        },
    }
    for key in KUBEVIRT_INITIATED:
        mig = {"metadata": {"name": "m", "annotations": {key: ""}}, "spec": {"vmiName": "web-1"}}
        decision = validate_migration(mig, old_vmi, namespace="demo", config=strict)
        assert decision.allowed and "Admitted even in strict mode" in decision.warnings[0]
    plain = {"metadata": {"name": "m"}, "spec": {"vmiName": "web-1"}}
    assert not validate_migration(plain, old_vmi, namespace="demo", config=strict).allowed


def test_a_malformed_hook_sidecars_annotation_naming_our_image_is_not_our_sidecar() -> None:
    # Whatever the annotation mentions, virt-launcher cannot start a sidecar from it: the guest
    # would keep its stale IP, so strict mode refuses the move as for a VMI without one.
    ours = {"image": IMAGE}
    for raw in (
        json.dumps([ours])[:-1],  # cut short: not JSON
        json.dumps(ours),  # an object, not a list
        json.dumps([IMAGE]),  # a list of strings
        json.dumps([ours, "extra"]),  # our entry beside something that is no object
    ):
        broken = vmi(annotations={HOOK_SIDECARS: raw})
        decision = validate_migration(migration(), broken, namespace="demo", config=STRICT)
        assert not decision.allowed, raw
        assert decision.message is not None and "no bridge-migration sidecar" in decision.message


def test_the_warning_names_every_interface_that_would_keep_its_old_ip() -> None:
    two = vmi(
        interfaces=[{"name": "default", "bridge": {}}, {"name": "lan", "bridge": {}}],
        networks=[{"name": "default", "pod": {}}, {"name": "lan", "multus": {"networkName": "demo/lan"}}],
    )
    (warning,) = validate_migration(migration(), two, namespace="demo", config=WARN).warnings
    assert "VMI demo/web-1 has bridge/macvtap interfaces (default, lan) but no bridge-migration sidecar" in warning
    opted_out = {
        **two,
        "metadata": {**two["metadata"], "annotations": {"bridge-migration.kubevirt.io/enabled": "false"}},
    }
    (reminder,) = validate_migration(migration(), opted_out, namespace="demo", config=STRICT).warnings
    assert "interfaces default, lan will keep their old IP" in reminder


def test_a_prefixed_opt_out_of_the_only_bridge_is_read_under_that_prefix() -> None:
    config = WebhookConfig(sidecar_image=IMAGE, validation="strict", keys=AnnotationKeys("acme.io/"))
    skipped = vmi(
        interfaces=[{"name": "default", "masquerade": {}}, {"name": "lan", "bridge": {}}],
        networks=[{"name": "default", "pod": {}}, {"name": "lan", "multus": {"networkName": "demo/lan"}}],
        annotations={"acme.io/skip-multus-bridges": "lan"},
    )
    decision = validate_migration(migration(), skipped, namespace="demo", config=config)
    assert decision.allowed and decision.warnings == []


def test_the_refusal_tells_the_user_both_ways_out_in_one_sentence() -> None:
    # Found by mutation testing (docs/testing.md, "Mutation testing"): the advice, word for word.
    decision = validate_migration(migration(), vmi(), namespace="demo", config=STRICT)
    assert decision.message is not None
    assert decision.message.endswith(
        "so its guest would keep a stale IP after the move. Restart the VM so the webhook can add the sidecar, "
        "or annotate the migration bridge-migration.kubevirt.io/force=true to migrate anyway."
    )
