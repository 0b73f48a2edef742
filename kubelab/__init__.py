"""A local Kubernetes control plane for tests and the demo.

etcd and kube-apiserver (built by ``scripts/build-k8s.sh``) on loopback with random free ports, the
PKI they need generated on the spot, KubeVirt's CRDs, kubectl and helm wrappers, and the webhook
started as a real HTTPS subprocess so the API server calls it exactly as in a cluster. Nothing
here pretends to be an API server: without the binaries it fails and says how to build them.
"""

from kubelab.controlplane import ControlPlane
from kubelab.kubectl import Kubectl
from kubelab.tools import Tools, find_tools

__all__ = ["ControlPlane", "Kubectl", "Tools", "find_tools"]
