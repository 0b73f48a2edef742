"""The injected container's hardening holds for the real fixer: ``readOnlyRootFilesystem`` and a
read-only ``libvirt-runtime`` (webhook/injected.py, docs/kubevirt-facts.md I12).

The real ``python -m sidecar serve --delivery inject`` runs in a mount namespace of its own where
every file system is read-only (the container's root) but /proc, /sys and /dev, without any
capability (as ``drop: [ALL]``), as uid/gid 107, with the environment the webhook gives it. Its libvirt is a real
session-mode ``libvirtd`` run as uid 107, as a non-root virt-launcher's virtqemud runs (facts L4),
whose socket directory it reaches through a read-only bind mount, as the pod's ``libvirt-runtime``
is mounted into our container. It must connect, report libvirt reachable, and end with exit code
0 once that libvirt is gone, writing nothing on the way (a write would fail with EROFS, and the
log would say so).

Runs as root (mount namespaces); no lab, no network namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kubelab.ports import free_port
from lab.process import wait_for
from webhook.config import WebhookConfig
from webhook.injected import injected_container

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
LAUNCHER_UID = 107

_DAEMON_SCRIPT = r"""
set -eu
mount --bind "$POD/passwd" /etc/passwd
mount --bind "$POD/group" /etc/group
exec setpriv --reuid=107 --regid=107 --clear-groups -- "$1" --timeout=0
"""

_NAMESPACE_SCRIPT = r"""
set -eu
mount --bind "$POD/passwd" /etc/passwd
mount --bind "$POD/group" /etc/group
mount --bind "$RUNTIME" "$VIEW"
mount -o remount,bind,ro "$VIEW"
# Every file system read-only, as a container's root with readOnlyRootFilesystem.
awk '{print $2}' /proc/self/mounts | while read -r mp; do
  case "$mp" in /proc*|/sys*|/dev*) continue ;; esac
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
for probe in "$REPO/.rw-probe" /tmp/.rw-probe "$VIEW/.rw-probe"; do
  if touch "$probe" 2>/dev/null; then echo "still writable: $probe" >&2; exit 3; fi
done
echo "read-only: / and $VIEW" >&2
exec setpriv --reuid=107 --regid=107 --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
"""


@pytest.fixture
def libvirtd(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A session-mode libvirtd as uid 107; yields its socket directory (the pod's libvirt-runtime),
    in a directory uid 107 can reach, and the daemon."""
    binary = shutil.which("libvirtd") or "/usr/sbin/libvirtd"
    assert os.path.exists(binary), "libvirtd is not installed (scripts/install.sh installs it)"
    # Not under tmp_path: pytest's base directory is root's alone, uid 107 could not reach it.
    home = Path(tempfile.mkdtemp(prefix="bm-libvirtd-"))
    for sub in ("run", "config", "cache"):
        (home / sub).mkdir()
    for path in (home, *home.iterdir()):
        shutil.chown(path, LAUNCHER_UID, LAUNCHER_UID)
    # The image's user 107 (Dockerfile: qemu), as a launcher image has it too: libvirt looks it up
    # on both ends of a session connection. Bound over /etc in the mount namespaces below.
    for db, entry in (("passwd", "qemu:x:107:107::/nonexistent:/usr/sbin/nologin"), ("group", "qemu:x:107:")):
        lines = Path("/etc", db).read_text().splitlines()
        if not any(line.split(":")[2:3] == ["107"] for line in lines):
            lines.append(entry)
        (home / db).write_text("\n".join(lines) + "\n")
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
    }
    log = (tmp_path / "libvirtd.log").open("wb")
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _DAEMON_SCRIPT, "sh", binary],
        env={**env, "POD": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    sock_dir = home / "run" / "libvirt"
    try:
        wait_for((sock_dir / "libvirt-sock").exists, timeout=60, interval=0.2, what="libvirtd's socket")
        yield sock_dir, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def test_the_fixer_runs_with_a_read_only_root_and_a_read_only_libvirt_runtime(
    tmp_path: Path, libvirtd: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    sock_dir, daemon = libvirtd
    pod = sock_dir.parents[1]  # reachable by uid 107, unlike pytest's tmp_path
    view = pod / "view"  # where our container sees libvirt-runtime
    view.mkdir()
    annotations = pod / "annotations"
    annotations.write_text('bridge-migration.kubevirt.io/delivery="inject"\n')
    ours = injected_container({"containers": []}, config=WebhookConfig(sidecar_image="example.org/bm:1"))
    assert ours["securityContext"]["readOnlyRootFilesystem"] is True
    port = free_port()
    fixer = [
        sys.executable,
        *ours["command"][1:],  # python -m sidecar serve --delivery inject
        "--libvirt-uri",
        f"qemu+unix:///session?socket={view}/libvirt-sock",
        "--pod-annotations",
        str(annotations),
        "--listen",
        f"127.0.0.1:{port}",
        "--end-grace",
        "1",
    ]
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),
        "HOME": "/nonexistent",  # the image's user has no home either
        **{e["name"]: e["value"] for e in ours["env"]},
    }
    log_path = tmp_path / "fixer.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _NAMESPACE_SCRIPT, "sh", *fixer],
            env={**env, "RUNTIME": str(sock_dir), "VIEW": str(view), "REPO": str(REPO), "POD": str(pod)},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

                def connected() -> bool:
                    try:
                        return bool(client.get("/healthz").status_code == 200)
                    except httpx.TransportError:
                        return False

                wait_for(
                    connected, timeout=60, interval=0.3, what="the fixer connected", proc=proc, log=log_path.read_text
                )
                assert client.get("/v1/status").status_code == 200
            # virt-launcher exits and takes virtqemud with it: the fixer ends itself, exit 0.
            daemon.terminate()
            daemon.wait(30)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    text = log_path.read_text()
    assert "read-only: / and" in text
    assert "Read-only file system" not in text and "Traceback" not in text, text
    assert "the libvirt connection is gone" in text, text
