"""A FAKE of KubeVirt's virt-api VMI validation: a stand-in, not KubeVirt.

kubelab has no KubeVirt, so nothing refused what KubeVirt's virt-api refuses. This validating
admission webhook, served over HTTPS from the test process with kubelab's CA and registered as the
ValidatingWebhookConfiguration ``kubelab-fake-virt-api``, implements only three of virt-api's rules
for VirtualMachineInstances (each checked in kubevirt/kubevirt, docs/kubevirt-facts.md K2, K6, K7):

* UPDATE: a change of ``spec`` by anyone but KubeVirt's own service accounts is refused
  ("update of VMI object is restricted"). KubeVirt's accounts may (virt-api then checks hotplug,
  which this fake does not).
* CREATE: ``hooks.kubevirt.io/hookSidecars`` is refused while the ``Sidecar`` feature gate is off.
* CREATE: each ``spec.domain.devices.interfaces[].macAddress`` must parse as Go's
  ``net.ParseMAC`` parses it, and be 6 bytes long.

Kubernetes calls every mutating webhook (ours) before any validating one (this), so what it judges
is our output, as virt-api would in a cluster. The messages are KubeVirt's (they are what a user
sees); the code is written afresh.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from bridge_migration_contract import HOOK_SIDECARS
from kubelab.ports import LOOPBACK
from webhook.certs import CertificateAuthority

CONFIG_NAME: Final = "kubelab-fake-virt-api"
CREATE_PATH: Final = "/virtualmachineinstances-validate-create"
UPDATE_PATH: Final = "/virtualmachineinstances-validate-update"

# pkg/virt-api/webhooks/serviceaccounts.go (KubeVirtServiceAccounts): the accounts whose VMI spec
# changes virt-api lets through; kubevirt-synchronization-controller from v1.6.
_KUBEVIRT_ACCOUNTS_V15: Final = ("kubevirt-apiserver", "kubevirt-controller", "kubevirt-handler")
_KUBEVIRT_ACCOUNTS_V16: Final = (*_KUBEVIRT_ACCOUNTS_V15, "kubevirt-synchronization-controller")

SPEC_UPDATE_MESSAGE: Final = "update of VMI object is restricted"
SIDECAR_GATE_MESSAGE: Final = (
    f"sidecar feature gate is not enabled in kubevirt-config, invalid entry metadata.annotations.{HOOK_SIDECARS}"
)


def kubevirt_service_accounts(namespace: str, *, kubevirt_version: str = "v1.9.0") -> frozenset[str]:
    """The user names virt-api treats as KubeVirt itself, for KubeVirt installed in ``namespace``."""
    minor = int(kubevirt_version.lstrip("v").split(".")[1])
    names = _KUBEVIRT_ACCOUNTS_V16 if minor >= 6 else _KUBEVIRT_ACCOUNTS_V15
    return frozenset(f"system:serviceaccount:{namespace}:{n}" for n in names)


_HEX: Final = frozenset("0123456789abcdefABCDEF")


def parse_go_mac(s: str) -> bytes | None:
    """Go's ``net.ParseMAC``: ``aa:bb:..``, ``aa-bb-..`` or ``aabb.ccdd...``, 6, 8 or 20 bytes; None if
    it would return an error."""

    def pair(text: str) -> int | None:
        return int(text, 16) if len(text) == 2 and set(text) <= _HEX else None

    if len(s) < 14:
        return None
    out: list[int | None] = []
    if s[2] in ":-":
        sep = s[2]
        if (len(s) + 1) % 3 != 0 or (len(s) + 1) // 3 not in (6, 8, 20):
            return None
        groups = s.split(sep)
        if len(groups) != (len(s) + 1) // 3:
            return None
        out = [pair(g) for g in groups]
    elif s[4] == ".":
        if (len(s) + 1) % 5 != 0 or 2 * (len(s) + 1) // 5 not in (6, 8, 20):
            return None
        groups = s.split(".")
        if len(groups) != (len(s) + 1) // 5 or any(len(g) != 4 for g in groups):
            return None
        out = [pair(h) for g in groups for h in (g[:2], g[2:])]
    else:
        return None
    if any(b is None for b in out):
        return None
    return bytes(b for b in out if b is not None)


def mac_error(mac: str) -> str | None:
    """KubeVirt's ``link.ValidateMacAddress``: the error text, or None (an empty MAC is valid)."""
    if mac == "":
        return None
    parsed = parse_go_mac(mac)
    if parsed is None:
        return f"malformed MAC address ({mac})"
    if len(parsed) > 6:
        return f"too long MAC address ({mac})"
    return None


def _interfaces(spec: Any) -> list[Any]:
    domain = spec.get("domain") if isinstance(spec, Mapping) else None
    devices = domain.get("devices") if isinstance(domain, Mapping) else None
    ifaces = devices.get("interfaces") if isinstance(devices, Mapping) else None
    return ifaces if isinstance(ifaces, list) else []


