"""The plugin's command line: ``kubectl bridge-migration analyze|status|fixup|cleanup``.

Exit codes: ``analyze`` 1 when any VM would be stranded on a drain, 0 otherwise (a drain script's
gate); 2 for a usage error, a cluster that could not be read, or a fixer that cannot be reached;
``status`` and ``fixup`` otherwise exit with ``kubectl exec``'s code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from collections.abc import Sequence

from bridge_migration_contract import DEFAULT_PREFIX, AnnotationKeys
from kubectl_bridge_migration.analysis import analyze, render_json, render_table
from kubectl_bridge_migration.target import ExecTarget, exec_argv, find_fixer

PROG = "kubectl bridge-migration"
USAGE_ERROR = 2


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="path to the kubeconfig file (as kubectl's)")
    parser.add_argument("--context", help="the kubeconfig context to use (as kubectl's)")
    parser.add_argument(
        "--annotation-prefix",
        default=DEFAULT_PREFIX,
        help=f"the install's annotation prefix (the webhook's --annotation-prefix; default {DEFAULT_PREFIX})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="bridge-migration for KubeVirt, seen from kubectl")
    sub = parser.add_subparsers(dest="command", required=True)
    an = sub.add_parser(
        "analyze",
        help="table of VMs and VMIs: managed, migratable, delivery, fixer, last outcome, stranded on a drain",
        description="Exits 1 when any VM would be stranded by a drain (migratable with no fixer that will act, "
        "or RestartRequired), 0 otherwise.",
    )
    scope = an.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="only this namespace (default: the context's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    an.add_argument("-o", "--output", choices=("table", "json"), default="table")
    _connection_flags(an)
    for name, text in (("status", "the fixer's own view of a VMI"), ("fixup", "ask a VMI's fixer to fix its NICs now")):
        p = sub.add_parser(name, help=text)
        p.add_argument("vmi", metavar="NS/NAME", help="the VMI (namespace/name)")
        if name == "fixup":
            p.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
        _connection_flags(p)
    sub.add_parser("cleanup", help="the uninstall cleanup (kubectl bridge-migration cleanup --help)", add_help=False)
    return parser


def _passthrough(args: argparse.Namespace) -> list[str]:
    flags = []
    if args.kubeconfig:
        flags.append(f"--kubeconfig={args.kubeconfig}")
    if args.context:
        flags.append(f"--context={args.context}")
    return flags


def _analyze(args: argparse.Namespace, keys: AnnotationKeys) -> int:
    from kubectl_bridge_migration import client

    try:
        cluster = client.connect(client.Connection(args.kubeconfig, args.context))
        namespace = None if args.all_namespaces else (args.namespace or cluster.default_namespace)
        snap = client.snapshot(cluster, namespace)
    except client.ClusterError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    rows = analyze(snap, keys)
    if args.output == "json":
        sys.stdout.write(render_json(rows))
    elif rows:
        sys.stdout.write(render_table(rows))
    else:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        print(f"No VirtualMachines or VirtualMachineInstances in {where}.", file=sys.stderr)
    stranded = [r for r in rows if r.stranded]
    for r in stranded:
        print(f"stranded on drain: {r.kind} {r.namespace}/{r.name}: {'; '.join(r.why)}", file=sys.stderr)
    return 1 if stranded else 0


def _exec(args: argparse.Namespace, keys: AnnotationKeys, subcommand: list[str]) -> int:
    from kubectl_bridge_migration import client

    namespace, sep, name = args.vmi.partition("/")
    if not sep or not namespace or not name:
        print(f"{PROG}: expected NS/NAME, got {args.vmi!r}", file=sys.stderr)
        return USAGE_ERROR
    try:
        cluster = client.connect(client.Connection(args.kubeconfig, args.context))
        vmi = client.get_vmi(cluster, namespace, name)
        pods, agents = client.launcher_and_agent_pods(cluster, namespace)
    except client.ClusterError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    found = find_fixer(vmi, pods, agents, keys)
    if not isinstance(found, ExecTarget):
        print(f"{PROG}: {found.why}", file=sys.stderr)
        return found.code
    argv = exec_argv(os.environ.get("KUBECTL", "kubectl"), _passthrough(args), found, subcommand)
    print(f"# {found.delivery} fixer: pod {found.namespace}/{found.pod}, container {found.container}", file=sys.stderr)
    try:
        return subprocess.run(argv, check=False).returncode
    except FileNotFoundError:
        print(f"{PROG}: {argv[0]} not found: status and fixup run `kubectl exec`", file=sys.stderr)
        return USAGE_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["cleanup"]:
        # kubectl_bridge_migration/cleanup.py is its own command line (main(argv) -> int).
        try:
            cleanup = importlib.import_module("kubectl_bridge_migration.cleanup")
        except ModuleNotFoundError:
            print(f"{PROG}: cleanup is not in this build", file=sys.stderr)
            return USAGE_ERROR
        code: int = cleanup.main(args_list[1:])
        return code
    args = _parser().parse_args(args_list)
    try:
        keys = AnnotationKeys(args.annotation_prefix)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    if args.command == "analyze":
        return _analyze(args, keys)
    if args.command == "status":
        return _exec(args, keys, ["status"])
    return _exec(args, keys, ["fixup", *(["--dry-run"] if args.dry_run else [])])
