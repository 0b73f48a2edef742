"""``kubectl bridge-migration cleanup``: take back what the add-on wrote onto VMs and running VMIs.

For each VirtualMachine (in ``spec.template.metadata.annotations``) and each VMI (in its own
``metadata.annotations``) it removes, by JSON patch:

- our entry from ``hooks.kubevirt.io/hookSidecars`` (the user's entries are kept, in their order;
  the annotation goes when ours was the only one). Ours is the entry whose command is the fixer's
  (``python -m sidecar serve``, the contract's ``FIXER_COMMAND``) or whose image is of the
  repository ``--sidecar-image`` names, any tag;
- our records: ``<prefix>macs``, ``mac-policy``, ``delivery``, ``nic-refresh``, ``interfaces``;
- ``kubevirt.io/allow-pod-bridge-network-live-migration`` (``--remove-allow``, the default), so
  KubeVirt treats the VM as non-migratable again, as it did before the add-on; or it keeps it with a
  warning per object (``--keep-allow``). The webhook records nowhere that it added the annotation
  (it adds it only where absent), so the cleanup removes it only from objects that carry a record or
  hook entry of ours, and keeps it where the object's ``kubectl.kubernetes.io/last-applied-configuration``
  shows the user wrote it (a VMI of a VM: the VM's).

It never touches a ``macAddress`` in a spec: removing a pinned MAC changes the guest's NIC at its
next start. A VMI's ``metadata.annotations`` may be patched while it runs (virt-api guards only its
``spec`` and reserved labels: docs/kubevirt-facts.md K2); its running launcher pod keeps what it was
created with. The user's own settings, ``<prefix>enabled`` and ``<prefix>skip-multus-bridges``, are
left alone.

API access: httpx, as the webhook's (webhook/kube.py: a kubeconfig's token or client certificate,
or the in-cluster service account), so it runs in the webhook image with no new dependency, which
is what the chart's pre-delete hook runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx

from bridge_migration_contract import (
    ALLOW_POD_BRIDGE_MIGRATION,
    ANNOTATION_PREFIX_FLAG,
    DEFAULT_PREFIX,
    FIXER_COMMAND,
    HOOK_SIDECARS,
    AnnotationKeys,
    parse_macs,
)
from webhook.hook_sidecars import MalformedSidecarsError, is_our_image, parse_sidecars
from webhook.kube import SA_DIR, ApiTarget, KubeError, target_from_kubeconfig, target_in_cluster

LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
Kind = Literal["VirtualMachine", "VirtualMachineInstance"]
_RESOURCES: Final[dict[Kind, str]] = {
    "VirtualMachine": "virtualmachines",
    "VirtualMachineInstance": "virtualmachineinstances",
}
_ANNOTATIONS_AT: Final[dict[Kind, tuple[str, ...]]] = {
    "VirtualMachine": ("spec", "template", "metadata", "annotations"),
    "VirtualMachineInstance": ("metadata", "annotations"),
}
_SHORT: Final[dict[Kind, str]] = {"VirtualMachine": "VM", "VirtualMachineInstance": "VMI"}


def record_keys(keys: AnnotationKeys) -> tuple[str, ...]:
    """The annotations the webhook writes as records on a VMI or a VM template (README, "The contract")."""
    return (keys.macs, keys.mac_policy, keys.delivery, keys.nic_refresh, keys.interfaces)


@dataclass
class Change:
    """What the cleanup does to one object: the JSON patch, and each line it prints about it."""

    kind: Kind
    namespace: str
    name: str
    ops: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The allow annotation is the user's (kept whatever --remove-allow says).
    user_allow: bool = False

    @property
    def who(self) -> str:
        return f"{_SHORT[self.kind]} {self.namespace}/{self.name}"


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def pointer(*segments: str) -> str:
    return "".join("/" + _escape(s) for s in segments)


def _annotations(obj: Mapping[str, Any], at: Sequence[str]) -> dict[str, str]:
    node: Any = obj
    for segment in at:
        node = node.get(segment) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping):
        return {}
    return {k: v for k, v in node.items() if isinstance(k, str) and isinstance(v, str)}


def is_our_entry(entry: Mapping[str, Any], sidecar_image: str | None) -> bool:
    """Our hook sidecar entry: the fixer's command, or an image of our repository (any tag)."""
    if entry.get("command") == list(FIXER_COMMAND):
        return True
    return sidecar_image is not None and is_our_image(entry.get("image"), sidecar_image)


