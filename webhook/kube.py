"""Reads from the Kubernetes API: the VMI behind a migration, the VM behind a VMI, and KubeVirt's
feature gates.

httpx with the in-cluster service account (token re-read as it rotates, cluster CA) or a
kubeconfig for local runs. Every read has a timeout; callers decide what a failure means.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

from bridge_migration_contract import kubevirt_family

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeError(RuntimeError):
    """A read from the API failed (unreachable, timeout, or an unexpected status)."""


class NotFoundError(KubeError):
    pass


class InvalidNameError(KubeError):
    """A name or namespace Kubernetes would never accept: no request was made.

    A KubeError, so a caller that does not tell it apart still treats it as a failed read; the
    admission callers do tell it apart, since it is the requester's bad input, not the API's fault.
    """


# apimachinery's IsDNS1123Label (namespaces) and IsDNS1123Subdomain (most object names, VMIs
# included). Nothing else can name an object, so nothing else is put into a URL: a tenant's
# "../../other/virtualmachineinstances/x" would otherwise be resolved by httpx (and by the
# apiserver, which routes on the decoded path) into another namespace.
_DNS1123_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_LABEL_RE = re.compile(_DNS1123_LABEL)
_SUBDOMAIN_RE = re.compile(rf"{_DNS1123_LABEL}(?:\.{_DNS1123_LABEL})*")


def check_namespace(value: str) -> str:
    """``value`` if it is a valid namespace (DNS-1123 label, at most 63 characters)."""
    if len(value) > 63 or not _LABEL_RE.fullmatch(value):
        raise InvalidNameError(
            f"{value!r} is not a valid namespace (lower-case letters, digits and '-', at most 63 characters)"
        )
    return value


def check_object_name(value: str, kind: str) -> str:
    """``value`` if it is a valid name for ``kind`` (DNS-1123 subdomain, at most 253 characters)."""
    if len(value) > 253 or not _SUBDOMAIN_RE.fullmatch(value):
        raise InvalidNameError(
            f"{value!r} is not a valid {kind} name (lower-case letters, digits, '-' and '.', at most 253 characters)"
        )
    return value


def api_path(*segments: str) -> str:
    """A path from segments, each percent-quoted whole: a segment can never add or climb a level
    even if a caller forgot to check it (the checks above are the real guard)."""
    return "".join("/" + quote(segment, safe="") for segment in segments)


@dataclass(frozen=True)
class ApiTarget:
    server: str
    ssl_context: ssl.SSLContext
    token: str | None = None
    token_file: Path | None = None


def _materialize(data_b64: str, scratch: Path, name: str) -> str:
    path = scratch / name
    path.write_bytes(base64.b64decode(data_b64))
    path.chmod(0o600)
    return str(path)


def target_from_kubeconfig(path: Path) -> ApiTarget:
    """The current context of a kubeconfig: server, CA, client cert or token."""
    try:
        doc = yaml.safe_load(path.read_text())
        contexts = {c["name"]: c["context"] for c in doc.get("contexts", [])}
        ctx = contexts[doc["current-context"]]
        cluster = {c["name"]: c["cluster"] for c in doc["clusters"]}[ctx["cluster"]]
        user = {u["name"]: u["user"] for u in doc.get("users", [])}.get(ctx.get("user"), {}) or {}
        if not isinstance(cluster, dict) or not isinstance(user, dict) or not isinstance(cluster["server"], str):
            raise TypeError("cluster and user must be mappings, server a string")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise KubeError(f"cannot use kubeconfig {path}: {exc!r}") from exc

    # kubectl reads relative file paths in a kubeconfig against the kubeconfig's own directory.
    def local(key: str, section: dict[str, Any]) -> str | None:
        value = section.get(key)
        return str(path.parent / value) if isinstance(value, str) and value else None

    for what in ("exec", "auth-provider"):
        if what in user:
            # Credential plugins run programs (cloud CLIs) the webhook image does not have; the
            # webhook's own mode is in-cluster. Say so instead of sending unauthenticated requests.
            raise KubeError(
                f"cannot use kubeconfig {path}: its user has an {what!r} credential plugin, which the"
                " webhook does not run; use a token, tokenFile or client certificate, or run in-cluster"
            )
    scratch = Path(tempfile.mkdtemp(prefix="bm-kubeconfig-"))
    ca = local("certificate-authority", cluster)
    if "certificate-authority-data" in cluster:
        ca = _materialize(cluster["certificate-authority-data"], scratch, "ca.crt")
    context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    if cluster.get("insecure-skip-tls-verify"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cert = local("client-certificate", user)
    key = local("client-key", user)
    if "client-certificate-data" in user:
        cert = _materialize(user["client-certificate-data"], scratch, "client.crt")
    if "client-key-data" in user:
        key = _materialize(user["client-key-data"], scratch, "client.key")
    if cert and key:
        context.load_cert_chain(cert, key)
    token_file = local("tokenFile", user)
    return ApiTarget(
        server=cluster["server"],
        ssl_context=context,
        token=user.get("token"),
        token_file=Path(token_file) if token_file else None,
    )


def target_in_cluster() -> ApiTarget:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not (SA_DIR / "token").exists():
        raise KubeError("not in a cluster (no KUBERNETES_SERVICE_HOST or service account token) and no --kubeconfig")
    host = f"[{host}]" if ":" in host else host
    return ApiTarget(
        server=f"https://{host}:{port}",
        ssl_context=ssl.create_default_context(cafile=str(SA_DIR / "ca.crt")),
        token_file=SA_DIR / "token",
    )


class KubeClient:
    def __init__(
        self, target: ApiTarget, *, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        """``transport`` replaces the network (tests hand in an ``httpx.MockTransport``)."""
        self._target = target
        self._client = httpx.AsyncClient(
            base_url=target.server, verify=target.ssl_context, timeout=timeout_s, transport=transport
        )

    def _headers(self) -> dict[str, str]:
        token = self._target.token
        if self._target.token_file is not None:
            # Projected service-account tokens rotate: read the file each time (it is tiny).
            token = self._target.token_file.read_text().strip()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def get(self, path: str) -> dict[str, Any]:
        try:
            resp = await self._client.get(path, headers=self._headers())
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise KubeError(f"GET {path}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code == 404:
            raise NotFoundError(f"GET {path}: not found")
        if resp.status_code != 200:
            raise KubeError(f"GET {path}: HTTP {resp.status_code}: {resp.text[:200]}")
        body: dict[str, Any] = resp.json()
        return body

    async def get_vmi(self, namespace: str, name: str) -> dict[str, Any]:
        """The VMI ``namespace/name``; InvalidNameError, before any request, when either could
        not name one (both come from the review, the name from what a tenant wrote)."""
        path = api_path(
            "apis",
            "kubevirt.io",
            "v1",
            "namespaces",
            check_namespace(namespace),
            "virtualmachineinstances",
            check_object_name(name, "VirtualMachineInstance"),
        )
        return await self.get(path)

    async def get_vm(self, namespace: str, name: str) -> dict[str, Any]:
        """The VirtualMachine ``namespace/name`` (a VMI's owner, named by what its creator wrote),
        with the same checks as :meth:`get_vmi`."""
        path = api_path(
            "apis",
            "kubevirt.io",
            "v1",
            "namespaces",
            check_namespace(namespace),
            "virtualmachines",
            check_object_name(name, "VirtualMachine"),
        )
        return await self.get(path)

    async def aclose(self) -> None:
        await self._client.aclose()


def feature_gates_in(kubevirts: dict[str, Any]) -> frozenset[str]:
    """The feature gates listed in ``spec.configuration.developerConfiguration.featureGates`` of
    any KubeVirt CR in a list. An Alpha gate (Sidecar, Root, Plugins) is on only when listed there
    (docs/kubevirt-facts.md L11, P9)."""
    gates: set[str] = set()
    for item in kubevirts.get("items") or []:
        dev = ((item.get("spec") or {}).get("configuration") or {}).get("developerConfiguration") or {}
        gates.update(g for g in dev.get("featureGates") or [] if isinstance(g, str))
    return frozenset(gates)


def sidecar_gate_in(kubevirts: dict[str, Any]) -> bool:
    """Whether any KubeVirt CR in a list has the ``Sidecar`` feature gate on."""
    return "Sidecar" in feature_gates_in(kubevirts)


def observed_kubevirt_version_in(kubevirts: dict[str, Any]) -> str | None:
    """The ``status.observedKubeVirtVersion`` of the first KubeVirt CR that reports a parsable one.

    virt-operator writes there the tag it deployed (docs/kubevirt-facts.md D6); a digest-pinned
    install reports no version we can read, and then the sidecar's ``--kubevirt-version`` decides.
    """
    for item in kubevirts.get("items") or []:
        version = (item.get("status") or {}).get("observedKubeVirtVersion")
        if isinstance(version, str):
            try:
                kubevirt_family(version)
            except ValueError:
                continue
            return version.strip()
    return None


class SidecarGateCache:
    """KubeVirt's feature gates (Sidecar, and Plugins and Root with it), read from the KubeVirt CR
    and cached.

    The CR is refreshed in the background every ``refresh_s``. A forced Sidecar value (flag
    ``on``/``off``) wins for that gate, and then nothing is read in the background: the CR is read
    when an admission first asks for the gates (``current``), and again once that is ``refresh_s``
    old, for the other gates and the version. A failed read keeps the last known values; before the
    first successful read each gate counts as unknown (None), which the deciders treat as off,
    KubeVirt's own default for these Alpha gates.
    """

    def __init__(self, client: KubeClient | None, *, forced: bool | None, refresh_s: float) -> None:
        self._client = client
        self._forced = forced
        self._refresh_s = refresh_s
        self._gates: frozenset[str] | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()
        self.last_error: str | None = None
        self.read_ok: bool | None = None  # did the last read of the KubeVirt CR work? None: none yet
        # Read with the gate from the same list; handed to launcher pods for the sidecar's DHCP rule.
        self.kubevirt_version: str | None = None

    def _gate(self, name: str) -> bool | None:
        return None if self._gates is None else name in self._gates

    @property
    def value(self) -> bool | None:
        """The Sidecar gate."""
        return self._forced if self._forced is not None else self._gate("Sidecar")

    @property
    def plugins(self) -> bool | None:
        """The Plugins gate: virt-handler calls node hooks only with it on (facts P13)."""
        return self._gate("Plugins")

    @property
    def root(self) -> bool | None:
        """The Root gate: with it on, virt-api makes new VMIs root (facts L11)."""
        return self._gate("Root")

    async def refresh(self) -> bool | None:
        if self._client is None:
            return self.value
        async with self._lock:
            # Counted from the attempt, so an unreachable API costs one timeout per period, not
            # one per admission.
            self._read_at = time.monotonic()
            try:
                kubevirts = await self._client.get("/apis/kubevirt.io/v1/kubevirts")
                self._gates = feature_gates_in(kubevirts)
                self.kubevirt_version = observed_kubevirt_version_in(kubevirts)
                self.last_error = None
                self.read_ok = True
            except KubeError as exc:
                if self.last_error != str(exc):
                    log.warning("cannot read KubeVirt feature gates, keeping %s: %s", self._gates, exc)
                self.last_error = str(exc)
                self.read_ok = False
        return self.value

    async def current(self) -> bool | None:
        """The Sidecar gate for an admission (the other gates read with it): read now only if
        never read or stale."""
        if self._client is not None and time.monotonic() - self._read_at > self._refresh_s:
            await self.refresh()
        return self.value

    async def run(self) -> None:
        if self._forced is not None:
            return  # read when an admission asks (current), not in the background
        while True:
            await self.refresh()
            await asyncio.sleep(self._refresh_s)
