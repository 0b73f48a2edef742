"""What the pod's annotations say: opt-out, MAC policy, expected MACs and KubeVirt's version.

The downward API writes one `key="value"` line per annotation, the value quoted the way
Go's strconv.Quote does. The file is re-read for every fixup because the kubelet updates
it in place. Anything malformed is logged once and the defaults apply.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge_migration_contract import (
    DEFAULT_KEYS,
    DEFAULT_MAC_POLICY,
    DEFAULT_NIC_REFRESH,
    AnnotationKeys,
    KubevirtFamily,
    MacPolicy,
    NicRefresh,
    SkipMultusBridges,
    kubevirt_family,
    parse_interface_names,
    parse_mac_policy,
    parse_macs,
    parse_nic_refresh,
    parse_skip_multus_bridges,
)

log = logging.getLogger(__name__)
_already_logged: set[str] = set()


def _warn_once(message: str) -> None:
    # A broken file stays broken between fixups; one log line says it, not one per read.
    if message not in _already_logged:
        _already_logged.add(message)
        log.warning("%s", message)


@dataclass(frozen=True)
class PodInfo:
    enabled: bool = True
    policy: MacPolicy = DEFAULT_MAC_POLICY
    macs: dict[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    # From the kubevirt-version annotation the webhook puts on each launcher pod; None: absent.
    kubevirt_family: KubevirtFamily | None = None
    # link: a NIC whose MAC stays gets a link down/up; reattach: it is detached and attached
    # again with the same MAC, for guests that ignore a short carrier loss (NetworkManager).
    nic_refresh: NicRefresh = DEFAULT_NIC_REFRESH
    # Bridge interfaces on Multus networks the VMI opts out of (skip-multus-bridges): "*" or names.
    skip_multus_bridges: SkipMultusBridges = frozenset()
    # The interfaces the webhook recorded for a fixer that sees no VMI (inject); None: no record.
    interfaces: frozenset[str] | None = None


def _unquote(raw: str) -> str:
    raw = raw.strip()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        # Go escapes such as \x41 or \a are not JSON but are valid Python literals.
        value = ast.literal_eval(raw)
    if not isinstance(value, str):
        raise ValueError("value is not a quoted string")
    return value


def parse_annotations_file(text: str) -> dict[str, str]:
    """Parse the downward-API `annotations` file; raises ValueError on a malformed line."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, raw = line.partition("=")
        if not sep or not key:
            raise ValueError(f'line {number}: expected key="value"')
        try:
            out[key] = _unquote(raw)
        except (ValueError, SyntaxError) as exc:
            raise ValueError(f"line {number}: {exc}") from exc
    return out


def from_annotations(annotations: Mapping[str, str], keys: AnnotationKeys = DEFAULT_KEYS) -> PodInfo:
    problems: list[str] = []
    enabled = annotations.get(keys.enabled, "true").strip().lower() != "false"
    policy: MacPolicy = DEFAULT_MAC_POLICY
    if keys.mac_policy in annotations:
        try:
            policy = parse_mac_policy(annotations[keys.mac_policy].strip())
        except ValueError as exc:
            problems.append(f"{keys.mac_policy}: {exc}")
    macs: dict[str, str] = {}
    if keys.macs in annotations:
        try:
            macs = parse_macs(annotations[keys.macs])
        except ValueError as exc:
            problems.append(f"{keys.macs}: {exc}")
    family: KubevirtFamily | None = None
    if keys.kubevirt_version in annotations:
        try:
            family = kubevirt_family(annotations[keys.kubevirt_version])
        except ValueError as exc:
            problems.append(f"{keys.kubevirt_version}: {exc}")
    refresh: NicRefresh = DEFAULT_NIC_REFRESH
    if keys.nic_refresh in annotations:
        try:
            refresh = parse_nic_refresh(annotations[keys.nic_refresh].strip())
        except ValueError as exc:
            problems.append(f"{keys.nic_refresh}: {exc}")
    for problem in problems:
        _warn_once(f"ignoring annotation {problem}")
    return PodInfo(
        enabled=enabled,
        policy=policy,
        macs=macs,
        problems=tuple(problems),
        kubevirt_family=family,
        nic_refresh=refresh,
        skip_multus_bridges=parse_skip_multus_bridges(annotations.get(keys.skip_multus_bridges)),
        interfaces=parse_interface_names(annotations.get(keys.interfaces)),
    )


def vmi_annotations(vmi: Mapping[str, Any] | None) -> dict[str, str]:
    meta = vmi.get("metadata") if isinstance(vmi, Mapping) else None
    raw = meta.get("annotations") if isinstance(meta, Mapping) else None
    if not isinstance(raw, Mapping):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}


def load(path: Path | None, *, vmi: Mapping[str, Any] | None, keys: AnnotationKeys = DEFAULT_KEYS) -> PodInfo:
    """Pod annotations from the file; the VMI's own annotations when there is no file (or no
    path: the node agent has the VMI only)."""
    if path is None:
        return from_annotations(vmi_annotations(vmi), keys)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return from_annotations(vmi_annotations(vmi), keys)
    except OSError as exc:
        _warn_once(f"cannot read {path}: {exc}; using defaults")
        return PodInfo(problems=(str(exc),))
    try:
        annotations = parse_annotations_file(text)
    except ValueError as exc:
        _warn_once(f"malformed annotations file {path}: {exc}; using defaults")
        return PodInfo(problems=(str(exc),))
    return from_annotations(annotations, keys)
