"""Properties over generated VMIs and bodies: patches always apply, re-admission is a no-op,
and no input makes the webhook answer with a 5xx."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import replace
from typing import Any

import httpx
import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge_migration_contract import DeliveryChoice
from kubelab.reviews import make_review
from tests.examples import examples
from webhook.app import create_app
from webhook.config import WebhookConfig
from webhook.kube import SidecarGateCache
from webhook.orchestration import Runtime
from webhook.vmi_mutation import mutate_vmi

IMAGE = "registry.example/bridge-migration:test"
CONFIG = WebhookConfig(sidecar_image=IMAGE)

names = st.sampled_from(["default", "lan", "a/b", "x~y", "eth-1"])
bindings = st.sampled_from(
    [{"bridge": {}}, {"macvtap": {}}, {"masquerade": {}}, {"binding": {"name": "macvtap"}}, {"sriov": {}}]
)
macs = st.one_of(st.none(), st.sampled_from(["02:00:00:00:00:01", "02-AB-00-00-00-02", "bogus", ""]))


@st.composite
def interfaces(draw: st.DrawFn) -> dict[str, Any]:
    iface: dict[str, Any] = {"name": draw(names), **draw(bindings)}
    mac = draw(macs)
    if mac is not None:
        iface["macAddress"] = mac
    return iface


annotation_values = {
    "bridge-migration.kubevirt.io/enabled": st.sampled_from(["true", "false", "False", "junk"]),
    "bridge-migration.kubevirt.io/mac-policy": st.sampled_from(["pin", "keep", "follow-pod", "??"]),
    "bridge-migration.kubevirt.io/macs": st.sampled_from(
        ['{"default":"02:00:00:00:00:09"}', "{}", "[", '{"lan":"zz"}', '{"a/b":"02:00:00:00:00:0a"}']
    ),
    "hooks.kubevirt.io/hookSidecars": st.sampled_from(
        ["[]", '[{"image":"x"}]', f'[{{"image":"{IMAGE}"}}]', "{", '["s"]', ""]
    ),
    "bridge-migration.kubevirt.io/delivery": st.sampled_from(["hook", "inject", "node", " inject", "bogus"]),
    "kubevirt.io/allow-pod-bridge-network-live-migration": st.just(""),
    "other/thing": st.text(max_size=5),
}


@st.composite
def vmis(draw: st.DrawFn) -> dict[str, Any]:
    ifaces = draw(st.lists(interfaces(), max_size=5))
    nets = [
        {"name": i["name"], **draw(st.sampled_from([{"pod": {}}, {"multus": {"networkName": "n"}}]))}
        for i in ifaces
        if draw(st.booleans())
    ]
    metadata: dict[str, Any] = {"name": draw(st.sampled_from(["vm", "web-1", ""])), "namespace": "ns"}
    keys = draw(st.sets(st.sampled_from(sorted(annotation_values))))
    if keys or draw(st.booleans()):
        metadata["annotations"] = {k: draw(annotation_values[k]) for k in keys}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": metadata,
        "spec": {"domain": {"devices": {"interfaces": ifaces}}, "networks": nets},
    }


@settings(max_examples=examples(400), deadline=None)
@given(vmis(), st.sampled_from([True, False, None]), st.sampled_from(["auto", "hook", "inject", "node"]))
def test_every_patch_applies_and_readmission_is_a_no_op(
    vmi: dict[str, Any], gate: bool | None, delivery: DeliveryChoice
) -> None:
    config = replace(CONFIG, delivery=delivery)
    decision = mutate_vmi(vmi, namespace="ns", config=config, sidecar_gate_on=gate, fallback_name="uid-1")
    patched = jsonpatch.apply_patch(vmi, decision.patch)
    json.dumps(patched)  # still plain JSON
    again = mutate_vmi(patched, namespace="ns", config=config, sidecar_gate_on=gate, fallback_name="uid-2")
    assert again.patch == []
    before = vmi["metadata"].get("annotations") or {}
    after = patched["metadata"].get("annotations") or {}
    assert all(isinstance(v, str) for v in after.values())
    sidecars_raw = after.get("hooks.kubevirt.io/hookSidecars")
    if not decision.patch:
        return
    # Migratable only with exactly one fixer: our hook entry, or the inject/node record.
    recorded = (after.get("bridge-migration.kubevirt.io/delivery") or "").strip()
    if recorded in ("inject", "node"):
        assert sidecars_raw == before.get("hooks.kubevirt.io/hookSidecars")
    else:
        assert sidecars_raw is not None
        assert [e.get("image") for e in json.loads(sidecars_raw)].count(IMAGE) == 1


def _app() -> httpx.AsyncClient:
    rt = Runtime(config=CONFIG, gate=SidecarGateCache(None, forced=True, refresh_s=30))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt, background=False)), base_url="http://t")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


BREAKABLE = [
    ("request",),
    ("request", "uid"),
    ("request", "object"),
    ("request", "kind"),
    ("request", "object", "metadata"),
    ("request", "object", "metadata", "annotations"),
]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=64))
    if choice == 1:
        return json.dumps(draw(json_values)).encode()
    review = make_review(draw(vmis()))
    # Break one part of an otherwise valid review.
    path = draw(st.sampled_from(BREAKABLE))
    node: Any = review
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = draw(json_values)
    return json.dumps(review).encode()


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_no_body_makes_the_webhook_fail_with_a_5xx(body: bytes) -> None:
    async def go() -> httpx.Response:
        async with _app() as client:
            return await client.post("/mutate/virtualmachineinstances", content=body)

    resp = asyncio.run(go())
    assert resp.status_code in (200, 400), resp.text
    if resp.status_code == 200:
        answer = resp.json()["response"]
        if "patch" in answer:
            # A patch returned for a broken-but-accepted object must still apply to it.
            obj = json.loads(body)["request"]["object"]
            jsonpatch.apply_patch(obj, json.loads(base64.b64decode(answer["patch"])))
    else:
        assert resp.json()["error"]
