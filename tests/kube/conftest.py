"""The admission lab for the kube tests: one control plane and webhook for the whole session."""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest

from kubelab.kubectl import Kubectl
from kubelab.lab import AdmissionLab
from kubelab.tools import find_tools

_counter = itertools.count()


@pytest.fixture(scope="session")
def lab() -> Iterator[AdmissionLab]:
    # No skip: a missing binary or a control plane that does not start is a test failure.
    with AdmissionLab(tools=find_tools()) as running:
        yield running


@pytest.fixture
def kubectl(lab: AdmissionLab) -> Kubectl:
    return lab.kubectl


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test (never deleted: there is no controller-manager to finalize it)."""
    # Parametrized names carry brackets and dots: a namespace name is an RFC 1123 label.
    name = re.sub(r"[^a-z0-9-]+", "-", f"t{next(_counter)}-{request.node.name}".lower())[:63].rstrip("-")
    kubectl.create_namespace(name)
    return name


def vmi_manifest(
    name: str,
    namespace: str,
    *,
    binding: str = "bridge",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A VMI as a VM template produces it: one interface on the pod network."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": metadata,
        "spec": {
            "domain": {
                "devices": {"interfaces": [{"name": "default", binding: {}}]},
                "resources": {"requests": {"memory": "128Mi"}},
            },
            "networks": [{"name": "default", "pod": {}}],
        },
    }


@contextlib.contextmanager
def gate_off_hook_only(lab: AdmissionLab) -> Iterator[None]:
    """KubeVirt's Sidecar gate off and the webhook on ``--delivery hook``: bridge VMIs are stored as
    written (how a VMI made before the install, or under hook-only delivery without the gate, looks)."""
    assert lab.webhook is not None
    lab.webhook.options["delivery"] = "hook"
    lab.set_sidecar_gate(enabled=False)  # restarts the webhook with the options above
    try:
        yield
    finally:
        lab.webhook.options["delivery"] = "auto"
        lab.set_sidecar_gate(enabled=True)


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def user_annotations(obj: dict[str, Any]) -> dict[str, str]:
    """The stored annotations without kubectl's own bookkeeping."""
    ann = dict(obj["metadata"].get("annotations") or {})
    ann.pop(LAST_APPLIED, None)
    return ann
