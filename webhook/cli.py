"""``python -m webhook``: flags (each with a BM_WEBHOOK_* environment twin) and start-up."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bridge_migration_contract import DEFAULT_PREFIX, MAC_POLICIES, AnnotationKeys
from webhook.config import DEFAULT_SIDECAR_IMAGE, DELIVERY_MODES, WebhookConfig

ENV_PREFIX = "BM_WEBHOOK_"


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m webhook",
        description=(
            "Admission webhook that makes KubeVirt VMIs with bridge/macvtap interfaces live-migratable, "
            "injects the NIC-fixup sidecar and guards migrations. Every flag has an environment twin, "
            "shown in brackets; a flag given on the command line wins."
        ),
    )

    def add(flag: str, *, default: str | None, help: str, **kw: object) -> None:
        env = _env_name(flag)
        parser.add_argument(flag, default=os.environ.get(env, default), help=f"{help} [{env}]", **kw)  # type: ignore[arg-type]

    add("--host", default="0.0.0.0", help="address to listen on (default %(default)s)")
    add("--port", default="8443", type=int, help="HTTPS port (default %(default)s)")
    add("--tls-cert", default=None, help="PEM certificate (chain); re-read when it changes on disk")
    add("--tls-key", default=None, help="PEM private key for --tls-cert")
    parser.add_argument(
        "--dev",
        action="store_true",
        default=_truthy(os.environ.get(_env_name("--dev"), "")),
        help=f"without TLS files, serve with a throw-away self-signed certificate [{_env_name('--dev')}]",
    )
    add(
        "--sidecar-image",
        default=DEFAULT_SIDECAR_IMAGE,
        help="image of the NIC-fixup sidecar (default %(default)s)",
    )
    add("--sidecar-pull-policy", default="IfNotPresent", help="imagePullPolicy of the sidecar entry")
    add(
        "--mac-policy",
        default="pin",
        choices=MAC_POLICIES,
        help="default MAC policy; per VMI: annotation <prefix>mac-policy (default %(default)s)",
    )
    add(
        "--sidecar-gate",
        default="auto",
        choices=("auto", "on", "off"),
        help="is KubeVirt's Sidecar feature gate on? auto reads the KubeVirt CR (default %(default)s)",
    )
    add(
        "--delivery",
        default="auto",
        choices=DELIVERY_MODES,
        help=(
            "how the fixer reaches a VM's pod: hook (a KubeVirt hook sidecar; needs the Sidecar gate), inject "
            "(the pod webhook adds our container; no gate), node (a node agent does it; no per-VM container), "
            "auto: hook when the Sidecar gate is on, inject when not (default %(default)s)"
        ),
    )
    add(
        "--validation",
        default="warn",
        choices=("warn", "strict"),
        help="migrations that would strand a guest: warn or refuse (default %(default)s)",
    )
    add("--kubeconfig", default=None, help="kubeconfig for API reads (default: in-cluster service account)")
    add("--cni-mac-annotation", default=None, help="pod annotation key through which the CNI takes a MAC")
    add("--annotation-prefix", default=DEFAULT_PREFIX, help="prefix of our annotations (default %(default)s)")
    add(
        "--request-deadline",
        default="4.0",
        type=float,
        help="seconds to answer one review (default %(default)s)",
    )
    add(
        "--api-timeout",
        default="2.0",
        type=float,
        help="seconds for one Kubernetes API read (default %(default)s)",
    )
    add(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="(default %(default)s)",
    )
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
        sidecar_gate=args.sidecar_gate,
        delivery=args.delivery,
        validation=args.validation,
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        cni_mac_annotation=args.cni_mac_annotation or None,
        keys=keys,
        request_deadline_s=float(args.request_deadline),
        api_timeout_s=float(args.api_timeout),
        log_level=args.log_level,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from_args(argv)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.tls_cert is None:
        from dataclasses import replace

        from webhook.certs import CertificateAuthority

        directory = Path(tempfile.mkdtemp(prefix="bm-webhook-dev-"))
        files = CertificateAuthority(directory).issue(hosts=("localhost", "127.0.0.1", config.host))
        print(f"dev mode: self-signed certificate, CA at {files.ca}", file=sys.stderr)
        config = replace(config, tls_cert=files.cert, tls_key=files.key)
    from webhook.server import serve

    return serve(config)
