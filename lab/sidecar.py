"""Running the product's sidecar inside a lab pod, the way virt-launcher would run it.

The sidecar shares the pod's network namespace (so it sees ``eth0``, ``k6t-eth0``, ``tap0``)
and talks to the pod's own libvirt daemon. Its REST port listens on the pod's loopback, so
the lab reaches it with a tiny client run inside that namespace.

By default it runs from this checkout's venv. With ``image``, it runs from the built image
instead, in a podman container that joins the pod's network namespace
(``--network ns:/run/netns/<pod>``) as the real sidecar container shares the launcher pod's,
with the pod daemon's socket directory mounted where the pod mutation mounts ``libvirt-runtime``,
the hook directory at KubeVirt's hook socket dir and the annotations at the podinfo path.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge_migration_contract import (
    HOOK_SOCKET_DIR,
    LIBVIRT_RUNTIME_PATH,
    PODINFO_ANNOTATIONS_FILE,
    PODINFO_DIR,
    FixerDelivery,
)
from lab import container
from lab.cgroups import LimitedGroup, MemoryCounters
from lab.paths import VENV_PYTHON
from lab.process import LabProcess, wait_for
from lab.shell import in_netns, run
from sidecar.fixer.settings import FixerSettings

LISTEN = "127.0.0.1:8186"
# The fixer's own default pause (FixerSettings.link_pause_s) as its --link-pause-ms flag takes it:
# the lab's default everywhere (Lab, run_scenario, python -m lab), so it tests what users run.
DEFAULT_LINK_PAUSE_MS = round(FixerSettings().link_pause_s * 1000)

# Runs inside the pod namespace: one HTTP call, prints "<status> <json body>".
_CLIENT = """
import json, sys, urllib.error, urllib.request
method, url, body = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(url, data=body.encode() if body else None, method=method,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=120) as r:
        print(r.status, r.read().decode() or "null")
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode() or "null")
except OSError as e:
    print(0, json.dumps(str(e)))
