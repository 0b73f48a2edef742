"""The sidecar inside KubeVirt's hook-sidecar limits (64M memory, 200m CPU), in real cgroups.

Per run, in a fresh lab whose sidecars each sit in their own memory and cpu cgroups with
those limits (lab.cgroups): start a follow-pod VM, migrate it (the target's sidecar detaches
the NIC and attaches it with the target pod's MAC), then 2,000 REST calls (400 rounds of
/healthz, /v1/status, /v1/fixups, /metrics and a dry-run fixup) and one 20 MB body. Recorded
for the target's sidecar: the time from exec to the hook socket and to /healthz (under the
quota), from the guest's resume to the fixup done, RSS (VmRSS, anonymous, file) idle and at
its peak (VmHWM), the cgroup's own max usage, failcnt and throttling.

``--soak-seconds N`` then keeps REST calls going at ``--soak-rate`` per second for N seconds
and samples RSS every 10 s (the 10-minute soak: ``--soak-seconds 600``; not in CI).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS, write_result
from lab.cluster import Lab
from lab.guests import GUEST_TYPES, GuestType
from lab.paths import VENV_PYTHON
from lab.process import wait_for
from lab.shell import in_netns, run
from lab.sidecar import LISTEN, Sidecar
from sidecar.pod.hook_server import SOCKET_NAME

_MIB = 1024 * 1024

# Inside the pod: `rounds` rounds of five calls, then one 20 MB body, or a paced soak that
# samples the sidecar's RSS (pid given) every 10 s. Prints JSON.
_CLIENT = """
import json, sys, time, urllib.error, urllib.request
base, mode, n, rate, pid = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
def call(method, path, body=None):
    req = urllib.request.Request(base + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read(); return r.status
    except urllib.error.HTTPError as e:
        e.read(); return e.code
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
ROUND = [("GET", "/healthz", None), ("GET", "/v1/status", None), ("GET", "/v1/fixups", None),
         ("GET", "/metrics", None), ("POST", "/v1/fixup", b'{"dryRun": true}')]
codes = {}
if mode == "burst":
    for _ in range(int(n)):
        for method, path, body in ROUND:
            code = call(method, path, body); codes[code] = codes.get(code, 0) + 1
    try:
        codes["big"] = call("POST", "/v1/fixup", b"x" * 20_000_000)
    except OSError as e:
        codes["big"] = type(e).__name__
    print(json.dumps({"codes": codes}))
else:
    samples, start, i = [], time.monotonic(), 0
    while time.monotonic() - start < n:
        method, path, body = ROUND[i % len(ROUND)]; i += 1
        code = call(method, path, body); codes[code] = codes.get(code, 0) + 1
        if not samples or time.monotonic() - start >= 10 * len(samples):
            samples.append([round(time.monotonic() - start, 1), rss()])
        time.sleep(max(0.0, i / rate - (time.monotonic() - start)))
    samples.append([round(time.monotonic() - start, 1), rss()])
    print(json.dumps({"codes": codes, "requests": i, "rss_kib": samples}))
"""


def _client(sidecar: Sidecar, *args: object, timeout: float) -> dict[str, Any]:
    argv = [str(VENV_PYTHON), "-c", _CLIENT, f"http://{LISTEN}", *map(str, args), str(sidecar.process.pid)]
    return dict(json.loads(run(in_netns(sidecar.netns, argv), timeout=timeout)))


def _mib(status: dict[str, str], key: str) -> float:
    return round(int(status[key].split()[0]) / 1024, 1)


def one_run(*, rounds: int, soak_s: float, soak_rate: float, guest: GuestType = "busybox") -> dict[str, Any]:
    # v1.8: follow-pod reattaches there (the heavier path; docs/kubevirt-facts.md D2). A Debian
    # guest runs qemu-guest-agent: the fixup is then verified through it (the closed loop's calls).
    with Lab(sidecar_limits=True, kubevirt_version="v1.8.0", guest=guest) as lab:
        lab.add_nodes("a", "b")
        vm = lab.start_vm(name="capped", node="a", policy="follow-pod", sidecar=True)
        vm.console.wait("dhcp-ack", nic=vm.guest_nic(), timeout=180)
        migration = lab.migrate(vm, to_node="b")
        target = vm.pod.sidecar
        assert target is not None and target.limits is not None
        healthy_at = target.healthy_at
        assert healthy_at is not None
        socket_at = (target.hook_dir / SOCKET_NAME).stat().st_mtime

        def fixed() -> dict[str, Any] | None:
            records = [r for r in target.fixups() if r["trigger"] == "resumed-migrated"]
            return records[-1] if records else None

        wait_for(fixed, timeout=120, interval=0.2, what="automatic fixup")
        record = fixed()
        assert record is not None
        idle = target.proc_status()
        burst = _client(target, "burst", rounds, 0, timeout=900)
        after = target.proc_status()
        soak = _client(target, "soak", soak_s, soak_rate, timeout=soak_s + 120) if soak_s else None
        memory = target.limits.memory_counters()
        cpu = target.limits.cpu_counters()
        final = target.proc_status()
        return {
            "start_to_hook_socket_s": round(socket_at - target.started_at, 3),
            "start_to_healthz_s": round(healthy_at - target.started_at, 3),
            "resume_to_fixup_done_s": round(record["finished"] - migration.resumed, 3),
            "fixup": {"result": record["result"], "action": record["interfaces"][0]["action"]},
            "guest": guest,
            "idle_after_fixup": {
                "rss_mib": _mib(idle, "VmRSS"),
                "anon_mib": _mib(idle, "RssAnon"),
                "file_mib": _mib(idle, "RssFile"),
            },
            "after_2000_calls_rss_mib": _mib(after, "VmRSS"),
            "peak_rss_mib": _mib(final, "VmHWM"),
            "burst_codes": burst["codes"],
            "soak": soak,
            "cgroup": {
                "limit_bytes": memory.limit_bytes,
                "max_usage_mib": round(memory.max_usage_bytes / _MIB, 1),
                "failcnt": memory.failcnt,
                "oom_kills": memory.oom_kills,
                "cpu_quota": f"{cpu.quota_us}/{cpu.period_us} us",
                "cpu_throttled_periods": cpu.nr_throttled,
            },
        }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run, 20 rounds (CI smoke)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=400, help="rounds of 5 REST calls (default: 2,000 calls)")
    parser.add_argument("--soak-seconds", type=float, default=0.0)
    parser.add_argument("--soak-rate", type=float, default=20.0, help="REST calls per second in the soak")
    parser.add_argument("--guest", choices=GUEST_TYPES, default="busybox", help="guest type (default %(default)s)")
    parser.add_argument("--name", default="sidecar_limits", help="result file name")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs_n, rounds = (1, 20) if args.quick else (args.runs, args.rounds)
    runs = []
    for i in range(runs_n):
        soak = args.soak_seconds if i == 0 else 0.0
        runs.append(one_run(rounds=rounds, soak_s=soak, soak_rate=args.soak_rate, guest=args.guest))
        print(
            f"run {i + 1}/{runs_n}: {json.dumps({k: v for k, v in runs[-1].items() if k != 'soak'})}", file=sys.stderr
        )
    keys = ("start_to_hook_socket_s", "start_to_healthz_s", "resume_to_fixup_done_s", "peak_rss_mib")
    summary: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}
    summary["worst_peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    summary["worst_cgroup_max_usage_mib"] = max(r["cgroup"]["max_usage_mib"] for r in runs)
    summary["failcnt_total"] = sum(r["cgroup"]["failcnt"] for r in runs)
    summary["idle_rss_mib"] = statistics.median(r["idle_after_fixup"]["rss_mib"] for r in runs)
    result = {
        "benchmark": "sidecar_limits",
        "quick": args.quick,
        "limits": "memory.limit_in_bytes 64000000, cpu.cfs_quota_us 20000 per 100000 (KubeVirt's 64M / 200m)",
        "rest_calls": rounds * 5,
        "runs_n": runs_n,
        "summary": summary,
        "runs": runs,
    }
    result["guest"] = args.guest
    write_result(args.name, result, args.out)
    print(f"sidecar under 64M/200m: {json.dumps(summary)}")
    return result


if __name__ == "__main__":
    main()
