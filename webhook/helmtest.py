"""``python -m webhook.helmtest``: the chart's ``helm test`` check (templates/tests/).

1. The webhook answers over TLS: ``/healthz`` and ``/readyz`` through its Service, the certificate
   verified against the CA the chart gave it, for the Service name the API server calls.
2. The feature gate its delivery mode needs is on in the KubeVirt CR: ``hook`` needs ``Sidecar``,
   ``node`` needs ``Plugins`` (both Alpha: on only when listed in
   ``developerConfiguration.featureGates`` and not in ``disabledFeatureGates``), ``inject`` none;
   ``auto`` is what the webhook resolves it to.

Each finding is printed as one line (``helm test --logs`` shows them); exit 0 when all hold, 1 if not.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import httpx

from bridge_migration_contract import DELIVERY_CHOICES, DeliveryChoice
from webhook.delivery import resolve_delivery
from webhook.kube import KubeClient, KubeError, target_from_kubeconfig, target_in_cluster

GATE_FOR = {"hook": "Sidecar", "node": "Plugins"}
KUBEVIRTS = "/apis/kubevirt.io/v1/kubevirts"


def gates_on(kubevirts: dict[str, Any]) -> set[str]:
    """The feature gates on in any KubeVirt CR of a list."""
    on: set[str] = set()
    for item in kubevirts.get("items") or []:
        dev = ((item.get("spec") or {}).get("configuration") or {}).get("developerConfiguration") or {}
        on |= set(dev.get("featureGates") or []) - set(dev.get("disabledFeatureGates") or [])
    return on


def check_gates(delivery: DeliveryChoice, sidecar_gate: str, kubevirts: dict[str, Any]) -> tuple[bool, list[str]]:
    """Whether the delivery mode has the gate it needs, and what was found."""
    items = kubevirts.get("items") or []
    if not items:
        return False, ["kubevirt: no KubeVirt CR in the cluster; nothing will call the webhook for VMs"]
    metas = [i.get("metadata") or {} for i in items]
    names = ", ".join(f"{m.get('namespace')}/{m.get('name')}" for m in metas)
    on = gates_on(kubevirts)
    lines = [f"kubevirt: {names}; feature gates on: {', '.join(sorted(on)) or 'none'}"]
    read = "Sidecar" in on
    forced = {"on": True, "off": False}.get(sidecar_gate)
    if forced is not None and forced != read:
        state = "on" if read else "off"
        lines.append(f"sidecar.gate is forced {sidecar_gate}, but the KubeVirt CR has Sidecar {state}")
    effective = resolve_delivery(delivery, sidecar_gate_on=read if forced is None else forced)
    gate = GATE_FOR.get(effective)
    if gate is None:
        lines.append(f"delivery {delivery} -> {effective}: needs no feature gate")
        return True, lines
    ok = gate in on
    lines.append(f"delivery {delivery} -> {effective}: needs the {gate} feature gate: {'on' if ok else 'OFF'}")
    return ok, lines


def check_webhook(url: str, ca: Path, *, server_name: str | None, timeout_s: float) -> tuple[bool, list[str]]:
    """``/healthz`` and ``/readyz`` over TLS, verified against ``ca`` for the URL's host (or
    ``server_name``)."""
    context = ssl.create_default_context(cafile=str(ca))
    ext = {"sni_hostname": server_name} if server_name else {}
    base = url.rstrip("/")
    try:
        with httpx.Client(verify=context, timeout=timeout_s) as client:
            health = client.get(f"{base}/healthz", extensions=ext)
            ready = client.get(f"{base}/readyz", extensions=ext)
    except (httpx.HTTPError, OSError) as exc:
        return False, [f"webhook: {base}: {type(exc).__name__}: {exc}"]
    lines = [f"webhook: {base}/healthz over TLS (CA {ca}): HTTP {health.status_code}"]
    if ready.status_code == 200:
        body = ready.json()
        lines.append(
            f"webhook: ready; delivery now {body.get('delivery')}, sidecar gate {body.get('sidecarGate')}"
            f" (source {body.get('sidecarGateSource')}), API {body.get('api')}"
        )
    else:
        lines.append(f"webhook: /readyz HTTP {ready.status_code}: {ready.text[:200]}")
    return health.status_code == 200 and ready.status_code == 200, lines


async def _list_kubevirts(kubeconfig: Path | None, timeout_s: float) -> dict[str, Any]:
    target = target_from_kubeconfig(kubeconfig) if kubeconfig else target_in_cluster()
    client = KubeClient(target, timeout_s=timeout_s)
    try:
        return await client.get(KUBEVIRTS)
    finally:
        await client.aclose()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m webhook.helmtest", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the webhook's base URL, https://<service>.<namespace>.svc:443")
    parser.add_argument("--ca", required=True, type=Path, help="PEM CA the webhook's certificate must chain to")
    parser.add_argument("--server-name", default=None, help="TLS name to verify, when not the URL's host")
    parser.add_argument("--delivery", required=True, choices=DELIVERY_CHOICES)
    parser.add_argument("--sidecar-gate", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--kubeconfig", type=Path, default=None, help="default: in-cluster service account")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ok, lines = check_webhook(args.url, args.ca, server_name=args.server_name, timeout_s=args.timeout)
    try:
        kubevirts = asyncio.run(_list_kubevirts(args.kubeconfig, args.timeout))
    except KubeError as exc:
        gates_ok, gate_lines = False, [f"kubevirt: cannot list KubeVirt CRs: {exc}"]
    else:
        gates_ok, gate_lines = check_gates(cast(DeliveryChoice, args.delivery), args.sidecar_gate, kubevirts)
    for line in lines + gate_lines:
        print(line)
    passed = ok and gates_ok
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