"""


def downward_api_file(annotations: Mapping[str, str]) -> str:
    """The kubelet's downward-API format: ``key="value"`` per line, value quoted Go-style.

    JSON string quoting matches Go's strconv.Quote for the ASCII values the lab writes.
    """
    return "".join(f"{key}={json.dumps(value)}\n" for key, value in sorted(annotations.items()))


class Sidecar:
    """The sidecar process of one pod and a REST client for it."""

    def __init__(
        self,
        *,
        netns: str,
        libvirt_uri: str,
        domain: str,
        run_dir: Path,
        annotations: Mapping[str, str],
        link_pause_ms: int = DEFAULT_LINK_PAUSE_MS,
        limits: LimitedGroup | None = None,
        image: str | None = None,
        libvirt_socket: Path | None = None,
        libvirt_runtime: Path | None = None,
        delivery: FixerDelivery = "hook",
        end_grace: float = 2.0,
    ) -> None:
        """``libvirt_runtime``: the pod's libvirt-runtime directory of a session daemon. The
        sidecar then sees it at /var/run/libvirt, as the pod mutation mounts it, and runs with its
        default ``--libvirt-uri`` (KubeVirt's non-root URI), not ``libvirt_uri``. ``delivery``
        inject runs it as the webhook's injected container does (``--delivery inject``: no hook
        server, it ends itself ``end_grace`` seconds after the VM left the pod)."""
        self.netns = netns
        self.image = image
        self.container_name: str | None = None
        # With limits, the process runs inside real memory/cpu cgroups (KubeVirt's 64M/200m by
        # default), from its first instruction; the groups go when the sidecar stops.
        self.limits = limits
        self.final_memory: MemoryCounters | None = None
        run_dir.mkdir(parents=True, exist_ok=True)
        self.annotations_path = run_dir / "annotations"
        self.annotations_path.write_text(downward_api_file(annotations))
        self.hook_dir = run_dir / "hooks"
        self.hook_dir.mkdir(exist_ok=True)
        serve = ["--domain", domain, "--listen", LISTEN, "--link-pause-ms", str(link_pause_ms)]
        self.delivery: FixerDelivery = delivery
        if delivery == "inject":
            serve += ["--delivery", "inject", "--end-grace", str(end_grace)]
        if image is None and libvirt_runtime is not None:
            # Its own mount namespace, the runtime directory where a pod has it; exec keeps the pid.
            q = shlex.quote
            command = [
                str(VENV_PYTHON), "-m", "sidecar", "serve", *serve,
                "--hook-socket-dir", str(self.hook_dir),
                "--pod-annotations", str(self.annotations_path),
            ]  # fmt: skip
            script = f"mount --bind {q(str(libvirt_runtime))} {LIBVIRT_RUNTIME_PATH} && exec {shlex.join(command)}"
            argv = in_netns(netns, ["unshare", "-m", "--propagation", "private", "sh", "-c", script])
        elif image is None:
            argv = in_netns(
                netns,
                [
                    str(VENV_PYTHON), "-m", "sidecar", "serve", *serve,
                    "--libvirt-uri", libvirt_uri,
                    "--hook-socket-dir", str(self.hook_dir),
                    "--pod-annotations", str(self.annotations_path),
                ],
            )  # fmt: skip
        else:
            if libvirt_socket is None or str(libvirt_socket) not in libvirt_uri:
                raise ValueError("a sidecar from the image needs the socket its libvirt URI names")
            if limits is not None:
                raise ValueError("cgroup limits wrap a host process, not a container")
            # The container user must be able to create its hook socket.
            os.chown(self.hook_dir, container.IMAGE_UID, container.IMAGE_UID)
            socket_in_pod = f"{LIBVIRT_RUNTIME_PATH}/{libvirt_socket.name}"
            annotations_in_pod = f"{PODINFO_DIR}/{PODINFO_ANNOTATIONS_FILE}"
            self.container_name = f"{netns}-sidecar"
            argv = container.run_argv(
                image,
                [
                    "python", "-m", "sidecar", "serve", *serve,
                    "--libvirt-uri", libvirt_uri.replace(str(libvirt_socket), socket_in_pod),
                    "--hook-socket-dir", HOOK_SOCKET_DIR,
                    "--pod-annotations", annotations_in_pod,
                ],
                name=self.container_name,
                network=f"ns:/run/netns/{netns}",
                volumes=[
                    f"{libvirt_socket.parent}:{LIBVIRT_RUNTIME_PATH}",
                    f"{self.hook_dir}:{HOOK_SOCKET_DIR}",
                    f"{self.annotations_path}:{annotations_in_pod}:ro",
                ],
            )  # fmt: skip
        if limits is not None:
            argv = limits.wrap(argv)
        self.started_at = time.time()  # epoch seconds; healthy_at once /healthz said 200
        self.healthy_at: float | None = None
        self.process = LabProcess(name=f"sidecar {netns}", argv=argv, log_path=run_dir / "sidecar.log")

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        out = run(
            in_netns(
                self.netns,
                [str(VENV_PYTHON), "-c", _CLIENT, method, f"http://{LISTEN}{path}", json.dumps(body) if body else ""],
            ),
            timeout=150,
        )
        status, _, payload = out.strip().partition(" ")
        return int(status), json.loads(payload)

    def wait_healthy(self, *, timeout: float = 60.0) -> None:
        def healthy() -> bool:
            if not self.process.alive():
                raise RuntimeError(f"sidecar in {self.netns} exited:\n{self.process.log_tail()}")
            status, body = self.call("GET", "/healthz")
            ok = status == 200 and isinstance(body, dict) and bool(body.get("libvirtConnected", True))
            if ok and self.healthy_at is None:
                self.healthy_at = time.time()
            return ok

        wait_for(healthy, timeout=timeout, interval=0.5, what=f"sidecar health in {self.netns}")

    def fixups(self) -> list[dict[str, Any]]:
        status, body = self.call("GET", "/v1/fixups")
        if status != 200:
            raise RuntimeError(f"GET /v1/fixups -> {status}: {body}")
        records = body.get("fixups", body) if isinstance(body, dict) else body
        return list(records) if isinstance(records, list) else []

    def status(self) -> dict[str, Any]:
        status, body = self.call("GET", "/v1/status")
        if status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"GET /v1/status -> {status}: {body}")
        return body

    def proc_status(self) -> dict[str, str]:
        """/proc/<pid>/status of the sidecar process (VmRSS, VmHWM, RssAnon, RssFile, ...)."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return fields

    def wait_end(self, *, timeout: float = 60.0) -> int | None:
        """Inject mode: the exit code once the process ended on its own; None if it did not in time."""
        try:
            return self.process.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        self.process.stop()
        if self.container_name is not None:
            container.remove(self.container_name)
        self.release_limits()

    def release_limits(self) -> None:
        """Keep the cgroup's final counters, then remove the groups (the process has exited)."""
        if self.limits is not None and self.final_memory is None and not self.process.alive():
            self.final_memory = self.limits.memory_counters()
            self.limits.remove()
