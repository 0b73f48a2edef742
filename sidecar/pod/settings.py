"""Settings of `python -m sidecar serve`, the per-VM fixer (a hook sidecar or an injected container)."""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from bridge_migration_contract import (
    DEFAULT_FIXER_DELIVERY,
    DEFAULT_LOG_FORMAT,
    DEFAULT_PREFIX,
    FIXER_DELIVERIES,
    HOOK_SOCKET_DIR,
    NEWEST_FAMILY,
    PODINFO_ANNOTATIONS_FILE,
    PODINFO_DIR,
    SIDECAR_DEFAULT_PORT,
    AnnotationKeys,
    FixerDelivery,
    KubevirtFamily,
    LogFormat,
    kubevirt_family,
)
from sidecar.fixer.settings import FixerSettings
from sidecar.options import (
    add,
    add_fixer_arguments,
    add_log_arguments,
    annotation_keys,
    fixer_settings_from_args,
    log_format,
    number,
    read_token,
)

# virt-launcher runs as non-root by default and then talks to its own virtqemud through
# this session URI; a root launcher uses qemu:///system (pass --libvirt-uri then).
DEFAULT_LIBVIRT_URI = "qemu+unix:///session?socket=/var/run/libvirt/virtqemud-sock"
DEFAULT_LISTEN = f"127.0.0.1:{SIDECAR_DEFAULT_PORT}"


@dataclass(frozen=True)
class ServeSettings:
    libvirt_uri: str = DEFAULT_LIBVIRT_URI
    listen_host: str = "127.0.0.1"
    listen_port: int = SIDECAR_DEFAULT_PORT
    hook_socket_dir: Path = Path(HOOK_SOCKET_DIR)
    pod_annotations: Path = Path(PODINFO_DIR, PODINFO_ANNOTATIONS_FILE)
    domain: str | None = None
    history_size: int = 100
    log_level: str = "INFO"
    log_format: LogFormat = DEFAULT_LOG_FORMAT
    fixer: FixerSettings = field(default_factory=FixerSettings)
    token: str | None = field(default=None, repr=False)  # never in logs or tracebacks
    keys: AnnotationKeys = field(default_factory=AnnotationKeys)
    # The KubeVirt version family whose DHCP rule applies when the pod annotation does not say.
    kubevirt_family: KubevirtFamily = NEWEST_FAMILY
    # hook: a KubeVirt hook sidecar (virt-launcher calls Info, OnDefineDomain, Shutdown); inject: a
    # container the webhook added to the launcher pod, with no hook server (sidecar/pod/endwatch.py).
    delivery: FixerDelivery = DEFAULT_FIXER_DELIVERY
    # inject: seconds the VM must stay gone before the process ends itself.
    end_grace: float = 10.0


_DEFAULTS = ServeSettings()


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    add(parser, "--libvirt-uri", default=d.libvirt_uri, help="libvirt connection URI of the launcher")
    add(parser, "--listen", default=DEFAULT_LISTEN, help="host:port of the REST API (loopback only by default)")
    add(
        parser,
        "--token-file",
        default=None,
        help="file with a bearer token all REST calls but /healthz must carry; needed for a non-loopback --listen",
    )
    add(
        parser,
        "--hook-socket-dir",
        default=str(d.hook_socket_dir),
        help="KubeVirt hook socket directory; the hook server is off when it does not exist",
    )
    add(
        parser, "--pod-annotations", default=str(d.pod_annotations), help="downward-API file with the pod's annotations"
    )
    add_fixer_arguments(parser, d.fixer)
    add(parser, "--domain", default=None, help="libvirt domain to look after (default: the only domain)")
    add(parser, "--history-size", default=str(d.history_size), help="fixup records kept for GET /v1/fixups")
    add_log_arguments(parser, level=d.log_level)
    add(
        parser,
        "--annotation-prefix",
        default=DEFAULT_PREFIX,
        help="prefix of our annotation keys; the webhook passes its own in the hook sidecar entry",
    )
    add(
        parser,
        "--delivery",
        default=d.delivery,
        help=(
            "hook: a KubeVirt hook sidecar; inject: a container the webhook added to the launcher pod"
            " (no hook server; waits for the libvirt socket and exits 0 once the VM has ended)"
        ),
    )
    add(
        parser,
        "--end-grace",
        default=f"{d.end_grace:g}",
        help="inject: seconds the VM must stay gone before the process exits",
    )
    add(
        parser,
        "--kubevirt-version",
        default="v1.9.0",
        help="KubeVirt version whose DHCP MAC rule applies when the pod's kubevirt-version annotation is absent",
    )


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
    fixer = fixer_settings_from_args(args, _DEFAULTS.fixer)
    history_size = int(number(args, "--history-size", int))
    if history_size < 1:
        raise ValueError("--history-size must be >= 1")
    delivery = next((d for d in FIXER_DELIVERIES if d == args.delivery), None)
    if delivery is None:
        raise ValueError(f"--delivery must be one of {', '.join(FIXER_DELIVERIES)}, got {args.delivery!r}")
    end_grace = number(args, "--end-grace", float)
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
        domain=args.domain or None,
        history_size=history_size,
        log_level=str(args.log_level).upper(),
        log_format=log_format(args),
        fixer=fixer,
        token=token,
        keys=annotation_keys(args.annotation_prefix),
        kubevirt_family=family,
        delivery=delivery,
        end_grace=end_grace,
    )
