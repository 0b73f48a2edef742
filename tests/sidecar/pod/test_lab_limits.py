"""The sidecar inside KubeVirt's limits for hook sidecars, in real cgroups, through a migration.

KubeVirt gives the hook sidecars of a Guaranteed or dedicated-CPU VMI requests = limits =
200m CPU and 64M memory, and the launcher pod never restarts a container: an OOM-killed
sidecar fails the VM. Here every lab sidecar runs in a memory cgroup limited to 64000000 bytes
and a cpu cgroup with a 20000/100000 us quota, both created for this test and removed after.
A follow-pod VM migrates (the heavier path: the NIC is detached and attached with the target
pod's MAC), the target's sidecar does the fixup on its own, then answers a burst of REST calls,
including oversized bodies. The kernel's own counters say whether the limit was ever hit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest

from lab.cgroups import KUBEVIRT_SIDECAR_MEMORY
from lab.cluster import Lab
from lab.paths import VENV_PYTHON
from lab.process import wait_for
from lab.shell import in_netns, run
from lab.sidecar import LISTEN
from sidecar.hookapi import hook_info_pb2, hook_info_pb2_grpc
from sidecar.pod.hook_server import SOCKET_NAME
from tests.sidecar.guest import wait_guest_nic

pytestmark = pytest.mark.lab

# Inside the pod: `count` rounds of every read endpoint plus a dry-run fixup, then one 20 MB
# body; prints the status codes seen, as JSON.
_BURST = """
import collections, json, sys, urllib.error, urllib.request
base, count = sys.argv[1], int(sys.argv[2])
seen = collections.Counter()
def call(method, path, body=None):
    req = urllib.request.Request(base + path, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read(); return r.status
    except urllib.error.HTTPError as e:
        e.read(); return e.code
dry_run = json.dumps({"dryRun": True}).encode()
for _ in range(count):
    for path in ("/healthz", "/v1/status", "/v1/fixups", "/metrics"):
        seen[f"GET {path} {call('GET', path)}"] += 1
    seen[f"POST dry-run {call('POST', '/v1/fixup', dry_run)}"] += 1
try:
    seen[f"POST 20MB {call('POST', '/v1/fixup', b'x' * 20_000_000)}"] += 1
except OSError as e:
    seen[f"POST 20MB {type(e).__name__}"] += 1
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    # v1.8: follow-pod reattaches there (the heavier path this test wants; facts D2).
    with Lab(sidecar_limits=True, kubevirt_version="v1.8.0") as the_lab:
        the_lab.add_nodes("a", "b")
        yield the_lab


def test_the_sidecar_does_its_job_within_64m_and_200m(lab: Lab) -> None:
    vm = lab.start_vm(name="capped", node="a", policy="follow-pod", sidecar=True)
    vm.console.wait("dhcp-ack", nic="eth0", timeout=180)
    since = time.time()
    lab.migrate(vm, to_node="b")
    target = vm.pod
    sidecar = target.sidecar
    assert sidecar is not None and sidecar.limits is not None
    assert sidecar.limits.pids() == [sidecar.process.pid]  # the python process itself is in the group

    def fixed() -> dict[str, object] | None:
        records = [r for r in sidecar.fixups() if r["trigger"] == "resumed-migrated"]
        return records[-1] if records else None

    wait_for(fixed, timeout=120, interval=0.5, what="automatic fixup under the limits")
    record = fixed()
    assert record is not None and record["result"] == "unverified", record
    [iface] = record["interfaces"]  # type: ignore[misc]
    assert (iface["action"], iface["result"], iface["newMac"]) == ("reattach", "done", target.cni_mac)
    wait_guest_nic(vm, mac=target.cni_mac, since=since)

    # The hook socket still answers Info (virt-launcher calls it on every start of the pod).
    with grpc.insecure_channel(f"unix://{sidecar.hook_dir / SOCKET_NAME}") as channel:
        info = hook_info_pb2_grpc.InfoStub(channel).Info(hook_info_pb2.InfoParams(), timeout=30)
    assert info.name == "bridge-migration"

    out = run(in_netns(target.net.netns, [str(VENV_PYTHON), "-c", _BURST, f"http://{LISTEN}", "100"]), timeout=600)
    seen = json.loads(out)
    assert seen["GET /v1/status 200"] == 100
    assert seen["POST dry-run 200"] == 100
    assert seen["POST 20MB 413"] == 1  # refused before it is read
    assert sidecar.process.alive()

    memory = sidecar.limits.memory_counters()
    cpu = sidecar.limits.cpu_counters()
    status = sidecar.proc_status()
    print(f"\ntarget sidecar: cgroup max usage {memory.max_usage_bytes / 2**20:.1f} MiB, VmHWM {status['VmHWM']}")
    assert memory.limit_bytes == KUBEVIRT_SIDECAR_MEMORY
    assert (cpu.quota_us, cpu.period_us) == (20_000, 100_000)
    assert memory.failcnt == 0, memory  # the 64M limit was never reached
    assert memory.oom_kills == 0, memory
    assert memory.max_usage_bytes < memory.limit_bytes

    # The source pod's sidecar ran under the same limits until KubeVirt deleted its pod.
    source = vm.pods[0].sidecar
    assert source is not None and source.final_memory is not None
    assert source.final_memory.failcnt == 0, source.final_memory
    assert vm.pods[0].sidecar_exit == 0  # it answered Shutdown and exited cleanly
