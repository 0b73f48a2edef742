"""``python -m kubelab demo``: see a bridge VMI come back from the API server mutated."""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, DEFAULT_KEYS, HOOK_SIDECARS
from kubelab.lab import AdmissionLab
from kubelab.tools import find_crd_dir, find_tools

DEMO_NAMESPACE = "demo"


def bridge_vmi(name: str = "demo-bridge") -> dict[str, Any]:
    """A VMI the way a VM template would create it: one bridge interface on the pod network."""
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": DEMO_NAMESPACE},
        "spec": {
            "domain": {
                "devices": {"interfaces": [{"name": "default", "bridge": {}}]},
                "resources": {"requests": {"memory": "128Mi"}},
            },
            "networks": [{"name": "default", "pod": {}}],
        },
    }


def _say(text: str) -> None:
    print(text, flush=True)


def run(*, keep: bool) -> int:
    tools = find_tools(build=True)
    crd_dir = find_crd_dir(build=True)
    _say("starting etcd, kube-apiserver and the webhook on loopback ...")
    with AdmissionLab(tools=tools, crd_dir=crd_dir) as lab:
        kubectl = lab.kubectl
        kubectl.create_namespace(DEMO_NAMESPACE)
        vmi = bridge_vmi()
        _say("\n$ kubectl apply -f - <<EOF\n" + json.dumps(vmi, indent=2) + "\nEOF")
        result = kubectl.apply(vmi)
        _say(result.stdout.strip())
        if result.stderr.strip():
            _say(result.stderr.strip())
        stored = kubectl.get("vmi", vmi["metadata"]["name"], namespace=DEMO_NAMESPACE)
        annotations = stored["metadata"].get("annotations", {})
        ours = {
            key: value
            for key, value in annotations.items()
            if key in (ALLOW_POD_BRIDGE_MIGRATION, HOOK_SIDECARS) or key.startswith(DEFAULT_KEYS.prefix)
        }
        if HOOK_SIDECARS in ours:
            ours[HOOK_SIDECARS] = json.loads(ours[HOOK_SIDECARS])
        _say("\nWhat the API server stored (the webhook's changes):")
        _say(
            json.dumps(
                {
                    "metadata.annotations": ours,
                    "spec.domain.devices.interfaces": stored["spec"]["domain"]["devices"]["interfaces"],
                },
                indent=2,
            )
        )
        if keep:
            _say(f"\nThe control plane stays up: export KUBECONFIG={lab.plane.kubeconfig}")
            _say(f"kubectl is {tools.kubectl}; press Ctrl-C to stop and clean up.")
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            try:
                signal.pause()
            except KeyboardInterrupt:
                _say("stopping ...")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "demo" or any(a not in ("demo", "--keep") for a in argv):
        print("usage: python -m kubelab demo [--keep]", file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return run(keep="--keep" in argv)
