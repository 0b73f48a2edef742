"""A FAKE of the kubelet's pod status rules: a stand-in, not the kubelet.

kubelab runs no kubelet, so no pod ever gets a status by itself. ``pod_status`` computes the status
a kubelet would report for a stored pod once its containers did what a test says (each one running,
or exited with a code), for the parts KubeVirt's virt-controller reads (docs/kubevirt-facts.md
I7, I8, I11). Each rule was read in kubernetes/kubernetes v1.37.2 (the version kubelab builds):

* restart: a regular container follows the pod's ``restartPolicy`` (KubeVirt's launcher pods:
  Never); a restartable init container (``restartPolicy: Always``, a native sidecar) is restarted
  whatever the pod's policy, while a regular container still runs. A restarted container shows
  Waiting (CrashLoopBackOff) during the back-off, then Running with ``restartCount`` 1;
* end: once every regular container has terminated and none will restart, the kubelet stops the
  native sidecars (ours exits 0 on SIGTERM: sidecar/pod/serve.py);
* phase (``getPhase``, pkg/kubelet/kubelet_pods.go): init containers done, then Running while a
  regular container runs or will restart; with all regular containers terminated, Succeeded when
  all exited 0, else Failed. Native sidecars never count for the phase;
* readiness (pkg/kubelet/prober/prober_manager.go, ``UpdatePodStatus``): a running container
  without a readiness probe is Ready; a completed regular init container is Ready;
* conditions (pkg/kubelet/status/generate.go): ``ContainersReady`` when every native sidecar and
  every regular container is Ready; ``Ready`` also needs the pod's readiness gates (virt-controller
  sets ``kubevirt.io/virtual-machine-unpaused`` for an unpaused VMI: given as met).

Left out: probes, image pulls, start order and timing, resources, the other conditions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

Outcome = Literal["running", "crashed", "completed"]  # crashed: exited 1 (or OOM-killed); completed: exited 0
Backoff = Literal["in-backoff", "restarted"]

RUNNING: Final[Outcome] = "running"


def is_native_sidecar(container: Mapping[str, Any]) -> bool:
    return container.get("restartPolicy") == "Always"


def _running(name: str, restarts: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "ready": True,
        "started": True,
        "restartCount": restarts,
        "state": {"running": {"startedAt": "2026-12-06T00:00:00Z"}},
    }


def _terminated(name: str, code: int, *, ready: bool = False) -> dict[str, Any]:
    reason = "Completed" if code == 0 else "Error"
    return {
        "name": name,
        "ready": ready,
        "started": False,
        "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "reason": reason}},
    }


def _exit_code(outcome: Outcome) -> int:
    return 0 if outcome == "completed" else 1


def _after_exit(name: str, outcome: Outcome, *, restarts: bool, backoff: Backoff) -> dict[str, Any]:
    """The status of a container that exited: terminated for good, or restarted by the kubelet."""
    code = _exit_code(outcome)
    if not restarts:
        return _terminated(name, code)
    if backoff == "restarted":
        status = _running(name, restarts=1)
    else:
        status = {
            "name": name,
            "ready": False,
            "started": False,
            "restartCount": 1,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        }
    status["lastState"] = _terminated(name, code)["state"]
    return status


def pod_status(
    pod: Mapping[str, Any], outcomes: Mapping[str, Outcome] | None = None, *, backoff: Backoff = "restarted"
) -> dict[str, Any]:
    """The ``status`` the kubelet would report for ``pod`` once each container named in ``outcomes``
    did that (others: running; regular init containers: completed)."""
    spec = pod.get("spec") or {}
    outcomes = outcomes or {}
    never = spec.get("restartPolicy", "Always") == "Never"
    regular = [c["name"] for c in spec.get("containers") or []]
    inits = list(spec.get("initContainers") or [])

    statuses: dict[str, dict[str, Any]] = {}
    for name in regular:
        outcome = outcomes.get(name, RUNNING)
        restarts = not never and outcome == "crashed"  # OnFailure and Always restart a failure
        restarts = restarts or spec.get("restartPolicy", "Always") == "Always"
        statuses[name] = (
            _running(name) if outcome == RUNNING else _after_exit(name, outcome, restarts=restarts, backoff=backoff)
        )
    # A regular container still running, or coming back: the pod goes on.
    pod_goes_on = any("terminated" not in statuses[n]["state"] for n in regular)

    init_statuses: list[dict[str, Any]] = []
    for container in inits:
        name = container["name"]
        if not is_native_sidecar(container):
            init_statuses.append(_terminated(name, 0, ready=True))
        elif not pod_goes_on:
            init_statuses.append(_terminated(name, 0))  # stopped by the kubelet after the regular ones
        else:
            outcome = outcomes.get(name, RUNNING)
            init_statuses.append(
                _running(name) if outcome == RUNNING else _after_exit(name, outcome, restarts=True, backoff=backoff)
            )

    if pod_goes_on:
        phase = "Running"
    else:
        phase = "Succeeded" if all(statuses[n]["state"]["terminated"]["exitCode"] == 0 for n in regular) else "Failed"
    sidecars_ready = all(s["ready"] for c, s in zip(inits, init_statuses, strict=True) if is_native_sidecar(c))
    containers_ready = phase == "Running" and sidecars_ready and all(s["ready"] for s in statuses.values())
    gates_met = True  # kubevirt.io/virtual-machine-unpaused, set by virt-controller for an unpaused VMI
    conditions = [
        {"type": "kubevirt.io/virtual-machine-unpaused", "status": "True"},
        {"type": "Initialized", "status": "True"},
        {"type": "ContainersReady", "status": str(containers_ready)},
        {"type": "Ready", "status": str(containers_ready and gates_met)},
        {"type": "PodScheduled", "status": "True"},
    ]
    return {
        "phase": phase,
        "conditions": conditions,
        "initContainerStatuses": init_statuses,
        "containerStatuses": [statuses[n] for n in regular],
    }
