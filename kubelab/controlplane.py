"""etcd + kube-apiserver on loopback, with the PKI and kubeconfig they need.

No controller-manager and no scheduler: objects are stored and admitted (which is what the webhook
tests need) but nothing reconciles them, so pods stay Pending and namespaces are never finalized.
"""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import yaml

from kubelab.kubectl import Kubectl
from kubelab.pki import SigningKey, write_signing_key
from kubelab.ports import LOOPBACK, free_port, log_tail
from kubelab.tools import Tools, find_tools
from lab.process import stop, wait_for
from webhook.certs import CertFiles, CertificateAuthority

# Generous: two shared cores, and the first start of a fresh binary pages in ~100 MB.
_START_TIMEOUT_S = 180.0


class ControlPlane:
    """A running etcd + kube-apiserver; use as a context manager or call start()/stop()."""

    def __init__(self, *, workdir: Path | None = None, tools: Tools | None = None) -> None:
        self.tools = tools or find_tools()
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kubelab-"))
        self.pki_dir = self.workdir / "pki"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.port = 0
        self._procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []
        self.ca: CertificateAuthority | None = None

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    def kubectl(self) -> Kubectl:
        return Kubectl(binary=self.tools.kubectl, kubeconfig=self.kubeconfig)

    # --- lifecycle ---

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        ca = self.ca = CertificateAuthority(self.pki_dir, common_name="kubelab-ca", days=2)
        serving = ca.issue(
            "apiserver",
            common_name="kube-apiserver",
            hosts=(LOOPBACK, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        )
        # system:masters bypasses RBAC: the fixture's own kubectl is cluster-admin.
        admin = ca.issue_client("admin", common_name="kubelab-admin", organizations=("system:masters",))
        sa = write_signing_key(self.pki_dir, "service-account")
        etcd_url = self._start_etcd()
        self.port = free_port()
        self._start_apiserver(etcd_url=etcd_url, serving=serving, sa=sa)
        self._write_kubeconfig(admin)
        wait_for(
            self._ready,
            timeout=_START_TIMEOUT_S,
            interval=0.2,
            what="kube-apiserver",
            proc=self._procs[-1][1],
            log=lambda: log_tail(self.workdir / "kube-apiserver.log"),
        )

    def stop(self) -> None:
        for _name, proc, log in reversed(self._procs):
            stop(proc, grace=20)
            log.close()
        self._procs.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- pieces ---

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self._procs.append((name, proc, log))
        return proc

    def _start_etcd(self) -> str:
        client = f"http://{LOOPBACK}:{free_port()}"
        peer = f"http://{LOOPBACK}:{free_port()}"
        proc = self._spawn(
            "etcd",
            [
                str(self.tools.etcd),
                "--name=kubelab",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=kubelab={peer}",
                "--initial-cluster-state=new",
                # Test data is thrown away: skip fsync, it costs seconds on a busy disk.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=2) as resp:
                    return b'"true"' in resp.read()
            except (urllib.error.URLError, OSError):
                return False

        wait_for(
            healthy,
            timeout=_START_TIMEOUT_S,
            interval=0.2,
            what="etcd",
            proc=proc,
            log=lambda: log_tail(self.workdir / "etcd.log"),
        )
        return client

    def _start_apiserver(self, *, etcd_url: str, serving: CertFiles, sa: SigningKey) -> None:
        assert self.ca is not None
        self._spawn(
            "kube-apiserver",
            [
                str(self.tools.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={self.port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={self.ca.ca_path}",
                f"--service-account-key-file={sa.public}",
                f"--service-account-signing-key-file={sa.private}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--authorization-mode=RBAC",
                # The "kubernetes" Service endpoint would be our loopback address, which the
                # reconciler refuses; nothing here needs that Service.
                "--endpoint-reconciler-type=none",
                # Only stored, never routed: no traffic ever goes to this range.
                "--service-cluster-ip-range=10.96.0.0/24",
                # Without a controller-manager nothing creates each namespace's "default"
                # ServiceAccount, which this admission plugin insists on for every pod.
                "--disable-admission-plugins=ServiceAccount",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _ready(self) -> bool:
        assert self.ca is not None
        ctx = ssl.create_default_context(cafile=str(self.ca.ca_path))
        ctx.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        try:
            with urllib.request.urlopen(f"{self.server}/readyz", timeout=5, context=ctx) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _write_kubeconfig(self, admin: CertFiles) -> None:
        assert self.ca is not None

        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        doc: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubelab",
                    "cluster": {"server": self.server, "certificate-authority-data": b64(self.ca.ca_path)},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {"client-certificate-data": b64(admin.cert), "client-key-data": b64(admin.key)},
                }
            ],
            "contexts": [{"name": "kubelab", "context": {"cluster": "kubelab", "user": "admin"}}],
            "current-context": "kubelab",
        }
        self.kubeconfig.write_text(yaml.safe_dump(doc))
        self.kubeconfig.chmod(0o600)

    def token_kubeconfig(self, path: Path, *, token: str) -> Path:
        """A kubeconfig for the same server that authenticates with a bearer token (a ServiceAccount)."""
        doc = yaml.safe_load(self.kubeconfig.read_text())
        doc["users"] = [{"name": "admin", "user": {"token": token}}]
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path