def user_wrote_allow(obj: Mapping[str, Any], kind: Kind) -> bool:
    """Whether the object's last applied configuration (kubectl's) carries the allow annotation
    where we would remove it: then the user wrote it, not the webhook."""
    raw = _annotations(obj, ("metadata", "annotations")).get(LAST_APPLIED)
    if raw is None:
        return False
    try:
        applied = json.loads(raw)
    except json.JSONDecodeError:
        return False
    return isinstance(applied, Mapping) and ALLOW_POD_BRIDGE_MIGRATION in _annotations(applied, _ANNOTATIONS_AT[kind])


@dataclass(frozen=True)
class Options:
    keys: AnnotationKeys
    remove_allow: bool
    sidecar_image: str | None = None


def _hook_ops(change: Change, ann: Mapping[str, str], base: Sequence[str], opts: Options) -> bool:
    """Ops for our hook entry; True when the object had one."""
    raw = ann.get(HOOK_SIDECARS)
    if raw is None:
        return False
    path = pointer(*base, HOOK_SIDECARS)
    try:
        entries = parse_sidecars(raw)
    except MalformedSidecarsError as exc:
        change.lines.append(f"= keep {HOOK_SIDECARS}: {exc}, so no entry of ours can be told from the user's")
        return False
    kept = [e for e in entries if not is_our_entry(e, opts.sidecar_image)]
    if len(kept) == len(entries):
        return False
    change.ops.append({"op": "test", "path": path, "value": raw})
    if kept:
        value = json.dumps(kept, separators=(",", ":"))
        change.ops.append({"op": "replace", "path": path, "value": value})
        change.lines.append(f"- {HOOK_SIDECARS}: our entry removed, the user's {len(kept)} kept: {value}")
    else:
        change.ops.append({"op": "remove", "path": path})
        change.lines.append(f"- remove {HOOK_SIDECARS} (our entry was its only one)")
    return True


def _record_ops(change: Change, ann: Mapping[str, str], base: Sequence[str], opts: Options) -> bool:
    found = False
    for key in record_keys(opts.keys):
        if key in ann:
            path = pointer(*base, key)
            change.ops += [{"op": "test", "path": path, "value": ann[key]}, {"op": "remove", "path": path}]
            change.lines.append(f"- remove {key}: {ann[key]}")
            found = True
    return found


def _allow_ops(change: Change, ann: Mapping[str, str], base: Sequence[str], opts: Options, *, users: bool) -> None:
    if ALLOW_POD_BRIDGE_MIGRATION not in ann:
        return
    if users:
        change.lines.append(
            f"= keep {ALLOW_POD_BRIDGE_MIGRATION}: its last applied configuration has it, so the user wrote it"
        )
        return
    if not opts.remove_allow:
        change.lines.append(f"= keep {ALLOW_POD_BRIDGE_MIGRATION} (--keep-allow)")
        change.warnings.append(
            f"WARNING: {change.who} keeps {ALLOW_POD_BRIDGE_MIGRATION} with no fixer left: KubeVirt will "
            "live-migrate it (a node drain included) and its guest keeps its old IP address on the new node"
        )
        return
    path = pointer(*base, ALLOW_POD_BRIDGE_MIGRATION)
    value = ann[ALLOW_POD_BRIDGE_MIGRATION]
    change.ops += [{"op": "test", "path": path, "value": value}, {"op": "remove", "path": path}]
    change.lines.append(
        f"- remove {ALLOW_POD_BRIDGE_MIGRATION}: KubeVirt refuses to live-migrate it again (bridge on the pod "
        "network), as before the add-on"
    )


def _mac_note(change: Change, ann: Mapping[str, str], keys: AnnotationKeys) -> None:
    raw = ann.get(keys.macs)
    try:
        macs = parse_macs(raw) if raw is not None else {}
    except ValueError:
        macs = {}
    if macs:
        listed = ", ".join(f"{iface}={mac}" for iface, mac in sorted(macs.items()))
        change.lines.append(f"= keep the MACs in the spec ({listed}): removing one changes the guest's NIC")


