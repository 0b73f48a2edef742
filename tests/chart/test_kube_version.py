"""The chart's Kubernetes floor is the one its webhooks need, and the chart README and docs/install.md
say the same: the VMI and VM mutators rely on `matchConditions` (GA in 1.30; off by default before
1.28, when the API server drops the field and sends every VMI status write to the webhook)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from kubelab.chart import CHART_DIR
from kubelab.tools import REPO_ROOT

FLOOR = "1.30"


def _template(helm: Path, kube_version: str) -> subprocess.CompletedProcess[str]:
    argv = [str(helm), "template", "bm", str(CHART_DIR), "--kube-version", kube_version]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize("version", ["1.27.0", "1.28.9", "1.29.15"])
def test_the_chart_refuses_kubernetes_before_1_30(helm: Path, version: str) -> None:
    result = _template(helm, version)
    assert result.returncode != 0, f"the chart installs on Kubernetes {version}"
    assert "kubeVersion" in result.stderr, result.stderr


@pytest.mark.parametrize("version", ["1.30.0", "1.30.0-gke.1", "1.37.2"])
def test_the_chart_installs_from_1_30_on(helm: Path, version: str) -> None:
    result = _template(helm, version)
    assert result.returncode == 0, result.stderr


def test_chart_yaml_the_chart_readme_and_the_install_doc_name_the_same_floor() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={FLOOR}.0-0"
    for doc in (CHART_DIR / "README.md", CHART_DIR / "README.md.gotmpl", REPO_ROOT / "docs" / "install.md"):
        text = doc.read_text()
        floors = set(re.findall(r"Kubernetes (1\.\d+) or newer", text))
        assert floors == {FLOOR}, f"{doc.name} names {floors or 'no'} Kubernetes floor"
