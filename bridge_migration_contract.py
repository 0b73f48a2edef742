"""The contract shared by the webhook and the sidecar.

Annotation keys, MAC policies (``keep`` and ``follow-pod`` are aliases: see ``MacPolicy``),
delivery modes and their parser, the fixer's command line as the webhook writes it, fixup
actions, the rule for which VMI interfaces this project looks after, and the shape of both
services' log lines (``--log-format``). Both services import this module; it imports nothing
but the standard library so the sidecar never pulls in a web framework through it, and the
webhook never pulls in libvirt.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict, get_args

# --- KubeVirt facts (names carried over from KubeVirt's API, not ours to change) ---
ALLOW_POD_BRIDGE_MIGRATION: Final = "kubevirt.io/allow-pod-bridge-network-live-migration"
HOOK_SIDECARS: Final = "hooks.kubevirt.io/hookSidecars"
MIGRATION_JOB_UID_LABEL: Final = "kubevirt.io/migrationJobUID"
MIGRATION_JOB_NAME_ANNOTATION: Final = "kubevirt.io/migrationJobName"
# virt-launcher pods carry the VMI's name under this annotation.
DOMAIN_ANNOTATION: Final = "kubevirt.io/domain"
LIBVIRT_RUNTIME_VOLUME: Final = "libvirt-runtime"
LIBVIRT_RUNTIME_PATH: Final = "/var/run/libvirt"
HOOK_SOCKET_DIR: Final = "/var/run/kubevirt-hooks"
# virt-launcher names each domain device alias "ua-<interface name>" (user alias).
DOMAIN_ALIAS_PREFIX: Final = "ua-"

# --- Our own names (stable; the prefix is configurable) ---
DEFAULT_PREFIX: Final = "bridge-migration.kubevirt.io/"
PODINFO_VOLUME: Final = "bridge-migration-podinfo"
PODINFO_DIR: Final = "/etc/bridge-migration/podinfo"
PODINFO_ANNOTATIONS_FILE: Final = "annotations"
SIDECAR_DEFAULT_PORT: Final = 8186

# `pin` (the default) has the webhook write a MAC into the spec of each interface without one.
# `keep` and `follow-pod` are aliases: under both the webhook pins nothing and the sidecar moves
# the NIC to the one MAC KubeVirt's DHCP server answers, which that server's own rule picks
# whatever the name says (docs/kubevirt-facts.md D2): a spec MAC stays; without one, v1.5-v1.8
# answers the target pod's MAC (a reattach: the MAC follows the pod), v1.9+ the VMI status MAC,
# the guest's own (a link refresh: the MAC is kept). The name only words the note the sidecar
# adds to the fixup's reason when the rule went against it ("keep is not possible", "follow-pod
# is not possible"). Both names stay accepted: VMIs and VM templates carry them.
MacPolicy = Literal["pin", "keep", "follow-pod"]
MAC_POLICIES: Final[tuple[MacPolicy, ...]] = get_args(MacPolicy)
DEFAULT_MAC_POLICY: Final[MacPolicy] = "pin"

# KubeVirt's DHCP server picks the MAC it answers by a rule that changed in v1.9
# (docs/kubevirt-facts.md D2): the sidecar follows the rule of the version that runs.
KubevirtFamily = Literal["v1.5-v1.8", "v1.9+"]
NEWEST_FAMILY: Final[KubevirtFamily] = "v1.9+"
_VERSION_RE: Final = re.compile(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+][0-9A-Za-z.+-]*)?")


def kubevirt_family(version: str) -> KubevirtFamily:
    """``v1.8.4`` -> ``v1.5-v1.8``; ``v1.9.0`` or ``v1.10.0-rc.1`` -> ``v1.9+``; ValueError else."""
    m = _VERSION_RE.fullmatch(version.strip())
    if m is None:
        raise ValueError(f"not a KubeVirt version (vMAJOR.MINOR[.PATCH]): {version!r}")
    return "v1.9+" if (int(m[1]), int(m[2])) >= (1, 9) else "v1.5-v1.8"


# How the fixer reaches a VMI's launcher pod: a KubeVirt hook sidecar (needs the Sidecar gate),
# a container the pod webhook adds itself, or a node agent (no per-VM container). One family of
# names, each written once: the per-VM fixer process runs in the first two (its own --delivery),
# the webhook's --delivery also takes "auto" (resolved per admission from the Sidecar gate).
FixerDelivery = Literal["hook", "inject"]
FIXER_DELIVERIES: Final[tuple[FixerDelivery, ...]] = get_args(FixerDelivery)
# The fixer's own --delivery when none is given: the command lines the webhook writes rely on it.
DEFAULT_FIXER_DELIVERY: Final[FixerDelivery] = "hook"
Delivery = Literal[FixerDelivery, "node"]
DELIVERIES: Final[tuple[Delivery, ...]] = get_args(Delivery)
DeliveryChoice = Literal["auto", Delivery]
DELIVERY_CHOICES: Final[tuple[DeliveryChoice, ...]] = get_args(DeliveryChoice)


def parse_delivery(value: object) -> Delivery | None:
    """A ``<prefix>delivery`` annotation's value, surrounding blanks ignored; None for anything
    else, absent included. Never raises: admission must not fail on it, and what None means
    (resolve from the flag, warn, or "no inject/node record") is each reader's to say."""
    text = value.strip() if isinstance(value, str) else None
    return next((d for d in DELIVERIES if d == text), None)


