"""The whole admission path on one machine: control plane, KubeVirt CRDs, the webhook, the chart's
webhook configurations pointed at it, and a fake of virt-api's VMI validation behind them
(kubelab/fake_virt_api.py). Shared by the kube tests and the demo."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from kubelab.chart import helm_template, loopback_webhook_configs
from kubelab.controlplane import ControlPlane
from kubelab.crds import install_crds
from kubelab.fake_virt_api import FakeVirtApi
from kubelab.kubectl import Kubectl
from kubelab.tools import Tools, find_crd_dir, find_tools
from kubelab.webhook_process import WebhookProcess

RELEASE: Final = "bridge-migration"
RELEASE_NAMESPACE: Final = "bridge-migration"
KUBEVIRT_NAMESPACE: Final = "kubevirt"
SIDECAR_IMAGE: Final = "localhost/bridge-migration:kubelab"
CNI_MAC_ANNOTATION: Final = "cni.projectcalico.org/hwAddr"
# What virt-operator writes to the CR's status.observedKubeVirtVersion once it has deployed a
# release (the image tag; docs/kubevirt-facts.md D6).
OBSERVED_KUBEVIRT_VERSION: Final = "v1.9.0"


def kubevirt_cr(*, sidecar_gate: bool) -> dict[str, Any]:
    """The KubeVirt install CR, with or without the ``Sidecar`` feature gate."""
    gates = ["Sidecar"] if sidecar_gate else []
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": KUBEVIRT_NAMESPACE},
        "spec": {"configuration": {"developerConfiguration": {"featureGates": gates}}},
    }


class AdmissionLab:
    """Start with ``with AdmissionLab() as lab:``; ``lab.kubectl`` is a cluster-admin kubectl."""

    def __init__(
        self,
        *,
        tools: Tools | None = None,
        crd_dir: Path | None = None,
        chart_values: dict[str, Any] | None = None,
        webhook_options: dict[str, str] | None = None,
    ) -> None:
        self.tools = tools or find_tools()
        # Checked here, before anything starts: no generated schemas is an error, never open CRDs.
        self.crd_dir = crd_dir or find_crd_dir()
        self.workdir = Path(tempfile.mkdtemp(prefix="kubelab-"))
        self.plane = ControlPlane(workdir=self.workdir, tools=self.tools)
        self.chart_values = chart_values or {}
        self.webhook_options = {
            "sidecar-image": SIDECAR_IMAGE,
            "mac-policy": "pin",
            "sidecar-gate": "auto",
            "validation": "warn",
            "cni-mac-annotation": CNI_MAC_ANNOTATION,
            "annotation-prefix": "bridge-migration.kubevirt.io/",
            **(webhook_options or {}),
        }
        self.webhook: WebhookProcess | None = None
        # The fake virt-api (kubelab/fake_virt_api.py): KubeVirt's VMI validation rules that matter
        # to us, after our mutating webhook as in a cluster. Not KubeVirt.
        self.fake_virt_api: FakeVirtApi | None = None

    @property
    def kubectl(self) -> Kubectl:
        return self.plane.kubectl()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.plane.start()
        kubectl = self.kubectl
        install_crds(kubectl, self.crd_dir)
        kubectl.create_namespace(RELEASE_NAMESPACE)
        kubectl.create_namespace(KUBEVIRT_NAMESPACE)
        kubectl.apply(kubevirt_cr(sidecar_gate=True))
        self.set_observed_kubevirt_version(OBSERVED_KUBEVIRT_VERSION)
        webhook_kubeconfig = self._service_account_kubeconfig()
        assert self.plane.ca is not None
        self.webhook = WebhookProcess(
            ca=self.plane.ca,
            workdir=self.workdir,
            options={**self.webhook_options, "kubeconfig": str(webhook_kubeconfig)},
        )
        self.webhook.start()
        self.apply_webhook_configs()
        self.fake_virt_api = FakeVirtApi(
            ca=self.plane.ca,
            sidecar_gate=self.sidecar_gate_enabled,
            kubevirt_namespace=KUBEVIRT_NAMESPACE,
            kubevirt_version=OBSERVED_KUBEVIRT_VERSION,
        )
        self.fake_virt_api.start()
        kubectl.apply(self.fake_virt_api.webhook_configuration())

    def stop(self) -> None:
        if self.fake_virt_api is not None:
            self.fake_virt_api.stop()
        if self.webhook is not None:
            self.webhook.stop()
        self.plane.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def render(self, *templates: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return helm_template(
            self.tools.helm,
            release=RELEASE,
            namespace=RELEASE_NAMESPACE,
            values={**self.chart_values, **(values or {})},
            show_only=templates,
        )

    def apply_webhook_configs(self, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Render the chart's webhook configurations and apply them pointing at the loopback webhook."""
        assert self.webhook is not None and self.plane.ca is not None
        configs = loopback_webhook_configs(
            self.render("templates/webhooks.yaml", values=values),
            base_url=self.webhook.url,
            ca_pem=self.plane.ca.pem,
        )
        self.kubectl.apply(configs)
        return configs

    def set_sidecar_gate(self, *, enabled: bool) -> None:
        """Flip KubeVirt's Sidecar gate and restart the webhook so it reads the CR afresh (it caches it)."""
        self.kubectl.apply(kubevirt_cr(sidecar_gate=enabled))
        assert self.webhook is not None
        self.webhook.restart()

    def sidecar_gate_enabled(self) -> bool:
        """Whether the lab's KubeVirt CR enables the ``Sidecar`` gate (what virt-api reads)."""
        cr = self.kubectl.get("kubevirt", "kubevirt", namespace=KUBEVIRT_NAMESPACE)
        config = (cr.get("spec") or {}).get("configuration") or {}
        gates = (config.get("developerConfiguration") or {}).get("featureGates") or []
        return "Sidecar" in gates

    def set_observed_kubevirt_version(self, version: str) -> None:
        """Play virt-operator: the CR has a status subresource, so the status goes there."""
        patch = json.dumps({"status": {"observedKubeVirtVersion": version}})
        self.kubectl.run(
            "patch",
            "kubevirt",
            "kubevirt",
            f"--namespace={KUBEVIRT_NAMESPACE}",
            "--subresource=status",
            "--type=merge",
            f"--patch={patch}",
        )

    def _service_account_kubeconfig(self) -> Path:
        """The webhook reads the API as the chart's ServiceAccount, bound by the chart's own RBAC,
        so a rule missing from the chart fails the tests as it would fail in a cluster."""
        objects = self.render("templates/serviceaccount.yaml", "templates/rbac.yaml")
        self.kubectl.apply(objects)
        sa = next(o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount")
        token = self.kubectl.run(
            "create", "token", sa, f"--namespace={RELEASE_NAMESPACE}", "--duration=6h"
        ).stdout.strip()
        return self.plane.token_kubeconfig(self.workdir / "webhook.kubeconfig", token=token)
