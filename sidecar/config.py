"""Settings of `python -m sidecar serve` and `node-agent`: every flag has a BM_SIDECAR_<FLAG> environment twin."""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bridge_migration_contract import (
    DEFAULT_PREFIX,
    HOOK_SOCKET_DIR,
    NEWEST_FAMILY,
    PODINFO_ANNOTATIONS_FILE,
    PODINFO_DIR,
    SIDECAR_DEFAULT_PORT,
    AnnotationKeys,
    KubevirtFamily,
    kubevirt_family,
)

# virt-launcher runs as non-root by default and then talks to its own virtqemud through
# this session URI; a root launcher uses qemu:///system (pass --libvirt-uri then).
DEFAULT_LIBVIRT_URI = "qemu+unix:///session?socket=/var/run/libvirt/virtqemud-sock"
DEFAULT_LISTEN = f"127.0.0.1:{SIDECAR_DEFAULT_PORT}"
ENV_PREFIX = "BM_SIDECAR_"
# hook: a KubeVirt hook sidecar (virt-launcher calls Info, OnDefineDomain, Shutdown); inject: a
# container the webhook added to the launcher pod, with no hook server (sidecar/endwatch.py).
SidecarDelivery = Literal["hook", "inject"]
SIDECAR_DELIVERIES: tuple[SidecarDelivery, ...] = ("hook", "inject")


@dataclass(frozen=True)
class ServeSettings:
    libvirt_uri: str
    listen_host: str
    listen_port: int
    hook_socket_dir: Path
    pod_annotations: Path
    link_pause_ms: int
    resume_settle_ms: int
    domain: str | None
    detach_timeout: float
    history_size: int
    log_level: str
    token: str | None = field(default=None, repr=False)  # never in logs or tracebacks
    keys: AnnotationKeys = field(default_factory=AnnotationKeys)
    # The KubeVirt version family whose DHCP rule applies when the pod annotation does not say.
    kubevirt_family: KubevirtFamily = NEWEST_FAMILY
    delivery: SidecarDelivery = "hook"
    # inject: seconds the VM must stay gone before the process ends itself.
    end_grace: float = 10.0


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _add(parser: argparse.ArgumentParser, flag: str, *, help: str, **kwargs: object) -> None:
    env = env_name(flag)
    default = os.environ.get(env, kwargs.pop("default", None))
    parser.add_argument(flag, default=default, help=f"{help} [env {env}; default: %(default)s]", **kwargs)  # type: ignore[arg-type]