# The per-VM fixer's command line is a contract too: the webhook writes it (the hook sidecar entry
# and the injected container) and the sidecar's argument parser reads it; tests/webhook/
# test_fixer_command.py parses what fixer_args builds with that parser.
SERVE_SUBCOMMAND: Final = "serve"
FIXER_COMMAND: Final[tuple[str, ...]] = ("python", "-m", "sidecar", SERVE_SUBCOMMAND)
DELIVERY_FLAG: Final = "--delivery"
ANNOTATION_PREFIX_FLAG: Final = "--annotation-prefix"
# Both services' log lines: text (the classic `time LEVEL logger: message`) or JSON (LogFormatter).
LogFormat = Literal["text", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = get_args(LogFormat)
DEFAULT_LOG_FORMAT: Final[LogFormat] = "text"
LOG_FORMAT_FLAG: Final = "--log-format"


def fixer_args(
    *, delivery: FixerDelivery, prefix: str = DEFAULT_PREFIX, log_format: LogFormat = DEFAULT_LOG_FORMAT
) -> list[str]:
    """The arguments after :data:`FIXER_COMMAND` that start the fixer for ``delivery``, ``prefix``
    and ``log_format``.

    A flag whose value is the fixer's own default is left out: the hook sidecar entry is compared
    with what a VMI already carries (webhook/hook_sidecars.py), and a longer spelling of the same
    command would make every VMI admitted by an earlier release look out of date."""
    args: list[str] = []
    if delivery != DEFAULT_FIXER_DELIVERY:
        args += [DELIVERY_FLAG, delivery]
    if prefix != DEFAULT_PREFIX:
        # The fixer reads our keys from the pod's annotations: it must use the webhook's prefix.
        args += [ANNOTATION_PREFIX_FLAG, prefix]
    if log_format != DEFAULT_LOG_FORMAT:
        args += [LOG_FORMAT_FLAG, log_format]
    return args


# The name of the container the pod webhook adds in inject mode.
INJECTED_CONTAINER: Final = "bridge-migration"

# macvtap: the binding plugin (``binding: {name: macvtap}``) on a Multus network, never the core binding.
Binding = Literal["bridge", "macvtap"]
FixupAction = Literal["link-refresh", "reattach", "none"]


@dataclass(frozen=True)
class AnnotationKeys:
    """Our annotation keys under one prefix (e.g. ``bridge-migration.kubevirt.io/``)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix.endswith("/") or self.prefix.count("/") != 1 or len(self.prefix) < 3:
            raise ValueError(f"annotation prefix must look like 'example.com/', got {self.prefix!r}")

    @property
    def enabled(self) -> str:
        return self.prefix + "enabled"

    @property
    def mac_policy(self) -> str:
        return self.prefix + "mac-policy"

    @property
    def macs(self) -> str:
        return self.prefix + "macs"

    @property
    def nic_refresh(self) -> str:
        """On a VMI (copied to its pod): how a NIC whose MAC stays is refreshed: ``auto`` (the default),
        ``link`` or ``reattach``."""
        return self.prefix + "nic-refresh"

    @property
    def kubevirt_version(self) -> str:
        """On a virt-launcher pod: the KubeVirt version the webhook saw when the pod was made."""
        return self.prefix + "kubevirt-version"

    @property
    def skip_multus_bridges(self) -> str:
        """On a VMI: bridge interfaces on Multus networks we leave alone, ``*`` or a list of names."""
        return self.prefix + "skip-multus-bridges"

    @property
    def delivery(self) -> str:
        """On a VMI (copied to its pod): how the fixer reaches the pod when it is not a hook sidecar,
        ``inject`` (the pod webhook adds our container) or ``node`` (a node agent); absent: hook."""
        return self.prefix + "delivery"

    @property
    def interfaces(self) -> str:
        """On a VMI (copied to its pod): the interfaces the fixer looks after, comma-separated names.

        Written at CREATE for delivery ``inject``, whose fixer sees no VMI: without it the fixer
        would guess from the domain, where a masquerade NIC or a tap-based binding plugin is a
        ``type='ethernet'`` tap just like a bridge NIC."""
        return self.prefix + "interfaces"

    @property
    def force(self) -> str:
        """On a VirtualMachineInstanceMigration: migrate even when strict validation would refuse."""
        return self.prefix + "force"


DEFAULT_KEYS: Final = AnnotationKeys()

_MAC_RE: Final = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_DOT_MAC_RE: Final = re.compile(r"[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}")


def normalize_mac(value: str) -> str:
    """Lower-case, colon-separated MAC; raises ValueError for anything else.

    Accepts the three 6-byte forms KubeVirt's virt-api accepts (Go's ``net.ParseMAC``; facts K7):
    ``02:00:00:00:00:01``, ``02-00-00-00-00-01`` and ``0200.0000.0001``."""
    mac = value.strip().lower().replace("-", ":")
    if _DOT_MAC_RE.fullmatch(mac):
        digits = mac.replace(".", "")
        mac = ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    if not _MAC_RE.match(mac):
        raise ValueError(f"not a MAC address: {value!r}")
    return mac


# auto: a link refresh, checked through the guest agent and escalated to a reattach when the guest
# did not renew (sidecar/fixer/closedloop.py); link: a link refresh only, still checked; reattach:
# a detach and attach with the same MAC from the start.
NicRefresh = Literal["auto", "link", "reattach"]
NIC_REFRESHES: Final[tuple[NicRefresh, ...]] = ("auto", "link", "reattach")
DEFAULT_NIC_REFRESH: Final[NicRefresh] = "auto"


def parse_nic_refresh(value: object) -> NicRefresh:
    for mode in NIC_REFRESHES:
        if value == mode:
            return mode
    raise ValueError(f"NIC refresh must be one of {', '.join(NIC_REFRESHES)}, got {value!r}")


def parse_mac_policy(value: object) -> MacPolicy:
    for policy in MAC_POLICIES:
        if value == policy:
            return policy
    raise ValueError(f"MAC policy must be one of {', '.join(MAC_POLICIES)}, got {value!r}")


def parse_macs(value: str) -> dict[str, str]:
    """Parse the ``macs`` annotation: a JSON object of interface name to MAC."""
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object of interface name to MAC")
    out: dict[str, str] = {}
    for name, mac in data.items():
        if not isinstance(mac, str):
            raise ValueError(f"MAC for interface {name!r} is not a string")
        out[name] = normalize_mac(mac)
    return out


def dump_macs(macs: Mapping[str, str]) -> str:
    """Canonical form of the ``macs`` annotation (sorted keys, so re-admission compares equal)."""
    return json.dumps(dict(sorted(macs.items())), separators=(",", ":"))


class ManagedInterface(TypedDict):
    """A VMI interface this project looks after."""

    name: str
    index: int  # position in spec.domain.devices.interfaces
    binding: Binding
    network: Literal["pod", "multus"]
    mac: str | None  # spec macAddress, normalized, when the spec has one


def _is_macvtap_plugin(iface: Mapping[str, Any]) -> bool:
    binding = iface.get("binding")
    return isinstance(binding, Mapping) and binding.get("name") == "macvtap"


def _binding_of(iface: Mapping[str, Any], network: str) -> Binding | None:
    """The binding we look after on ``network`` (``pod`` or ``multus``), None for any other.

    Only the macvtap binding plugin on a Multus network counts as macvtap: the core ``macvtap: {}``
    binding is discontinued (KubeVirt v1.5+ refuses new VMIs with it, facts V1) and the plugin is
    for Multus secondary networks only (V2); :func:`macvtap_left_alone` names the others."""
    if "bridge" in iface:
        return "bridge"
    if _is_macvtap_plugin(iface) and network == "multus":
        return "macvtap"
    return None


# Why a macvtap interface is not ours: ``core`` is the discontinued ``macvtap: {}`` binding (facts
# V1), ``pod-network`` the binding plugin on the pod network, which KubeVirt serves on Multus
# secondary networks only (V2, V3). The webhook tells the user about each.
MacvtapLeftAlone = Literal["core", "pod-network"]


SkipMultusBridges = frozenset[str] | Literal["*"]


def parse_skip_multus_bridges(value: str | None) -> SkipMultusBridges:
    """The ``skip-multus-bridges`` annotation: ``*`` (every bridge interface on a Multus network)
    or comma-separated VMI interface names; unset or blank skips none. Never raises: a name that
    matches no such interface simply skips nothing (the webhook warns about it)."""
    if value is None:
        return frozenset()
    text = value.strip()
    if text == "*":
        return "*"
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def dump_interface_names(names: Iterable[str]) -> str:
    """The ``interfaces`` annotation's value: the names in the VMI's order, comma-separated."""
    return ",".join(names)


def parse_interface_names(value: str | None) -> frozenset[str] | None:
    """The ``interfaces`` annotation: the names it lists; None when absent (an older record or
    a hook or node fixer, which know the VMI). Never raises."""
    if value is None:
        return None
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def _networks(spec: Mapping[str, Any]) -> dict[str, Literal["pod", "multus"]]:
    """VMI network name -> its kind, for the pod network and Multus networks (others left out)."""
    out: dict[str, Literal["pod", "multus"]] = {}
    raw_networks = spec.get("networks")
    for net in raw_networks if isinstance(raw_networks, list) else []:
        if not isinstance(net, Mapping) or not isinstance(net.get("name"), str):
            continue
        if "pod" in net:
            out[net["name"]] = "pod"
        elif "multus" in net:
            out[net["name"]] = "multus"
    return out


def _named_interfaces(spec: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """``(index, interface)`` of every spec interface that is an object with a string name."""
    domain = spec.get("domain")
    devices = domain.get("devices") if isinstance(domain, Mapping) else None
    ifaces = devices.get("interfaces") if isinstance(devices, Mapping) else None
    if not isinstance(ifaces, list):
        return []
    return [
        (index, iface)
        for index, iface in enumerate(ifaces)
        if isinstance(iface, Mapping) and isinstance(iface.get("name"), str)
    ]


def _spec_mac(iface: Mapping[str, Any]) -> str | None:
    raw_mac = iface.get("macAddress")
    if not isinstance(raw_mac, str) or not raw_mac:
        return None
    try:
        return normalize_mac(raw_mac)
    except ValueError:
        return None


def managed_interfaces(
    spec: Mapping[str, Any], skip_multus_bridges: SkipMultusBridges = frozenset()
) -> list[ManagedInterface]:
    """Interfaces of a VMI spec that lose their network on live migration without us.

    Bridge on the pod network; the macvtap binding plugin (``binding: {name: macvtap}``) on a
    Multus network; and bridge on a Multus network, unless it is in ``skip_multus_bridges``. A
    secondary network's addresses need not follow the VM across nodes (a per-node subnet, as
    flannel through Multus gives), and even where they do, the guest only renews its lease and the
    network relearns where its MAC now is when the link is refreshed; a workload that must not see
    that carrier flap opts out by name or with ``*``. The core ``macvtap: {}`` binding and the
    plugin on the pod network are not ours (:func:`macvtap_left_alone`).
    Malformed entries are skipped rather than raised: admission must not fail on them.
    """
    networks = _networks(spec)
    out: list[ManagedInterface] = []
    for index, iface in _named_interfaces(spec):
        network = networks.get(iface["name"])
        binding = _binding_of(iface, network) if network is not None else None
        if binding is None or network is None:
            continue
        if (
            binding == "bridge"
            and network == "multus"
            and (skip_multus_bridges == "*" or iface["name"] in skip_multus_bridges)
        ):
            continue
        out.append(
            ManagedInterface(name=iface["name"], index=index, binding=binding, network=network, mac=_spec_mac(iface))
        )
    return out


def macvtap_left_alone(spec: Mapping[str, Any]) -> list[tuple[str, MacvtapLeftAlone]]:
    """The macvtap interfaces of a VMI spec we do not look after, and why, in the spec's order:
    every core ``macvtap: {}`` interface (on any network, or none), and the binding plugin on the
    pod network."""
    networks = _networks(spec)
    out: list[tuple[str, MacvtapLeftAlone]] = []
    for _, iface in _named_interfaces(spec):
        if "bridge" in iface:
            continue  # a bridge interface is what it says, whatever else it carries
        if "macvtap" in iface:
            out.append((iface["name"], "core"))
        elif _is_macvtap_plugin(iface) and networks.get(iface["name"]) == "pod":
            out.append((iface["name"], "pod-network"))
    return out


def vmi_managed_interfaces(vmi: Mapping[str, Any], keys: AnnotationKeys = DEFAULT_KEYS) -> list[ManagedInterface]:
    """:func:`managed_interfaces` of a whole VMI (or VM template), its opt-out annotation applied."""
    spec = vmi.get("spec")
    metadata = vmi.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    raw = annotations.get(keys.skip_multus_bridges) if isinstance(annotations, Mapping) else None
    skip = parse_skip_multus_bridges(raw if isinstance(raw, str) else None)
    return managed_interfaces(spec if isinstance(spec, Mapping) else {}, skip)


def multus_bridge_names(spec: Mapping[str, Any]) -> list[str]:
    """Names of the bridge interfaces on Multus networks, opted out or not (for the webhook's warning)."""
    return [i["name"] for i in managed_interfaces(spec) if i["binding"] == "bridge" and i["network"] == "multus"]


def domain_alias(interface_name: str) -> str:
    """The libvirt device alias virt-launcher gives a VMI interface."""
    return DOMAIN_ALIAS_PREFIX + interface_name


# --- Log lines (both services; ``--log-format``) ---
# JSON lines carry the keys KubeVirt's own components write (docs/kubevirt-facts.md O1): timestamp,
# level, component, pos, msg and, for an object, namespace, name, kind, uid; ours add logger (the
# Python logger) and the fields a call site gives (log_fields).

# The one LogRecord attribute a line's fields travel in: a record's own attributes ("name",
# "msg", ...) cannot be set through ``extra``, and KubeVirt's object fields include "name".
_FIELDS_ATTR: Final = "bm_fields"
# Python's level names as KubeVirt spells its own (lower case; it has fatal where Python has CRITICAL).
_LEVEL_NAMES: Final = {"DEBUG": "debug", "INFO": "info", "WARNING": "warning", "ERROR": "error", "CRITICAL": "fatal"}
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A text value written bare after ``key=``; any other is written as a JSON string (quoted, escaped).
_BARE_VALUE: Final = re.compile(r"[\w.:/@+,~-]+")


def parse_log_format(value: object) -> LogFormat:
    for fmt in LOG_FORMATS:
        if value == fmt:
            return fmt
    raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}, got {value!r}")


