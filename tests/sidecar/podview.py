"""What a lab pod's sidecar process shows from outside: its log file and its /metrics."""

from __future__ import annotations

import re

from lab.cluster import Pod
from lab.paths import VENV_PYTHON
from lab.shell import in_netns, run
from lab.sidecar import LISTEN

_METRICS = (
    "import urllib.request, sys\n"
    "sys.stdout.write(urllib.request.urlopen(f'http://{sys.argv[1]}/metrics', timeout=60).read().decode())"
)


def sidecar_log(pod: Pod) -> str:
    assert pod.sidecar is not None
    return str(pod.sidecar.process.log_path.read_text(errors="replace"))


def metric(pod: Pod, name: str, **labels: str) -> float:
    """One sample of the sidecar's /metrics, read inside the pod (0 when absent)."""
    text = run(in_netns(pod.net.netns, [str(VENV_PYTHON), "-c", _METRICS, LISTEN]), timeout=90)
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    for line in text.splitlines():
        match = re.match(pattern, line)
        if match:
            return float(match.group(1))
    return 0.0
