"""`python -m sidecar serve|status|fixup|node-agent`: the server, a small REST client for people and
hooks, and the per-node agent for KubeVirt v1.9's Plugin API (node mode)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from bridge_migration_contract import configure_logging
from sidecar.node.settings import add_node_agent_arguments, node_agent_settings_from_args
from sidecar.options import ENV_PREFIX, env_name, read_token
from sidecar.pod.settings import DEFAULT_LISTEN, add_serve_arguments, settings_from_args

DEFAULT_URL = f"http://{DEFAULT_LISTEN}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sidecar",
        description="bridge-migration sidecar: fixes guest NICs after a live migration lands in this pod",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the sidecar (hook server, libvirt watcher, REST)")
    add_serve_arguments(serve)
    url_env = ENV_PREFIX + "URL"
    url_help = f"sidecar REST address [env {url_env}; default: %(default)s]"
    token_env = env_name("--token-file")
    token_help = f"file with the bearer token the sidecar was started with [env {token_env}]"
    status = sub.add_parser("status", help="show the domain, its NICs and the last fixup")
    status.add_argument("--url", default=os.environ.get(url_env, DEFAULT_URL), help=url_help)
    status.add_argument("--token-file", default=os.environ.get(token_env), help=token_help)
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    fixup = sub.add_parser("fixup", help="ask the sidecar to fix the NICs now")
    fixup.add_argument("--url", default=os.environ.get(url_env, DEFAULT_URL), help=url_help)
    fixup.add_argument("--token-file", default=os.environ.get(token_env), help=token_help)
    fixup.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
    fixup.add_argument("--force", action="store_true", help="run even if already done since the migration")
    fixup.add_argument(
        "--interface", action="append", dest="interfaces", metavar="NAME", help="VMI interface name (repeatable)"
    )
    fixup.add_argument("--json", action="store_true", help="print the raw JSON")
    node = sub.add_parser(
        "node-agent",
        help="one per node: serve KubeVirt's NodeHookService and fix NICs after migrations land here",
    )
    add_node_agent_arguments(node)
    return parser


def _call(method: str, url: str, *, body: dict[str, Any] | None = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except json.JSONDecodeError:
            return exc.code, {"detail": raw.decode(errors="replace")}


def _step(step: dict[str, Any]) -> str:
    """One step as `link-refresh(held 420 ms, guest-idle)=stale`."""
    notes = []
    if step.get("heldMs") is not None:
        notes.append(f"held {step['heldMs']:.0f} ms, {step.get('holdEndedBy')}")
    if step.get("reasserted"):
        notes.append(f"link set down again {step['reasserted']}x")
    inner = f"({', '.join(notes)})" if notes else ""
    return f"{step['action']}{inner}={step.get('outcome') or step['result']}"


def _print_record(record: dict[str, Any]) -> None:
    print(
        f"fixup #{record['id']} ({record['trigger']}) result={record['result']}"
        f" took {record.get('durationMs') or 0:.0f} ms: {record.get('message', '')}"
    )
    for iface in record.get("interfaces", []):
        line = (
            f"  {iface['name']:<12} {iface['action']:<13} {iface['result']:<9}"
            f" {iface.get('oldMac') or '-'} -> {iface.get('newMac') or '-'}  {iface['reason']}"
        )
        if iface.get("error"):
            line += f"  error: {iface['error']}"
        print(line)
        if iface.get("outcome"):
            took = f" in {iface['verifiedMs']:.0f} ms" if iface.get("verifiedMs") is not None else ""
            steps = " -> ".join(_step(s) for s in iface.get("steps", []))
            print(f"  {'':<12} {iface['outcome'].upper()}{took}: {iface.get('outcomeReason', '')}  [{steps}]")


def _print_status(status: dict[str, Any]) -> None:
    print(f"domain:  {status['domain'] or '-'} ({status['domainState'] or 'unknown'})")
    print(f"libvirt: {'connected' if status['libvirtConnected'] else 'NOT connected'} ({status['libvirtUri']})")
    print(f"hook:    {'registered' if status['hookRegistered'] else 'not registered'}; VMI known: {status['vmiKnown']}")
    print(f"policy:  {status['policy']}{'' if status['enabled'] else ' (disabled by annotation)'}")
    for iface in status["interfaces"]:
        print(
            f"  {iface['alias'] or '-':<14} {iface['type']:<9} {iface['mac'] or '-':<18} link {iface['linkState']:<5}"
            f" dev {iface['targetDev'] or '-':<8} {'managed' if iface['managed'] else 'unmanaged'}"
            f" pod {iface['podLink'] or '-'} {iface['podLinkMac'] or ''}"
        )
    if status.get("lastFixup"):
        _print_record(status["lastFixup"])
    else:
        print("no fixup yet")


def _client(args: argparse.Namespace) -> int:
    base = args.url.rstrip("/")
    try:
        token = read_token(args.token_file)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        if args.command == "status":
            code, body = _call("GET", base + "/v1/status", token=token)
        else:
            payload = {"interfaces": args.interfaces, "dryRun": args.dry_run, "force": args.force}
            code, body = _call("POST", base + "/v1/fixup", body=payload, token=token)
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot reach the sidecar at {base}: {exc}", file=sys.stderr)
        return 2
    if args.json or (code >= 400 and not isinstance(body, dict)):
        print(json.dumps(body, indent=2))
    elif code >= 400 and "id" not in body:
        print(f"error {code}: {body.get('detail')}", file=sys.stderr)
        if body.get("knownInterfaces") is not None:
            print(f"known interfaces: {', '.join(body['knownInterfaces']) or 'none'}", file=sys.stderr)
    elif args.command == "status":
        _print_status(body)
    else:
        _print_record(body)
    return 0 if code < 400 else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            settings = settings_from_args(args)
        except ValueError as exc:
            parser.error(str(exc))
        configure_logging(settings.log_level, settings.log_format, component="bridge-migration-sidecar")
        from sidecar.pod.serve import serve

        return serve(settings)
    if args.command == "node-agent":
        try:
            node_settings = node_agent_settings_from_args(args)
        except ValueError as exc:
            parser.error(str(exc))
        configure_logging(node_settings.log_level, node_settings.log_format, component="bridge-migration-node-agent")
        from sidecar.node.service import serve_node_agent

        return serve_node_agent(node_settings)
    return _client(args)