def log_fields(**fields: object) -> dict[str, Any]:
    """``extra=`` for a logging call whose line carries ``fields`` (None values left out): JSON
    keys in json mode, ``key=value`` after the message in text mode."""
    return {_FIELDS_ATTR: {key: value for key, value in fields.items() if value is not None}}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record was logged with (log_fields); empty for any other record."""
    fields = getattr(record, _FIELDS_ATTR, None)
    return fields if isinstance(fields, dict) else {}


def _utc_timestamp(created: float) -> str:
    """RFC 3339 in UTC with microseconds, as KubeVirt writes its ``timestamp``."""
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1e6):06d}Z"


def _text_value(value: object) -> str:
    if isinstance(value, str) and _BARE_VALUE.fullmatch(value):
        return value
    return json.dumps(value, default=str, separators=(",", ":"))


class LogFormatter(logging.Formatter):
    """One line per record (a traceback follows it in text mode). ``json``: one object per line,
    KubeVirt's keys first, then ``logger``, then the record's fields (never over those keys), and
    for an exception ``reason`` (``Type: message``, unless a field says why) and ``traceback``.
    ``text``: `time LEVEL logger: message key=value ...`."""

    def __init__(self, fmt: LogFormat, *, component: str) -> None:
        super().__init__(_TEXT_FORMAT)
        self.as_json = fmt == "json"
        self.component = component

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        fields = record_fields(record)
        return " ".join([line, *(f"{key}={_text_value(value)}" for key, value in fields.items())])

    def format(self, record: logging.LogRecord) -> str:
        if not self.as_json:
            return super().format(record)
        doc: dict[str, Any] = {
            "timestamp": _utc_timestamp(record.created),
            "level": _LEVEL_NAMES.get(record.levelname, record.levelname.lower()),
            "component": self.component,
            "logger": record.name,
            "pos": f"{record.filename}:{record.lineno}",
            "msg": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            doc.setdefault(key, value)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc.setdefault("reason", f"{type(exc).__name__}: {exc}")
            doc["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


def configure_logging(level: str, fmt: LogFormat, *, component: str) -> None:
    """The root logger of a service: one handler on stderr writing ``fmt`` lines. As
    ``logging.basicConfig``, which it calls: nothing changes when the root has a handler already."""
    handler = logging.StreamHandler()
    handler.setFormatter(LogFormatter(fmt, component=component))
    logging.basicConfig(level=level.upper(), handlers=[handler])