def _add_link_timing(parser: argparse.ArgumentParser) -> None:
    """The link-refresh timing flags, the same for `serve` and `node-agent`."""
    _add(parser, "--link-pause-ms", default="100", help="pause between link down and link up, in ms")
    _add(
        parser,
        "--resume-settle-ms",
        default="1000",
        help="after a migration, no link comes back up before this long after the resume, in ms",
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    _add(parser, "--libvirt-uri", default=DEFAULT_LIBVIRT_URI, help="libvirt connection URI of the launcher")
    _add(parser, "--listen", default=DEFAULT_LISTEN, help="host:port of the REST API (loopback only by default)")
    _add(
        parser,
        "--token-file",
        default=None,
        help="file with a bearer token all REST calls but /healthz must carry; needed for a non-loopback --listen",
    )
    _add(
        parser,
        "--hook-socket-dir",
        default=HOOK_SOCKET_DIR,
        help="KubeVirt hook socket directory; the hook server is off when it does not exist",
    )
    _add(
        parser,
        "--pod-annotations",
        default=f"{PODINFO_DIR}/{PODINFO_ANNOTATIONS_FILE}",
        help="downward-API file with the pod's annotations",
    )
    _add_link_timing(parser)
    _add(parser, "--domain", default=None, help="libvirt domain to look after (default: the only domain)")
    _add(parser, "--detach-timeout", default="30", help="seconds to wait for the guest to release a NIC")
    _add(parser, "--history-size", default="100", help="fixup records kept for GET /v1/fixups")
    _add(parser, "--log-level", default="info", help="debug, info, warning or error")
    _add(
        parser,
        "--annotation-prefix",
        default=DEFAULT_PREFIX,
        help="prefix of our annotation keys; the webhook passes its own in the hook sidecar entry",
    )
    _add(
        parser,
        "--delivery",
        default="hook",
        help=(
            "hook: a KubeVirt hook sidecar; inject: a container the webhook added to the launcher pod"
            " (no hook server; waits for the libvirt socket and exits 0 once the VM has ended)"
        ),
    )
    _add(parser, "--end-grace", default="10", help="inject: seconds the VM must stay gone before the process exits")
    _add(
        parser,
        "--kubevirt-version",
        default="v1.9.0",
        help="KubeVirt version whose DHCP MAC rule applies when the pod's kubevirt-version annotation is absent",
    )


def read_token(path: str | None) -> str | None:
    """The bearer token from --token-file (surrounding whitespace dropped); None without a file.

    Shared by `serve` and the client commands, so both sides read the same file the same way.
    """
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read --token-file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise ValueError(f"--token-file {path} is empty")
    if any(c.isspace() for c in token) or not token.isprintable():
        raise ValueError(f"--token-file {path}: the token must be one word of printable characters")
    return token


def parse_listen(value: str, *, has_token: bool) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen must be host:port, got {value!r}")
    host = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    # Anyone who can reach a non-loopback port could detach the guest's NICs: only with a token.
    if not loopback and not has_token:
        raise ValueError(f"--listen {value!r} is not loopback; that needs --token-file (a bearer token)")
    return host, int(port)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """Validate parsed arguments; raises ValueError with a message for the user."""
    token = read_token(args.token_file)
    host, port = parse_listen(args.listen, has_token=token is not None)
    try:
        link_pause_ms = int(args.link_pause_ms)
        resume_settle_ms = int(args.resume_settle_ms)
        detach_timeout = float(args.detach_timeout)
        history_size = int(args.history_size)
    except ValueError as exc:
        raise ValueError(f"bad number: {exc}") from exc
    if link_pause_ms < 0 or resume_settle_ms < 0 or detach_timeout <= 0 or history_size < 1:
        raise ValueError(
            "--link-pause-ms and --resume-settle-ms must be >= 0, --detach-timeout > 0, --history-size >= 1"
        )
    try:
        keys = AnnotationKeys(str(args.annotation_prefix))
    except ValueError as exc:
        raise ValueError(f"--annotation-prefix: {exc}") from exc
    delivery = next((d for d in SIDECAR_DELIVERIES if d == args.delivery), None)
    if delivery is None:
        raise ValueError(f"--delivery must be one of {', '.join(SIDECAR_DELIVERIES)}, got {args.delivery!r}")
    try:
        end_grace = float(args.end_grace)
    except ValueError as exc:
        raise ValueError(f"--end-grace: bad number: {exc}") from exc
    if end_grace < 0:
        raise ValueError("--end-grace must be >= 0")
    try:
        family = kubevirt_family(str(args.kubevirt_version))
    except ValueError as exc:
        raise ValueError(f"--kubevirt-version: {exc}") from exc
    return ServeSettings(
        libvirt_uri=args.libvirt_uri,
        listen_host=host,
        listen_port=port,
        hook_socket_dir=Path(args.hook_socket_dir),
        pod_annotations=Path(args.pod_annotations),
        link_pause_ms=link_pause_ms,
        resume_settle_ms=resume_settle_ms,
        domain=args.domain or None,
        detach_timeout=detach_timeout,
        history_size=history_size,
        log_level=str(args.log_level).upper(),
        token=token,
        keys=keys,
        kubevirt_family=family,
        delivery=delivery,
        end_grace=end_grace,
    )


# --- node-agent: one per node, called by virt-handler through KubeVirt v1.9's Plugin API ---

# Inside the host's /var/run/kubevirt, which virt-handler mounts at the same path (facts P8).
DEFAULT_NODE_SOCKET = "/var/run/kubevirt/plugins/bridge-migration.sock"
# {socket} is the launcher's virtqemud socket as the agent reaches it (non-root launcher, L1).
DEFAULT_NODE_LIBVIRT_URI = "qemu+unix:///session?socket={socket}"


@dataclass(frozen=True)
class NodeAgentSettings:
    socket: Path
    node_root: Path
    kubelet_pods_dir: Path  # where the node's /var/lib/kubelet/pods is seen
    node_name: str | None  # None: trust the caller's node_context
    libvirt_uri_template: str
    deadline: float  # seconds an ExecuteNodeHook call may take at most
    link_pause_ms: int
    resume_settle_ms: int
    detach_timeout: float
    log_level: str
    keys: AnnotationKeys = field(default_factory=AnnotationKeys)


def add_node_agent_arguments(parser: argparse.ArgumentParser) -> None:
    _add(parser, "--socket", default=DEFAULT_NODE_SOCKET, help="unix socket the NodeHookService is served on")
    _add(parser, "--node-root", default="/", help="where the node's root file system is seen")
    _add(
        parser,
        "--kubelet-pods-dir",
        default=None,
        help="where the node's /var/lib/kubelet/pods is seen (default: <node-root>/var/lib/kubelet/pods)",
    )
    _add(
        parser,
        "--node-name",
        default=None,
        help="this node's name; calls naming another node are refused (default: the caller's node_context)",
    )
    _add(
        parser,
        "--libvirt-uri-template",
        default=DEFAULT_NODE_LIBVIRT_URI,
        help="libvirt URI of a launcher; {socket} becomes the path of its virtqemud socket",
    )
    _add(
        parser,
        "--deadline",
        default="20",
        help="seconds a call may take before it is answered (virt-handler waits 30 s by default)",
    )
    _add_link_timing(parser)
    _add(parser, "--detach-timeout", default="15", help="seconds to wait for the guest to release a NIC")
    _add(parser, "--log-level", default="info", help="debug, info, warning or error")
    _add(parser, "--annotation-prefix", default=DEFAULT_PREFIX, help="prefix of our annotation keys on the VMI")


def node_agent_settings_from_args(args: argparse.Namespace) -> NodeAgentSettings:
    """Validate parsed node-agent arguments; raises ValueError with a message for the user."""
    try:
        deadline = float(args.deadline)
        link_pause_ms = int(args.link_pause_ms)
        resume_settle_ms = int(args.resume_settle_ms)
        detach_timeout = float(args.detach_timeout)
    except ValueError as exc:
        raise ValueError(f"bad number: {exc}") from exc
    if not 0 < deadline < 30:
        raise ValueError("--deadline must be > 0 and < 30 (virt-handler's default timeout)")
    if link_pause_ms < 0 or resume_settle_ms < 0 or detach_timeout <= 0:
        raise ValueError("--link-pause-ms and --resume-settle-ms must be >= 0, --detach-timeout > 0")
    if "{socket}" not in str(args.libvirt_uri_template):
        raise ValueError("--libvirt-uri-template must contain {socket}")
    try:
        keys = AnnotationKeys(str(args.annotation_prefix))
    except ValueError as exc:
        raise ValueError(f"--annotation-prefix: {exc}") from exc
    root = Path(args.node_root)
    pods = Path(args.kubelet_pods_dir) if args.kubelet_pods_dir else root / "var/lib/kubelet/pods"
    return NodeAgentSettings(
        socket=Path(args.socket),
        node_root=root,
        kubelet_pods_dir=pods,
        node_name=args.node_name or None,
        libvirt_uri_template=str(args.libvirt_uri_template),
        deadline=deadline,
        link_pause_ms=link_pause_ms,
        resume_settle_ms=resume_settle_ms,
        detach_timeout=detach_timeout,
        log_level=str(args.log_level).upper(),
        keys=keys,
    )