def plan(obj: Mapping[str, Any], kind: Kind, opts: Options, *, user_allow: bool = False) -> Change | None:
    """The change for one VM or VMI, or None when it carries nothing of ours. ``user_allow``: the
    allow annotation is known to be the user's from elsewhere (a VMI's VM)."""
    metadata = obj.get("metadata")
    meta = metadata if isinstance(metadata, Mapping) else {}
    change = Change(kind, str(meta.get("namespace", "")), str(meta.get("name", "")))
    base = _ANNOTATIONS_AT[kind]
    ann = _annotations(obj, base)
    hook = _hook_ops(change, ann, base, opts)
    records = _record_ops(change, ann, base, opts)
    if not (hook or records):
        return None  # nothing of ours: its allow annotation, if any, is not ours to take
    change.user_allow = user_allow or user_wrote_allow(obj, kind)
    _allow_ops(change, ann, base, opts, users=change.user_allow)
    _mac_note(change, ann, opts.keys)
    if kind == "VirtualMachineInstance":
        change.lines.append(
            "= it runs on: its launcher pod keeps the fixer and annotations it started with; the VMI's next "
            "pod (a migration target, a restart) is made from what is left"
        )
    return change


# --- the API ---


class Api:
    """List and JSON-patch VMs and VMIs (httpx, sync)."""

    def __init__(self, target: ApiTarget, *, timeout_s: float = 10.0) -> None:
        self._target = target
        self._client = httpx.Client(base_url=target.server, verify=target.ssl_context, timeout=timeout_s)

    def _headers(self) -> dict[str, str]:
        token = self._target.token
        if self._target.token_file is not None:
            token = self._target.token_file.read_text().strip()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _path(self, kind: Kind, namespace: str | None, name: str | None = None) -> str:
        path = "/apis/kubevirt.io/v1"
        if namespace is not None:
            path += "/namespaces/" + quote(namespace, safe="")
        path += "/" + _RESOURCES[kind]
        return path + ("/" + quote(name, safe="") if name is not None else "")

    def list(self, kind: Kind, namespace: str | None) -> Iterator[dict[str, Any]]:
        params: dict[str, str] = {"limit": "500"}
        while True:
            resp = self._client.get(self._path(kind, namespace), params=params, headers=self._headers())
            if resp.status_code != 200:
                raise KubeError(f"list {_RESOURCES[kind]}: HTTP {resp.status_code}: {resp.text[:300]}")
            body = resp.json()
            yield from body.get("items") or []
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return
            params["continue"] = token

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        resp = self._client.get(self._path(kind, namespace, name), headers=self._headers())
        if resp.status_code != 200:
            raise KubeError(f"get {_RESOURCES[kind]} {namespace}/{name}: HTTP {resp.status_code}")
        obj: dict[str, Any] = resp.json()
        return obj

    def patch(self, change: Change) -> tuple[int, dict[str, Any]]:
        """The JSON patch: the HTTP status (422 when a ``test`` failed: the object changed meanwhile)
        and the object as stored."""
        headers = {**self._headers(), "Content-Type": "application/json-patch+json"}
        path = self._path(change.kind, change.namespace, change.name)
        resp = self._client.patch(path, content=json.dumps(change.ops), headers=headers)
        if resp.status_code not in (200, 422):
            raise KubeError(f"patch {change.who}: HTTP {resp.status_code}: {resp.text[:300]}")
        stored: dict[str, Any] = resp.json() if resp.status_code == 200 else {}
        return resp.status_code, stored


# --- the command ---


def _target(kubeconfig: str | None) -> ApiTarget:
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    if path is None and (Path.home() / ".kube" / "config").exists() and not (SA_DIR / "token").exists():
        path = str(Path.home() / ".kube" / "config")
    return target_from_kubeconfig(Path(path)) if path else target_in_cluster()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl bridge-migration cleanup",
        description="Remove what bridge-migration wrote onto VirtualMachines (their templates) and running VMIs: "
        "our hook sidecar entry, our records, and the allow annotation (or keep it, with a warning). Pinned MACs "
        "stay in the spec.",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the objects and changes, change nothing")
    allow = parser.add_mutually_exclusive_group()
    allow.add_argument(
        "--remove-allow",
        dest="remove_allow",
        action="store_true",
        default=True,
        help=f"remove {ALLOW_POD_BRIDGE_MIGRATION} where we added it (default)",
    )
    allow.add_argument(
        "--keep-allow",
        dest="remove_allow",
        action="store_false",
        help="keep it: the VMs stay migratable with no fixer (a warning per VM)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-n", "--namespace", help="this namespace only (default: the kubeconfig's, else default)")
    where.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    parser.add_argument(
        ANNOTATION_PREFIX_FLAG,
        default=DEFAULT_PREFIX,
        dest="prefix",
        help=f"the webhook's annotation prefix (default {DEFAULT_PREFIX})",
    )
    parser.add_argument("--sidecar-image", help="also take hook entries of this image's repository (any tag) as ours")
    return parser


