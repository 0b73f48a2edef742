"""A virt-launcher pod shaped like the ones virt-controller creates (the parts that matter here)."""

from __future__ import annotations

from typing import Any

IMAGE = "registry.example/bridge-migration:test"


def launcher_pod(
    *, target: bool = False, annotations: dict[str, str] | None = None, sidecar_image: str = IMAGE
) -> dict[str, Any]:
    labels = {"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": "0b4c6f0e"}
    if target:
        labels["kubevirt.io/migrationJobUID"] = "7f3e2a10"
    ann = {"kubevirt.io/domain": "web-1"}
    ann.update(annotations or {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "virt-launcher-web-1-", "namespace": "demo", "labels": labels, "annotations": ann},
        "spec": {
            "containers": [
                {
                    "name": "compute",
                    "image": "quay.io/kubevirt/virt-launcher:v1.9.0",
                    "volumeMounts": [{"name": "libvirt-runtime", "mountPath": "/var/run/libvirt"}],
                },
                {
                    "name": "hook-sidecar-0",
                    "image": sidecar_image,
                    "volumeMounts": [{"name": "hook-sidecar-sockets", "mountPath": "/var/run/kubevirt-hooks"}],
                },
            ],
            "volumes": [
                {"name": "libvirt-runtime", "emptyDir": {}},
                {"name": "hook-sidecar-sockets", "emptyDir": {}},
            ],
        },
    }
