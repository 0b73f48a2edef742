"""``python -m webhook``: flags (each with a BM_WEBHOOK_* environment twin) and start-up.

Each flag's default and, for a ``Literal`` setting, its ``choices`` come from ``WebhookConfig``
(webhook/config.py): a default is written once, there.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal, get_args, get_origin, get_type_hints

from bridge_migration_contract import LOG_FORMAT_FLAG, AnnotationKeys, configure_logging
from webhook.config import WebhookConfig
from webhook.macs import MAC_SALT_RE, MAC_SALT_RULE

ENV_PREFIX = "BM_WEBHOOK_"
DEFAULTS: Final = WebhookConfig()
_FIELD_TYPES: Final = get_type_hints(WebhookConfig)


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def field_choices(field: str) -> tuple[str, ...] | None:
    """The values a ``Literal``-typed ``WebhookConfig`` field takes; None for any other field."""
    hint = _FIELD_TYPES[field]
    return get_args(hint) if get_origin(hint) is Literal else None


def _add(parser: argparse.ArgumentParser, flag: str, *, field: str, help: str, **kw: Any) -> None:
    """A flag for the ``WebhookConfig`` field ``field``: its default (unless the environment twin
    sets one) and, for a ``Literal`` field, its choices, both read from the dataclass."""
    env = _env_name(flag)
    default = os.environ.get(env, getattr(DEFAULTS, field))
    choices = field_choices(field)
    if choices is not None:
        kw["choices"] = choices
    parser.add_argument(flag, default=default, help=f"{help} [{env}]", **kw)


def _add_switch(parser: argparse.ArgumentParser, flag: str, *, field: str, help: str) -> None:
    """An on/off flag for a ``bool`` field: given, it is on; its twin says 1, true, yes or on."""
    env = _env_name(flag)
    default = _truthy(os.environ[env]) if env in os.environ else getattr(DEFAULTS, field)
    parser.add_argument(flag, action="store_true", default=default, help=f"{help} [{env}]")


def _add_serving_flags(parser: argparse.ArgumentParser) -> None:
    _add(
        parser,
        "--host",
        field="host",
        help="address to listen on; the default :: takes IPv4 too, and is 0.0.0.0 without IPv6 (default %(default)s)",
    )
    _add(parser, "--port", field="port", type=int, help="HTTPS port (default %(default)s)")
    _add(parser, "--tls-cert", field="tls_cert", help="PEM certificate (chain); re-read when it changes on disk")
    _add(parser, "--tls-key", field="tls_key", help="PEM private key for --tls-cert")
    _add(
        parser,
        "--tls-reload-seconds",
        field="tls_reload_s",
        type=float,
        help="how often the TLS files are looked at for a renewed pair (default %(default)s)",
    )
    _add_switch(parser, "--dev", field="dev", help="without TLS files, serve with a throw-away self-signed certificate")
    _add_switch(
        parser,
        "--api-docs",
        field="api_docs",
        help="also serve /docs and /redoc (pages that load Swagger UI and ReDoc from a CDN)",
    )


def _add_fixer_flags(parser: argparse.ArgumentParser) -> None:
    _add(parser, "--sidecar-image", field="sidecar_image", help="image of the NIC-fixup sidecar (default %(default)s)")
    _add(parser, "--sidecar-pull-policy", field="sidecar_pull_policy", help="imagePullPolicy of the sidecar entry")
    _add(
        parser,
        "--mac-policy",
        field="mac_policy",
        help="default MAC policy; per VMI: annotation <prefix>mac-policy (default %(default)s)",
    )
    _add(
        parser,
        "--nic-refresh",
        field="nic_refresh",
        help="recorded as <prefix>nic-refresh on each VMI made migratable without one (default %(default)s)",
    )
    _add(
        parser,
        "--mac-salt",
        field="mac_salt",
        help="mixed into every pinned MAC, so two installs on one L2 pin different MACs; set it once and keep it"
        " (default: empty, no salt)",
    )
    _add(
        parser,
        "--sidecar-gate",
        field="sidecar_gate",
        help="is KubeVirt's Sidecar feature gate on? auto reads the KubeVirt CR (default %(default)s)",
    )
    _add(
        parser,
        "--delivery",
        field="delivery",
        help=(
            "how the fixer reaches a VM's pod: hook (a KubeVirt hook sidecar; needs the Sidecar gate), inject "
            "(the pod webhook adds our container; no gate), node (a node agent does it; no per-VM container), "
            "auto: hook when the Sidecar gate is on, inject when not (default %(default)s)"
        ),
    )
    _add_switch(
        parser,
        "--node-agent",
        field="node_agent",
        help="a node agent is deployed (the chart's node.enabled); without it no VMI gets delivery node",
    )
    _add(
        parser,
        "--validation",
        field="validation",
        help="migrations that would strand a guest: warn or refuse (default %(default)s)",
    )


def _add_api_flags(parser: argparse.ArgumentParser) -> None:
    _add(
        parser,
        "--kubeconfig",
        field="kubeconfig",
        help="kubeconfig for API reads (default: in-cluster service account)",
    )
    _add(
        parser,
        "--cni-mac-annotation",
        field="cni_mac_annotation",
        help="pod annotation key through which the CNI takes a MAC",
    )
    prefix_env = _env_name("--annotation-prefix")
    parser.add_argument(
        "--annotation-prefix",
        default=os.environ.get(prefix_env, DEFAULTS.keys.prefix),
        help=f"prefix of our annotations (default %(default)s) [{prefix_env}]",
    )
    _add(
        parser,
        "--request-deadline",
        field="request_deadline_s",
        type=float,
        help="seconds to answer one review (default %(default)s)",
    )
    _add(
        parser,
        "--api-timeout",
        field="api_timeout_s",
        type=float,
        help="seconds for one Kubernetes API read (default %(default)s)",
    )
    _add(parser, "--log-level", field="log_level", help="(default %(default)s)")
    _add(
        parser,
        LOG_FORMAT_FLAG,
        field="log_format",
        help="text, or one JSON object per line with KubeVirt's keys (timestamp, level, msg...) (default %(default)s)",
    )
    _add(
        parser,
        "--sidecar-log-format",
        field="sidecar_log_format",
        help="--log-format of the per-VM fixers the webhook adds (hook sidecar entry, injected container)"
        " (default %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m webhook",
        description=(
            "Admission webhook that makes KubeVirt VMIs with bridge/macvtap interfaces live-migratable, "
            "injects the NIC-fixup sidecar and guards migrations. Every flag has an environment twin, "
            "shown in brackets; a flag given on the command line wins."
        ),
    )
    _add_serving_flags(parser)
    _add_fixer_flags(parser)
    _add_api_flags(parser)
    return parser


def _check_choices(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """argparse checks `choices` only for values on the command line, not for defaults, which is
    where the environment twins land: check them the same way, naming the variable."""
    for action in parser._actions:
        if not action.choices or not action.option_strings:
            continue
        value = getattr(args, action.dest)
        if value not in action.choices:
            flag = action.option_strings[0]
            choices = ", ".join(map(str, action.choices))
            parser.error(f"{flag} (or {_env_name(flag)}): invalid choice {value!r} (choose from {choices})")


def config_from_args(argv: Sequence[str] | None = None) -> WebhookConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_choices(parser, args)
    try:
        keys = AnnotationKeys(args.annotation_prefix)
    except ValueError as exc:
        parser.error(str(exc))
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if not float(args.tls_reload_seconds) > 0:  # also refuses nan
        parser.error("--tls-reload-seconds must be > 0")
    if not MAC_SALT_RE.fullmatch(args.mac_salt):
        parser.error(f"--mac-salt (or {_env_name('--mac-salt')}): {MAC_SALT_RULE}")
    if args.kubeconfig and not Path(args.kubeconfig).is_file():
        parser.error(f"--kubeconfig {args.kubeconfig}: no such file (or BM_WEBHOOK_KUBECONFIG)")
    if not args.tls_cert and not args.dev:
        parser.error(
            "no TLS certificate: the apiserver only calls webhooks over HTTPS. Give --tls-cert and --tls-key "
            "(or BM_WEBHOOK_TLS_CERT/BM_WEBHOOK_TLS_KEY), or --dev for a throw-away self-signed one"
        )
    return WebhookConfig(
        host=args.host,
        port=int(args.port),
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        dev=args.dev,
        sidecar_image=args.sidecar_image,
        sidecar_pull_policy=args.sidecar_pull_policy,
        mac_policy=args.mac_policy,
        nic_refresh=args.nic_refresh,
        mac_salt=args.mac_salt,
        sidecar_gate=args.sidecar_gate,
        delivery=args.delivery,
        node_agent=args.node_agent,
        validation=args.validation,
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        cni_mac_annotation=args.cni_mac_annotation or None,
        keys=keys,
        request_deadline_s=float(args.request_deadline),
        api_timeout_s=float(args.api_timeout),
        tls_reload_s=float(args.tls_reload_seconds),
        log_level=args.log_level,
        log_format=args.log_format,
        sidecar_log_format=args.sidecar_log_format,
        api_docs=args.api_docs,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from_args(argv)
    configure_logging(config.log_level, config.log_format, component="bridge-migration-webhook")
    if config.tls_cert is None:
        from dataclasses import replace

        from webhook.certs import CertificateAuthority

        directory = Path(tempfile.mkdtemp(prefix="bm-webhook-dev-"))
        # Both loopbacks, and the address asked for unless it is a wildcard (no client dials that).
        hosts = dict.fromkeys(("localhost", "127.0.0.1", "::1", config.host))
        files = CertificateAuthority(directory).issue(hosts=tuple(h for h in hosts if h not in ("::", "0.0.0.0")))
        logging.getLogger(__name__).warning("dev mode: self-signed certificate, CA at %s", files.ca)
        config = replace(config, tls_cert=files.cert, tls_key=files.key)
    from webhook.server import serve

    return serve(config)
