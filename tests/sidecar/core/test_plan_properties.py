"""Properties of the plan over generated VMIs, domains and annotations."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge_migration_contract import MAC_POLICIES, managed_interfaces
from sidecar.core.plan import make_plan
from tests.examples import examples

macs = st.lists(st.integers(0, 255), min_size=5, max_size=5).map(lambda b: "02:" + ":".join(f"{x:02x}" for x in b))
bindings = st.sampled_from([{"bridge": {}}, {"macvtap": {}}, {"binding": {"name": "macvtap"}}, {"masquerade": {}}])
networks = st.sampled_from([{"pod": {}}, {"multus": {"networkName": "n"}}])


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(["default", "a", "b", "c"]), min_size=1, max_size=4, unique=True))
    ifaces = [{"name": n, **draw(bindings)} for n in names]
    nets = [{"name": n, **draw(networks)} for n in names]
    in_domain = [n for n in names if draw(st.booleans())]
    domain_macs = {n: draw(macs) for n in in_domain}
    xml = (
        "<domain><devices>"
        + "".join(
            f"<interface type='ethernet'><mac address='{domain_macs[n]}'/><alias name='ua-{n}'/></interface>"
            for n in in_domain
        )
        + "</devices></domain>"
    )
    return {
        "vmi": {"spec": {"domain": {"devices": {"interfaces": ifaces}}, "networks": nets}},
        "xml": xml,
        "domain_macs": domain_macs,
        "policy": draw(st.sampled_from(MAC_POLICIES)),
        "macs": {n: draw(macs) for n in names if draw(st.booleans())},
        "pod_macs": {link: draw(macs) for link in ("eth0", "net1", "net2") if draw(st.booleans())},
        "family": draw(st.sampled_from(["v1.5-v1.8", "v1.9+"])),
    }


@settings(max_examples=examples(300), deadline=None)
@given(cases())
def test_plans_cover_exactly_the_managed_interfaces_present_in_the_domain(case: dict[str, Any]) -> None:
    plans = make_plan(
        domain_xml=case["xml"],
        vmi=case["vmi"],
        policy=case["policy"],
        macs=case["macs"],
        pod_macs=case["pod_macs"],
        family=case["family"],
    )
    managed = {m["name"]: m["binding"] for m in managed_interfaces(case["vmi"]["spec"])}
    assert {p.name for p in plans} == set(managed) & set(case["domain_macs"])
    for plan in plans:
        assert plan.current_mac == case["domain_macs"][plan.name]
        assert (plan.action == "reattach") == (plan.expected_mac != plan.current_mac)
        if managed[plan.name] == "macvtap":
            # No DHCP from KubeVirt (facts V4): the MAC the target's device carries, read from the
            # pod, else the pinned one (V6); nothing to do when it is the guest's, or unknown.
            device = case["pod_macs"].get(plan.pod_link) or case["macs"].get(plan.name)
            assert plan.expected_mac == (device or plan.current_mac)
            assert plan.action in ("none", "reattach")
            continue
        # KubeVirt's DHCP rule: recorded/spec MAC, then (v1.9+) status or domain MAC, then pod MAC.
        if plan.name in case["macs"]:
            assert (plan.expected_mac, plan.mac_source) == (case["macs"][plan.name], "annotation")
        elif case["family"] == "v1.9+":
            assert (plan.action, plan.mac_source) == ("link-refresh", "domain")
        elif plan.pod_link in case["pod_macs"]:
            assert (plan.expected_mac, plan.mac_source) == (case["pod_macs"][plan.pod_link], "pod")
        else:
            assert (plan.action, plan.mac_source) == ("link-refresh", "domain")