def admit_create(vmi: Mapping[str, Any], *, sidecar_gate: Callable[[], bool]) -> list[str]:
    """The refusal messages for a VMI being created (empty: allowed)."""
    causes: list[str] = []
    for idx, iface in enumerate(_interfaces(vmi.get("spec"))):
        mac = iface.get("macAddress") if isinstance(iface, Mapping) else None
        if isinstance(mac, str) and (err := mac_error(mac)) is not None:
            causes.append(f"interface spec.domain.devices.interfaces[{idx}].name has {err}.")
    annotations = (vmi.get("metadata") or {}).get("annotations") or {}
    # virt-api tests for a non-empty value; the gate is only read when it matters.
    if annotations.get(HOOK_SIDECARS) and not sidecar_gate():
        causes.append(SIDECAR_GATE_MESSAGE)
    return causes


def admit_update(
    new: Mapping[str, Any], old: Mapping[str, Any], *, username: str, kubevirt_accounts: Iterable[str]
) -> list[str]:
    """The refusal messages for an UPDATE of a VMI (empty: allowed)."""
    if new.get("spec") != old.get("spec") and username not in set(kubevirt_accounts):
        return [SPEC_UPDATE_MESSAGE]
    return []


def _response(uid: str, causes: list[str]) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": not causes}
    if causes:
        # As KubeVirt's webhookutils.ToAdmissionResponse: the causes joined with ", ", 422 Invalid.
        response["status"] = {
            "status": "Failure",
            "message": ", ".join(causes[:10]),
            "reason": "Invalid",
            "code": 422,
        }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


class FakeVirtApi:
    """The fake virt-api on loopback. ``sidecar_gate`` answers whether KubeVirt's Sidecar gate is on
    (kubelab reads its KubeVirt CR); ``kubevirt_namespace`` is where KubeVirt's accounts live."""

    def __init__(
        self,
        *,
        ca: CertificateAuthority,
        sidecar_gate: Callable[[], bool],
        kubevirt_namespace: str = "kubevirt",
        kubevirt_version: str = "v1.9.0",
    ) -> None:
        self.ca = ca
        self.sidecar_gate = sidecar_gate
        self.kubevirt_accounts = kubevirt_service_accounts(kubevirt_namespace, kubevirt_version=kubevirt_version)
        self.refusals: list[str] = []  # every refusal message, for the tests to look at
        self._serving = ca.issue("fake-virt-api", common_name="kubelab-fake-virt-api", hosts=(LOOPBACK,))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://{LOOPBACK}:{self._server.server_address[1]}"

    def review(self, path: str, review: Mapping[str, Any]) -> dict[str, Any]:
        request = review.get("request") or {}
        uid = str(request.get("uid", ""))
        obj = request.get("object") or {}
        if path == CREATE_PATH:
            causes = admit_create(obj, sidecar_gate=self.sidecar_gate)
        elif path == UPDATE_PATH:
            causes = admit_update(
                obj,
                request.get("oldObject") or {},
                username=str((request.get("userInfo") or {}).get("username", "")),
                kubevirt_accounts=self.kubevirt_accounts,
            )
        else:
            causes = [f"fake virt-api: no such path {path}"]
        self.refusals.extend(causes)
        return _response(uid, causes)

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.dumps(
                        fake.review(self.path.partition("?")[0], json.loads(self.rfile.read(length)))
                    ).encode()
                    self.send_response(200)
                except (ValueError, AttributeError) as exc:
                    body = f"fake virt-api: bad review: {exc}".encode()
                    self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self._serving.cert), str(self._serving.key))
        server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-virt-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def webhook_configuration(self) -> dict[str, Any]:
        """A ValidatingWebhookConfiguration sending VMI CREATEs and UPDATEs here, failing closed as
        virt-api's own does (a fake that is down must fail the tests, not pass them)."""
        bundle = base64.b64encode(self.ca.pem).decode()

        def hook(name: str, operation: str, path: str) -> dict[str, Any]:
            return {
                "name": name,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
                "rules": [
                    {
                        "apiGroups": ["kubevirt.io"],
                        "apiVersions": ["v1"],
                        "resources": ["virtualmachineinstances"],
                        "operations": [operation],
                        "scope": "Namespaced",
                    }
                ],
                "clientConfig": {"url": self.url + path, "caBundle": bundle},
            }

        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": CONFIG_NAME, "labels": {"kubelab/fake": "virt-api"}},
            "webhooks": [
                hook("virtualmachineinstances-create-validator.fake-virt-api.kubelab", "CREATE", CREATE_PATH),
                hook("virtualmachineinstances-update-validator.fake-virt-api.kubelab", "UPDATE", UPDATE_PATH),
            ],
        }
