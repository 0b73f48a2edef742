"""Reading the cluster for the plugin, through the official Kubernetes client (``kubernetes``).

The connection is kubectl's: ``--kubeconfig`` (else ``$KUBECONFIG``, else ``~/.kube/config``) with
``--context``, or the pod's service account when run in a cluster with no kubeconfig. Objects come
back as the API server's JSON (``_preload_content=False``), the shape the webhook's own rules read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from kubectl_bridge_migration.analysis import NODE_AGENT_SELECTOR, Snapshot

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
KUBEVIRT = ("kubevirt.io", "v1")


class ClusterError(RuntimeError):
    """The cluster could not be read (no configuration, unreachable, a list refused)."""


@dataclass(frozen=True)
class Connection:
    kubeconfig: str | None = None
    context: str | None = None


@dataclass
class Cluster:
    api: Any  # kubernetes.client.ApiClient
    default_namespace: str


def connect(conn: Connection) -> Cluster:
    """An API client as kubectl would make one, and the namespace kubectl would default to."""
    path = conn.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    first = path.split(os.pathsep)[0]
    if conn.kubeconfig or conn.context or os.path.exists(first):
        try:
            api = config.new_client_from_config(config_file=path, context=conn.context)  # type: ignore[no-untyped-call]
            _, active = config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
            if conn.context:
                contexts, _ = config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
                active = next((c for c in contexts if c.get("name") == conn.context), active)
        except (ConfigException, OSError) as exc:
            raise ClusterError(f"cannot load kubeconfig {path}: {exc}") from exc
        namespace = ((active or {}).get("context") or {}).get("namespace") or "default"
        return Cluster(api=api, default_namespace=namespace)
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except ConfigException as exc:
        raise ClusterError(f"no kubeconfig at {path} and not in a cluster: {exc}") from exc
    ns = IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.exists() else "default"
    return Cluster(api=client.ApiClient(), default_namespace=ns)


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


def _items(response: Any) -> list[Mapping[str, Any]]:
    items = _json(response).get("items") or []
    return [i for i in items if isinstance(i, Mapping)]


def _why(exc: ApiException) -> str:
    try:
        message = json.loads(exc.body or "").get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return str(message or f"{exc.status} {exc.reason}")


def _custom(cluster: Cluster, plural: str, namespace: str | None) -> list[Mapping[str, Any]]:
    api = client.CustomObjectsApi(cluster.api)
    if namespace is None:
        return _items(api.list_cluster_custom_object(*KUBEVIRT, plural, _preload_content=False))
    return _items(api.list_namespaced_custom_object(*KUBEVIRT, namespace, plural, _preload_content=False))


def snapshot(cluster: Cluster, namespace: str | None) -> Snapshot:
    """VMs, VMIs, their launcher pods and Events in ``namespace`` (None: all), with the KubeVirt
    CRs and the node agent's pods cluster-wide. The VM and VMI lists must be readable; the rest
    is read where RBAC allows (an unreadable KubeVirt CR counts as unknown gates)."""
    core = client.CoreV1Api(cluster.api)
    try:
        vms = _custom(cluster, "virtualmachines", namespace)
        vmis = _custom(cluster, "virtualmachineinstances", namespace)
        launcher, vmi_events = "kubevirt.io=virt-launcher", "involvedObject.kind=VirtualMachineInstance"
        if namespace is None:
            pods = _items(core.list_pod_for_all_namespaces(label_selector=launcher, _preload_content=False))
            events = _items(core.list_event_for_all_namespaces(field_selector=vmi_events, _preload_content=False))
        else:
            pods = _items(core.list_namespaced_pod(namespace, label_selector=launcher, _preload_content=False))
            events = _items(core.list_namespaced_event(namespace, field_selector=vmi_events, _preload_content=False))
    except ApiException as exc:
        raise ClusterError(f"cannot list KubeVirt's VMs and VMIs or their pods: {_why(exc)}") from exc
    kubevirts: list[Mapping[str, Any]] | None
    try:
        kubevirts = _custom(cluster, "kubevirts", None)
    except ApiException:
        kubevirts = None
    try:
        agents = _items(core.list_pod_for_all_namespaces(label_selector=NODE_AGENT_SELECTOR, _preload_content=False))
        apps = client.AppsV1Api(cluster.api)
        daemonsets = _items(
            apps.list_daemon_set_for_all_namespaces(label_selector=NODE_AGENT_SELECTOR, _preload_content=False)
        )
    except ApiException:
        agents, daemonsets = [], []
    return Snapshot(
        vms=vms,
        vmis=vmis,
        pods=pods,
        events=events,
        kubevirts=kubevirts,
        node_agent_pods=agents,
        node_agent_deployed=bool(daemonsets or agents),
    )


def get_vmi(cluster: Cluster, namespace: str, name: str) -> Mapping[str, Any]:
    api = client.CustomObjectsApi(cluster.api)
    try:
        return _json(
            api.get_namespaced_custom_object(
                *KUBEVIRT, namespace, "virtualmachineinstances", name, _preload_content=False
            )
        )
    except ApiException as exc:
        raise ClusterError(f"cannot read VMI {namespace}/{name}: {_why(exc)}") from exc


def launcher_and_agent_pods(
    cluster: Cluster, namespace: str
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    core = client.CoreV1Api(cluster.api)
    try:
        pods = _items(
            core.list_namespaced_pod(namespace, label_selector="kubevirt.io=virt-launcher", _preload_content=False)
        )
    except ApiException as exc:
        raise ClusterError(f"cannot list the launcher pods in {namespace}: {_why(exc)}") from exc
    try:
        agents = _items(core.list_pod_for_all_namespaces(label_selector=NODE_AGENT_SELECTOR, _preload_content=False))
    except ApiException:
        agents = []
    return pods, agents