def _default_namespace(kubeconfig: str | None) -> str:
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or str(Path.home() / ".kube/config")
    try:
        import yaml

        doc = yaml.safe_load(Path(path).read_text())
        ctx = {c["name"]: c["context"] for c in doc.get("contexts", [])}[doc["current-context"]]
        return str(ctx.get("namespace") or "default")
    except (OSError, KeyError, TypeError, AttributeError, ValueError):
        ns_file = SA_DIR / "namespace"
        return ns_file.read_text().strip() if ns_file.exists() else "default"


def _owner_vm(vmi: Mapping[str, Any]) -> tuple[str, str] | None:
    meta = vmi.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("kind") == "VirtualMachine" and ref.get("controller") is True:
            return str(meta.get("namespace")), str(ref.get("name"))
    return None


def plan_all(api: Api, namespace: str | None, opts: Options) -> list[Change]:
    """Every change, VMs first, then VMIs (a VMI of a VM whose allow annotation is the user's keeps its own)."""
    out: list[Change] = []
    users_vms: set[tuple[str, str]] = set()
    for vm in api.list("VirtualMachine", namespace):
        meta = vm.get("metadata") or {}
        if user_wrote_allow(vm, "VirtualMachine"):
            users_vms.add((str(meta.get("namespace")), str(meta.get("name"))))
        if (change := plan(vm, "VirtualMachine", opts)) is not None:
            out.append(change)
    for vmi in api.list("VirtualMachineInstance", namespace):
        change = plan(vmi, "VirtualMachineInstance", opts, user_allow=_owner_vm(vmi) in users_vms)
        if change is not None:
            out.append(change)
    return out


PUT_BACK: Final = (
    "the webhook put them back: it still serves this object's UPDATEs. Run the cleanup after `helm uninstall`, "
    "or let the chart run it (cleanup.onUninstall=true: its account is exempt from the webhook)"
)


def apply_change(api: Api, change: Change, opts: Options, *, attempts: int = 3) -> str | None:
    """Patch; when a ``test`` failed (the object changed since it was read), read it and plan again.
    None when done, else why not."""
    current: Change | None = change
    for _ in range(attempts):
        if current is None or not current.ops:
            return None
        status, stored = api.patch(current)
        if status == 200:
            # A mutating webhook (ours, still installed) may have written it all back in the same UPDATE.
            again = plan(stored, change.kind, opts, user_allow=change.user_allow)
            return PUT_BACK if again is not None else None
        current = plan(
            api.get(change.kind, change.namespace, change.name), change.kind, opts, user_allow=change.user_allow
        )
    return f"it kept changing under the cleanup ({attempts} attempts)"


def _print_change(change: Change, out: Callable[[str], None]) -> None:
    out(f"{change.who}:")
    for line in change.lines:
        out(f"  {line}")


def run(api: Api, namespace: str | None, opts: Options, *, dry_run: bool, out: Callable[[str], None]) -> int:
    changes = plan_all(api, namespace, opts)
    where = "all namespaces" if namespace is None else f"namespace {namespace}"
    head = "dry run, nothing is changed" if dry_run else "changing"
    out(f"bridge-migration cleanup ({head}): {len(changes)} object(s) in {where} carry what the add-on wrote")
    for change in changes:
        _print_change(change, out)
    for change in changes:
        for warning in change.warnings:
            print(warning, file=sys.stderr)
    if dry_run:
        return 0
    failed = 0
    for change in changes:
        try:
            why = apply_change(api, change, opts)
        except (KubeError, httpx.HTTPError) as exc:
            why = str(exc)
        if why is not None:
            failed += 1
            print(f"error: {change.who} not cleaned up: {why}", file=sys.stderr)
    out(f"done: {len(changes) - failed} object(s) cleaned up, {failed} failed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        opts = Options(AnnotationKeys(args.prefix), remove_allow=args.remove_allow, sidecar_image=args.sidecar_image)
        api = Api(_target(args.kubeconfig))
    except (KubeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    namespace = None if args.all_namespaces else (args.namespace or _default_namespace(args.kubeconfig))
    try:
        return run(api, namespace, opts, dry_run=args.dry_run, out=print)
    except (KubeError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
