"""Flag plumbing both programs share: every flag has a BM_SIDECAR_<FLAG> environment twin, and
the fixer's timing flags are derived from `FixerSettings` (defaults and help written once)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from bridge_migration_contract import (
    DEFAULT_LOG_FORMAT,
    LOG_FORMAT_FLAG,
    LOG_FORMATS,
    AnnotationKeys,
    LogFormat,
    parse_log_format,
)
from sidecar.fixer.settings import FixerSettings

ENV_PREFIX = "BM_SIDECAR_"


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def add(parser: argparse.ArgumentParser, flag: str, *, help: str, **kwargs: object) -> None:
    """One flag, its environment twin taking the place of the default when set."""
    env = env_name(flag)
    default = os.environ.get(env, kwargs.pop("default", None))
    parser.add_argument(flag, default=default, help=f"{help} [env {env}; default: %(default)s]", **kwargs)  # type: ignore[arg-type]


def _ms(seconds: float) -> str:
    return str(round(seconds * 1000))


def _seconds(value: float) -> str:
    return f"{value:g}"


def add_fixer_arguments(parser: argparse.ArgumentParser, defaults: FixerSettings) -> None:
    """The link timing and detach flags, the same for `serve` and `node-agent`."""
    add(
        parser, "--link-pause-ms", default=_ms(defaults.link_pause_s), help="pause between link down and link up, in ms"
    )
    add(
        parser,
        "--resume-settle-ms",
        default=_ms(defaults.resume_settle_s),
        help="after a migration, no link comes back up before this long after the resume, in ms",
    )
    add(
        parser,
        "--detach-timeout",
        default=_seconds(defaults.detach_timeout_s),
        help="seconds to wait for the guest to release a NIC",
    )
    add(
        parser,
        "--hold",
        default="adaptive" if defaults.adaptive_hold else "fixed",
        choices=("adaptive", "fixed"),
        help="after a migration, end a link refresh's hold once the guest shows it handled the link change"
        " (adaptive), or always at the resume settle time (fixed)",
    )
    add(
        parser,
        "--verify-window",
        default=_seconds(defaults.verify_window_s),
        help="seconds the guest agent is asked for a NIC's new address after a link refresh",
    )
    add(
        parser,
        "--reattach-verify-window",
        default=_seconds(defaults.reattach_verify_window_s),
        help="seconds the guest agent is asked for a NIC's new address after a reattach",
    )


def number(args: argparse.Namespace, flag: str, kind: type[int] | type[float]) -> float:
    """The value of ``flag`` as ``kind``; ValueError naming the flag for the user."""
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    try:
        return kind(value)
    except ValueError as exc:
        raise ValueError(f"{flag}: bad number: {exc}") from exc


def fixer_settings_from_args(args: argparse.Namespace, defaults: FixerSettings) -> FixerSettings:
    """The fixer's settings from the flags add_fixer_arguments added; ValueError for the user."""
    link_pause_ms = int(number(args, "--link-pause-ms", int))
    resume_settle_ms = int(number(args, "--resume-settle-ms", int))
    detach_timeout = number(args, "--detach-timeout", float)
    verify_window = number(args, "--verify-window", float)
    reattach_window = number(args, "--reattach-verify-window", float)
    if link_pause_ms < 0 or resume_settle_ms < 0 or detach_timeout <= 0:
        raise ValueError("--link-pause-ms and --resume-settle-ms must be >= 0, --detach-timeout > 0")
    if verify_window <= 0 or reattach_window <= 0:
        raise ValueError("--verify-window and --reattach-verify-window must be > 0")
    if args.hold not in ("adaptive", "fixed"):
        raise ValueError(f"--hold: must be adaptive or fixed, got {args.hold!r}")
    return dataclasses.replace(
        defaults,
        link_pause_s=link_pause_ms / 1000,
        resume_settle_s=resume_settle_ms / 1000,
        detach_timeout_s=detach_timeout,
        adaptive_hold=args.hold == "adaptive",
        verify_window_s=verify_window,
        reattach_verify_window_s=reattach_window,
    )


def add_log_arguments(parser: argparse.ArgumentParser, *, level: str) -> None:
    """--log-level and --log-format, the same for `serve` and `node-agent`."""
    add(parser, "--log-level", default=level.lower(), help="debug, info, warning or error")
    add(
        parser,
        LOG_FORMAT_FLAG,
        default=DEFAULT_LOG_FORMAT,
        choices=LOG_FORMATS,
        help="text, or one JSON object per line with KubeVirt's keys (timestamp, level, msg, ...)",
    )


def log_format(args: argparse.Namespace) -> LogFormat:
    """--log-format's value (its environment twin is not checked by argparse); ValueError for the user."""
    try:
        return parse_log_format(args.log_format)
    except ValueError as exc:
        raise ValueError(f"{LOG_FORMAT_FLAG}: {exc}") from exc


def annotation_keys(prefix: object) -> AnnotationKeys:
    try:
        return AnnotationKeys(str(prefix))
    except ValueError as exc:
        raise ValueError(f"--annotation-prefix: {exc}") from exc


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
