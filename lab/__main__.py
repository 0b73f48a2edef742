"""``python -m lab demo|run|cleanup``: the migration lab from the command line."""

from __future__ import annotations

import argparse
import json
import sys

from bridge_migration_contract import NIC_REFRESHES
from lab.cleanup import cleanup
from lab.guests import DEFAULT_GUEST, GUEST_TYPES, GuestType
from lab.reconcile import RECONCILE_MODES
from lab.scenario import SCENARIOS, ScenarioKind, ScenarioResult, run_scenario
from lab.sidecar import DEFAULT_LINK_PAUSE_MS


def _report(result: ScenarioResult) -> None:
    print()
    print(result.timelines())
    print()
    for i, m in enumerate(result.migrations, 1):
        gap = f"{m.gap_seconds:.2f} s" if m.gap_seconds is not None else "no reply"
        print(f"migration {i}: connectivity gap (guest resumed on target -> first ping reply): {gap}")
        for fixup in m.fixups:
            # The fixer's own verdict: verified, unverified or failed, and why (its record's message).
            print(f"migration {i}: fixup #{fixup.get('id')} {fixup.get('result')}: {fixup.get('message')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description="bridge-migration lab (root only)")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="scenario same-mac end to end, with a line per phase and the timeline")
    run = sub.add_parser("run", help="run one scenario")
    run.add_argument("scenario", choices=SCENARIOS)
    run.add_argument("--json", action="store_true", help="print the result (gaps, timelines) as JSON")
    for p in (demo, run):
        p.add_argument("--guest", choices=GUEST_TYPES, default=DEFAULT_GUEST, help="guest type (default: %(default)s)")
        p.add_argument(
            "--link-pause-ms",
            type=int,
            default=DEFAULT_LINK_PAUSE_MS,
            help="the sidecar's link-refresh pause (default: the fixer's, %(default)s)",
        )
        p.add_argument(
            "--nic-refresh", choices=NIC_REFRESHES, help="the VMI's nic-refresh annotation (default: none, i.e. auto)"
        )
        p.add_argument(
            "--reconcile",
            choices=RECONCILE_MODES,
            default="kubevirt",
            help="KubeVirt's reconcile stand-in: at KubeVirt's moments, worst (a target's first sync right after"
            " the fixer's link-down) or off (default: %(default)s)",
        )
    clean = sub.add_parser("cleanup", help="remove leftover lab namespaces, processes and run directories")
    clean.add_argument("--lab-id", help="only this lab (default: every lab, running or not)")
    args = parser.parse_args(argv)

    if args.command == "cleanup":
        for line in cleanup(args.lab_id):
            print(f"removed {line}")
        return 0
    kind: ScenarioKind = "same-mac" if args.command == "demo" else args.scenario
    as_json = bool(getattr(args, "json", False))
    # With --json, stdout carries only the JSON document; the phase lines go to stderr.
    guest: GuestType = args.guest
    result = run_scenario(
        kind,
        say=lambda line: print(line, file=sys.stderr if as_json else sys.stdout, flush=True),
        guest=guest,
        link_pause_ms=args.link_pause_ms,
        nic_refresh=args.nic_refresh,
        reconcile=args.reconcile,
    )
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _report(result)
    ok = all(m.first_reply is not None for m in result.migrations) == result.spec.recovers
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
