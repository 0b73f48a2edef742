"""Delivery inject in the lab: the fixer runs the way the webhook's injected container runs it,
``python -m sidecar serve --delivery inject``, and nothing plays virt-launcher's hook client: no
Info, no OnDefineDomain (so it never learns the VMI, only the pod's annotations and the domain
from libvirt), no Shutdown. Real libvirt and QEMU, a live migration into a new pod on another
node; the guest must get the target pod's address and answer pings, and the fixer in the source
pod must end on its own with exit code 0 once the domain left (docs/kubevirt-facts.md I5)."""

from __future__ import annotations

import pytest

from lab.cluster import Lab
from lab.process import wait_for
from lab.scenario import run_scenario

pytestmark = pytest.mark.lab


@pytest.mark.parametrize(("kind", "action"), [("same-mac", "link-refresh"), ("mac-change", "reattach")])
def test_the_injected_fixer_recovers_a_migrated_guest_with_no_hook_client(kind: str, action: str) -> None:
    result = run_scenario(kind, delivery="inject", say=print)  # type: ignore[arg-type]
    print(result.timelines())
    assert result.ping_before
    (outcome,) = result.migrations
    # Nobody called a hook: the fixer knows no VMI, only the pod's annotations and libvirt.
    assert outcome.sidecar_status is not None
    assert (outcome.sidecar_status["hookRegistered"], outcome.sidecar_status["vmiKnown"]) == (False, False)
    (fixup,) = [f for f in outcome.fixups if not f.get("dryRun")]
    assert fixup["result"] == "unverified"
    assert [(i["name"], i["action"]) for i in fixup["interfaces"]] == [("default", action)]
    assert outcome.dhcp_ack is not None, "the guest never renewed its lease in the target pod"
    assert outcome.dhcp_ack.fields["ip"] == f"{outcome.target_ip}/24"
    # The guest pings its server again, and answers the node's 10 ms echoes (the stun probe).
    assert outcome.first_reply is not None and outcome.first_reply.after(outcome.dhcp_ack)
    assert outcome.stun_ms is not None, "the guest never answered pings after the migration"
    assert result.final_guest_address == f"{outcome.target_ip}/24"
    # The source pod's fixer had no Shutdown call: it ended itself once the domain had left.
    assert outcome.source_sidecar_exit == 0


def test_the_injected_fixer_exits_0_when_its_pods_libvirt_goes_away() -> None:
    """The end of a VM in KubeVirt: virt-launcher exits and virtqemud with it; the fixer's
    connection is gone and it ends (within --end-grace, 2 s in the lab, plus a poll)."""
    with Lab(sidecar_delivery="inject") as lab:
        lab.add_nodes("a")
        vm = lab.start_vm(name="ending", node="a")
        sidecar = vm.pod.sidecar
        assert sidecar is not None
        wait_for(lambda: sidecar.status()["domainState"] == "running", timeout=60, interval=0.5, what="domain seen")
        assert list(sidecar.hook_dir.iterdir()) == []  # no hook socket: no hook server
        vm.pod.daemon.stop()  # the domain still runs: only the connection tells
        assert sidecar.wait_end(timeout=30) == 0
        assert "the libvirt connection is gone for 2 s: the VM has ended" in sidecar.process.log_tail(60)
