"""Post-copy: the sidecar waits for the migration to complete before it touches the NIC.

libvirt emits RESUMED/POSTCOPY on the destination as soon as the guest runs there (its
memory still partly on the source), and RESUMED/MIGRATED once post-copy has finished; the
fixup must come after the latter.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from lab.cluster import MIGRATION_FLAGS, Lab, Vm
from lab.process import wait_for

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    # A root launcher's daemon: post-copy needs userfaultfd for kernel faults, which an
    # unprivileged QEMU only gets with vm.unprivileged_userfaultfd=1 (0 on this machine, and the
    # tests do not change host sysctls). How KubeVirt's non-root post-copy gets it: unverified
    # (docs/kubevirt-facts.md L5).
    with Lab(libvirt_mode="system") as the_lab:
        the_lab.add_nodes("a", "b")
        yield the_lab


def migrate_postcopy(lab: Lab, vm: Vm, *, to_node: str) -> Any:
    """The lab's migration, but slow pre-copy (1 MiB/s) switched to post-copy at once.

    An idle guest's memory is mostly zero pages, which cost almost nothing on the wire, so a
    pre-copy left running for a while can complete before the switch; hence no delay."""
    source = vm.pod
    target = lab.create_target_pod(vm, node=to_node)
    lab.start_sidecar(target, namespace=vm.namespace, vmi=vm.name, policy=vm.policy)
    params = {
        libvirt.VIR_MIGRATE_PARAM_URI: f"unix://{lab.run_dir}/postcopy-{target.name}.sock",
        libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 1,
    }
    dom = source.conn.lookupByName(vm.domain_name)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            dom.migrateToURI3(target.daemon.uri, params, MIGRATION_FLAGS | libvirt.VIR_MIGRATE_POSTCOPY)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(
        lambda: dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_UNBOUNDED, timeout=60, interval=0.02, what="migration job"
    )

    def switched() -> bool:
        # Refused until QEMU's migration has really started; ask again until it accepts.
        try:
            dom.migrateStartPostCopy(0)
        except libvirt.libvirtError:
            return False
        return True

    wait_for(switched, timeout=60, interval=0.02, what="switch to post-copy")
    thread.join(300)
    assert not errors, errors
    vm.pod = target
    vm.pods.append(target)
    lab.delete_pod(source)
    return target


def test_a_postcopy_migration_is_fixed_after_it_completes(lab: Lab) -> None:
    vm = lab.start_vm(name="postcopy", node="a", policy="pin", sidecar=True)
    vm.console.wait("nic-up", nic="eth0", timeout=180)
    target = migrate_postcopy(lab, vm, to_node="b")
    events = target.lifecycle()
    resumed_postcopy = events.wait("RESUMED", "POSTCOPY", timeout=60)
    resumed_migrated = events.wait("RESUMED", "MIGRATED", timeout=60)
    assert resumed_postcopy.at <= resumed_migrated.at
    assert target.sidecar is not None

    def fixups() -> list[dict[str, Any]]:
        assert target.sidecar is not None
        return [r for r in target.sidecar.fixups() if r["trigger"] != "manual"]

    wait_for(fixups, timeout=120, interval=0.5, what="automatic fixup")
    records = fixups()
    assert len(records) == 1, (records, [str(e) for e in events.events()])
    [record] = records
    assert record["trigger"] == "postcopy-completed", (record, [str(e) for e in events.events()])
    assert record["result"] == "unverified", record
    assert record["interfaces"][0]["action"] == "link-refresh"  # pin: same MAC
    assert record["started"] >= resumed_migrated.at - 0.5  # not at RESUMED/POSTCOPY
