"""Settings of `python -m sidecar node-agent`, one per node, called by virt-handler through KubeVirt
v1.9's Plugin API."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bridge_migration_contract import DEFAULT_LOG_FORMAT, DEFAULT_PREFIX, AnnotationKeys, LogFormat
from sidecar.fixer.settings import FixerSettings
from sidecar.options import (
    add,
    add_fixer_arguments,
    add_log_arguments,
    annotation_keys,
    fixer_settings_from_args,
    log_format,
    number,
)

# Inside the host's /var/run/kubevirt, which virt-handler mounts at the same path (facts P8).
DEFAULT_NODE_SOCKET = "/var/run/kubevirt/plugins/bridge-migration.sock"
# {socket} is the launcher's virtqemud socket as the agent reaches it (non-root launcher, L1).
DEFAULT_NODE_LIBVIRT_URI = "qemu+unix:///session?socket={socket}"
# The one timing the node agent sets apart from the per-VM fixer: virt-handler waits 30 s for
# a node hook call, so a reattach the guest is slow to release should be given up on well
# before a call could time out (the work goes on in the background after the answer anyway).
NODE_FIXER = FixerSettings(detach_timeout_s=15.0)
# KubeVirt's non-root launcher user: its virtqemud, and so the socket, are uid 107's (facts L4).
LAUNCHER_UID: Final = 107


@dataclass(frozen=True)
class NodeAgentSettings:
    socket: Path = Path(DEFAULT_NODE_SOCKET)
    node_root: Path = Path("/")
    kubelet_pods_dir: Path = Path("/var/lib/kubelet/pods")  # where the node's /var/lib/kubelet/pods is seen
    node_name: str | None = None  # None: trust the caller's node_context
    libvirt_uri_template: str = DEFAULT_NODE_LIBVIRT_URI
    deadline: float = 20.0  # seconds an ExecuteNodeHook call may take at most
    log_level: str = "INFO"
    log_format: LogFormat = DEFAULT_LOG_FORMAT
    fixer: FixerSettings = NODE_FIXER
    keys: AnnotationKeys = field(default_factory=AnnotationKeys)
    # Issue 27: set a migrated VM's macvtap down on the source node (sidecar/node/macvtap_release.py).
    release_stale_macvtap: bool = False
    launcher_uid: int = LAUNCHER_UID  # only a virtqemud socket of this owner is watched


_DEFAULTS = NodeAgentSettings()


def add_node_agent_arguments(parser: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    add(parser, "--socket", default=str(d.socket), help="unix socket the NodeHookService is served on")
    add(parser, "--node-root", default=str(d.node_root), help="where the node's root file system is seen")
    add(
        parser,
        "--kubelet-pods-dir",
        default=None,
        help="where the node's /var/lib/kubelet/pods is seen (default: <node-root>/var/lib/kubelet/pods)",
    )
    add(
        parser,
        "--node-name",
        default=None,
        help="this node's name; calls naming another node are refused (default: the caller's node_context)",
    )
    add(
        parser,
        "--libvirt-uri-template",
        default=d.libvirt_uri_template,
        help="libvirt URI of a launcher; {socket} becomes the path of its virtqemud socket",
    )
    add(
        parser,
        "--deadline",
        default=f"{d.deadline:g}",
        help="seconds a call may take before it is answered (virt-handler waits 30 s by default)",
    )
    add(
        parser,
        "--release-stale-macvtap",
        default=d.release_stale_macvtap,
        action="store_true",
        help="watch this node's launchers and set a macvtap down once its VM has migrated away"
        " (needs hostPID, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_NET_ADMIN)",
    )
    add(parser, "--launcher-uid", default=str(d.launcher_uid), help="owner of the launchers' virtqemud sockets")
    add_fixer_arguments(parser, d.fixer)
    add_log_arguments(parser, level=d.log_level)
    add(parser, "--annotation-prefix", default=DEFAULT_PREFIX, help="prefix of our annotation keys on the VMI")


def node_agent_settings_from_args(args: argparse.Namespace) -> NodeAgentSettings:
    """Validate parsed node-agent arguments; raises ValueError with a message for the user."""
    deadline = number(args, "--deadline", float)
    if not 0 < deadline < 30:
        raise ValueError("--deadline must be > 0 and < 30 (virt-handler's default timeout)")
    fixer = fixer_settings_from_args(args, _DEFAULTS.fixer)
    if "{socket}" not in str(args.libvirt_uri_template):
        raise ValueError("--libvirt-uri-template must contain {socket}")
    launcher_uid = int(number(args, "--launcher-uid", int))
    if launcher_uid < 0:
        raise ValueError("--launcher-uid must be >= 0")
    root = Path(args.node_root)
    pods = Path(args.kubelet_pods_dir) if args.kubelet_pods_dir else root / "var/lib/kubelet/pods"
    return NodeAgentSettings(
        socket=Path(args.socket),
        node_root=root,
        kubelet_pods_dir=pods,
        node_name=args.node_name or None,
        libvirt_uri_template=str(args.libvirt_uri_template),
        deadline=deadline,
        log_level=str(args.log_level).upper(),
        log_format=log_format(args),
        fixer=fixer,
        keys=annotation_keys(args.annotation_prefix),
        release_stale_macvtap=_switch(args.release_stale_macvtap, "--release-stale-macvtap"),
        launcher_uid=launcher_uid,
    )


def _switch(value: object, flag: str) -> bool:
    """An on/off flag: True when given, else its environment twin's text (or the default)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"{flag}: expected true or false, got {value!r}")
