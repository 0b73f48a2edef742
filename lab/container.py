"""Running the built image with podman on this machine, the way a kubelet would run it.

No Docker engine here: podman with runc (crun refuses this machine's hybrid cgroup layout) and
the cgroupfs manager. podman's default rlimits are higher than the sandbox allows raising to, so
every run passes ``--ulimit`` at or below the caller's own limits. Every container runs the way
the chart and KubeVirt run ours: as uid/gid 107, read-only root filesystem without podman's
helper tmpfs mounts (Kubernetes adds none), every capability dropped, no_new_privs.
"""

from __future__ import annotations

import resource
import subprocess
from collections.abc import Sequence

PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
IMAGE_UID = 107  # the Dockerfile's USER: KubeVirt's qemu user
# podman's conmon runs with RLIMIT_NPROC 32768 here, whatever the caller has; ask for less.
_NPROC_CAP = 4096


def ulimits() -> list[str]:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[0], _NPROC_CAP)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def run_argv(
    image: str,
    command: Sequence[str],
    *,
    name: str | None = None,
    network: str | None = None,
    volumes: Sequence[str] = (),
    env: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    """``podman run --rm`` of ``command`` in ``image``, locked down as in the pod."""
    argv = [
        *PODMAN, "run", "--rm",
        "--user", f"{IMAGE_UID}:{IMAGE_UID}",
        "--read-only", "--read-only-tmpfs=false",
        "--cap-drop=all", "--security-opt=no-new-privileges",
        *ulimits(),
    ]  # fmt: skip
    if name is not None:
        argv += ["--name", name]
    if network is not None:
        argv += ["--network", network]
    for volume in volumes:
        argv += ["--volume", volume]
    for item in env:
        argv += ["--env", item]
    return [*argv, *extra, image, *command]


def remove(name: str) -> None:
    """Remove a container by name if it is still there (its podman client was killed)."""
    subprocess.run([*PODMAN, "rm", "--force", "--ignore", name], capture_output=True, check=False, timeout=60)
