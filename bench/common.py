"""Shared bits of the benchmarks: where results go, machine facts, request bodies."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Final

from bridge_migration_contract import NicRefresh

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
# NetworkManager ignores the default link refresh's short flap: its guest is measured as a user
# would run it, with the VMI annotation docs/sidecar.md tells them to set (bench/migration_gap.py,
# the gap table).
NIC_REFRESH_BY_GUEST: Final[dict[str, NicRefresh]] = {"debian-nm": "reattach"}
PLOTS = ROOT / "plots"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def write_result(name: str, data: dict[str, Any], out: Path = RESULTS) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    return path


def vmi_with_interfaces(n: int) -> dict[str, Any]:
    """A realistic VM-made VMI with ``n`` bridge/macvtap interfaces on pod and Multus networks."""
    ifaces: list[dict[str, Any]] = [{"name": "default", "bridge": {}}]
    nets: list[dict[str, Any]] = [{"name": "default", "pod": {}}]
    for i in range(1, n):
        ifaces.append({"name": f"net{i}", "binding": {"name": "macvtap"}})
        nets.append({"name": f"net{i}", "multus": {"networkName": f"lan-{i}"}})
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": "web-1",
            "namespace": "prod",
            "labels": {"kubevirt.io/vm": "web-1", "app": "web"},
            "annotations": {"kubevirt.io/vm-generation": "1", "kubevirt.io/latest-observed-api-version": "v1"},
            "ownerReferences": [
                {
                    "apiVersion": "kubevirt.io/v1",
                    "kind": "VirtualMachine",
                    "name": "web-1",
                    "uid": "5e0c",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "domain": {
                "cpu": {"cores": 2, "model": "host-model"},
                "memory": {"guest": "2Gi"},
                "devices": {
                    "disks": [
                        {"name": "root", "disk": {"bus": "virtio"}},
                        {"name": "cloudinit", "disk": {"bus": "virtio"}},
                    ],
                    "interfaces": ifaces,
                },
                "machine": {"type": "q35"},
                "resources": {"requests": {"memory": "2Gi"}},
            },
            "networks": nets,
            "volumes": [
                {"name": "root", "dataVolume": {"name": "web-1-root"}},
                {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config\npassword: x\n"}},
            ],
            "terminationGracePeriodSeconds": 180,
        },
    }


def launcher_pod_10k(sidecar_image: str) -> dict[str, Any]:
    """A virt-launcher migration-target pod of about 10 KiB, as virt-controller makes them."""
    env = [{"name": f"VAR_{i}", "value": "x" * 40} for i in range(140)]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "virt-launcher-web-1-",
            "namespace": "prod",
            "labels": {
                "kubevirt.io": "virt-launcher",
                "kubevirt.io/migrationJobUID": "77aa",
                "vm.kubevirt.io/name": "web-1",
            },
            "annotations": {
                "kubevirt.io/domain": "web-1",
                "bridge-migration.kubevirt.io/macs": '{"default":"02:11:22:33:44:55"}',
            },
        },
        "spec": {
            "containers": [
                {
                    "name": "compute",
                    "image": "quay.io/kubevirt/virt-launcher:v1.9.0",
                    "env": env,
                    "volumeMounts": [{"name": "libvirt-runtime", "mountPath": "/var/run/libvirt"}],
                },
                {
                    "name": "hook-sidecar-0",
                    "image": sidecar_image,
                    "volumeMounts": [{"name": "hook-sidecar-sockets", "mountPath": "/var/run/kubevirt-hooks"}],
                },
            ],
            "volumes": [{"name": "libvirt-runtime", "emptyDir": {}}, {"name": "hook-sidecar-sockets", "emptyDir": {}}],
        },
    }
    return copy.deepcopy(pod)


def load_result(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
