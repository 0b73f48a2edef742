"""The closed loop, measured: stun time and outcomes with KubeVirt's reconcile stand-in on.

Each row is one lab whose client migrates back and forth ``--runs`` times (a -> b -> a ...; every
hop a new target pod, so every hop is a migration as KubeVirt makes it), with the lab's reconcile
stand-in (lab/reconcile.py) at its default timing or at the worst case (a sync right after the
fixer's link-down). Per hop: the stun time from outside (10 ms echoes, lab.stuntime), whether the
guest recovered, the fixer's record (result, each NIC's outcome and steps, verifiedMs), and the
fixer's own "verified at" against the outside probe's first reply from the target address.

A NetworkManager guest remembers, in its domain's metadata, that the reattach worked: every hop
after the first then starts there. The ``first`` rows forget it before each hop (the bench removes
the element from the domain, as if the VM had never migrated), so each hop is a first migration;
the ``memory`` row keeps it. Controls run with no fixer and must never recover.

    python -m bench.closed_loop [--runs 10] [--only ROW ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import libvirt

from bench.common import RESULTS, write_result
from lab.cluster import Lab
from lab.guests import GuestType
from lab.reconcile import ReconcileMode
from lab.scenario import (
    SPECS,
    ScenarioKind,
    ScenarioRun,
    Steps,
    record_outcome,
    run_steps,
    scenario_steps,
)
from sidecar.fixer import memory


@dataclass(frozen=True)
class Row:
    name: str
    guest: GuestType
    kind: ScenarioKind
    reconcile: ReconcileMode = "kubevirt"
    forget: bool = False  # remove the fixer's memory from the domain before every hop


ROWS: Final[tuple[Row, ...]] = (
    Row("busybox same-mac", "busybox", "same-mac"),
    Row("networkd same-mac", "debian-networkd", "same-mac"),
    Row("networkd mac-change", "debian-networkd", "mac-change"),
    Row("nm same-mac first", "debian-nm", "same-mac", forget=True),
    Row("nm mac-change first", "debian-nm", "mac-change", forget=True),
    Row("nm same-mac memory", "debian-nm", "same-mac"),
    Row("busybox same-mac worst", "busybox", "same-mac", "worst"),
    Row("networkd same-mac worst", "debian-networkd", "same-mac", "worst"),
    Row("busybox control", "busybox", "control"),
)


def forget_memory(run: ScenarioRun) -> None:
    """Before a hop: the domain carries no memory of what worked (a first migration)."""
    dom = run.client.domain()
    flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, None, None, memory.URI, flags)


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "worst": None, "n": 0}
    return {"median": round(statistics.median(values), 1), "worst": round(max(values), 1), "n": len(values)}


def run_row(row: Row, runs: int) -> dict[str, Any]:
    hops = runs  # a control's hops are watched 20 s each for a recovery that must not come
    spec = dataclasses.replace(SPECS[row.kind], guest=row.guest, hops=tuple("ba"[i % 2] for i in range(hops)))
    lab = Lab(kubevirt_version=spec.kubevirt_version, guest=spec.guest, net1=spec.net1, reconcile=row.reconcile)
    run = ScenarioRun(
        kind=row.kind, spec=spec, lab=lab, say=lambda m: print(m, file=sys.stderr), observe=20.0, timeout=120.0
    )
    first_replies: list[float | None] = []

    def keep_first_reply(r: ScenarioRun) -> None:
        first_replies.append(r.probes[0].first_new_reply)

    base = scenario_steps(row.kind, spec)
    hop = list(base.hop)
    hop.insert(hop.index(record_outcome), keep_first_reply)
    if row.forget:
        hop.insert(0, forget_memory)
    result = run_steps(run, Steps(setup=base.setup, hop=tuple(hop), finish=base.finish)).result
    return summarize(row, result.migrations, first_replies)


def _nic(fixup: dict[str, Any]) -> dict[str, Any]:
    (nic,) = [i for i in fixup["interfaces"] if i["name"] == "default"]
    return nic  # type: ignore[no-any-return]


def summarize(row: Row, migrations: list[Any], first_replies: list[float | None]) -> dict[str, Any]:
    hops = []
    for m, first_reply in zip(migrations, first_replies, strict=True):
        fixups = [f for f in m.fixups if not f.get("dryRun")]
        nic = _nic(fixups[0]) if fixups else None
        verified_at = None
        if nic is not None and nic.get("verifiedMs") is not None:
            verified_at = fixups[0]["triggerTime"] + nic["verifiedMs"] / 1000
        hops.append(
            {
                "stun_ms": m.stun_ms,
                "recovered": m.first_reply is not None,
                "result": fixups[0]["result"] if fixups else None,
                "outcome": nic.get("outcome") if nic else None,
                "steps": [
                    (s["action"], s.get("outcome"), s.get("holdEndedBy"), s.get("reasserted", 0)) for s in nic["steps"]
                ]
                if nic
                else [],
                "verified_ms": nic.get("verifiedMs") if nic else None,
                # + : the fixer saw the guest back after the outside did; - : before.
                "verified_minus_outside_ms": None
                if verified_at is None or first_reply is None
                else round((verified_at - first_reply) * 1000),
                # KubeVirt's syncs in the target pod during the hop, and how many changed something.
                "kubevirt_syncs": len(m.kubevirt_syncs),
                "kubevirt_syncs_changing": sum(bool(sync.changes) for sync in m.kubevirt_syncs),
            }
        )
    stuns = [h["stun_ms"] for h in hops if h["stun_ms"] is not None]
    return {
        "row": row.name,
        "guest": row.guest,
        "kind": row.kind,
        "reconcile": row.reconcile,
        "forget": row.forget,
        "migrations": len(hops),
        "recovered": sum(h["recovered"] for h in hops),
        "verified": sum(h["outcome"] == "verified" for h in hops),
        "stun_ms": _stats(stuns),
        "verified_ms": _stats([h["verified_ms"] for h in hops if h["verified_ms"] is not None]),
        "verified_minus_outside_ms": _stats(
            [h["verified_minus_outside_ms"] for h in hops if h["verified_minus_outside_ms"] is not None]
        ),
        "hops": hops,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="migrations per row (default %(default)s)")
    parser.add_argument("--only", action="append", choices=[r.name for r in ROWS], help="rows to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = [r for r in ROWS if not args.only or r.name in args.only]
    started = time.time()
    out: dict[str, Any] = {"runs": args.runs, "rows": []}
    for row in rows:
        summary = run_row(row, args.runs)
        out["rows"].append(summary)
        print(
            f"{row.name}: recovered {summary['recovered']}/{summary['migrations']},"
            f" verified {summary['verified']}, stun {summary['stun_ms']}",
            file=sys.stderr,
        )
    out["seconds"] = round(time.time() - started)
    write_result("closed_loop", out, args.out)
    return out


if __name__ == "__main__":
    main()
