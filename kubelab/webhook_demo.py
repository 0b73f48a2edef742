"""``python -m kubelab.webhook_demo``: the webhook on real TLS, fed the way kube-apiserver feeds it.

Starts ``python -m webhook`` with a certificate from a throw-away CA, then sends three
AdmissionReviews over HTTPS (verifying that CA): a bridge VMI, a masquerade VMI and a
malformed request, and prints what comes back, patch decoded. Lives here, not in the
shipped ``webhook`` package: it reads the repository's examples/.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import yaml

from kubelab.reviews import make_review
from kubelab.tools import REPO_ROOT
from lab.process import ProcessExitedError, stop, wait_for
from webhook.certs import CertificateAuthority

EXAMPLES = REPO_ROOT / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(client: httpx.Client, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    try:
        wait_for(
            lambda: client.get("/readyz").status_code == 200,
            timeout=timeout_s,
            what="the webhook's /readyz",
            proc=proc,
            ignore=(httpx.TransportError,),
        )
    except (TimeoutError, ProcessExitedError) as exc:
        raise SystemExit(f"webhook did not become ready: {exc}") from None


def show(title: str, resp: httpx.Response) -> None:
    print(f"\n== {title}: HTTP {resp.status_code}")
    body = resp.json()
    answer = body.get("response", body)
    if "patch" in answer:
        answer = dict(answer, patch=json.loads(base64.b64decode(answer["patch"])))
    print(json.dumps(answer, indent=2))


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bm-demo-"))
    files = CertificateAuthority(workdir).issue(hosts=("localhost", "127.0.0.1"))
    port = free_port()
    cmd = [
        sys.executable, "-m", "webhook",
        "--host", "127.0.0.1", "--port", str(port),
        "--tls-cert", str(files.cert), "--tls-key", str(files.key),
        "--sidecar-gate", "on",  # no cluster here: we say the KubeVirt Sidecar gate is on
        "--log-level", "warning",
    ]  # fmt: skip
    print("$ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, env=dict(os.environ))
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=str(files.ca), timeout=10) as client:
            wait_ready(client, proc)
            print(f"webhook ready on https://127.0.0.1:{port} (TLS verified against {files.ca})")
            for name in ("vmi-bridge.yaml", "vmi-masquerade.yaml"):
                obj = yaml.safe_load((EXAMPLES / name).read_text())
                show(f"{name} -> /mutate/virtualmachineinstances", client.post(
                    "/mutate/virtualmachineinstances", json=make_review(obj)))  # fmt: skip
            show(
                "malformed request (no 'request') -> /mutate/virtualmachineinstances",
                client.post(
                    "/mutate/virtualmachineinstances",
                    json={"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
                ),
            )
    finally:
        stop(proc, grace=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
