"""The chart works as a dependency of another chart: Helm hands every subchart the parent's `global`
values, which a schema closed at the root refused (helm/helm#10392)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from kubelab.chart import CHART_DIR


def _parent_chart(tmp_path: Path) -> Path:
    parent = tmp_path / "platform"
    (parent / "charts").mkdir(parents=True)
    shutil.copytree(CHART_DIR, parent / "charts" / CHART_DIR.name)
    version = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["version"]
    chart = {
        "apiVersion": "v2",
        "name": "platform",
        "version": "1.0.0",
        "dependencies": [{"name": CHART_DIR.name, "version": version}],
    }
    (parent / "Chart.yaml").write_text(yaml.safe_dump(chart))
    values = {
        "global": {"imageRegistry": "registry.example.org", "imagePullSecrets": [{"name": "corp"}]},
        CHART_DIR.name: {"macPolicy": "keep"},
    }
    (parent / "values.yaml").write_text(yaml.safe_dump(values))
    return parent


def test_the_chart_renders_as_a_subchart_of_a_parent_that_sets_global_values(helm: Path, tmp_path: Path) -> None:
    parent = _parent_chart(tmp_path)
    argv = [str(helm), "template", "platform", str(parent), "--namespace", "platform", "--skip-tests"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["metadata"]["name"] == "platform-bridge-migration"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--mac-policy=keep" in container["args"]  # the parent's values for the subchart arrive


def test_a_global_that_is_not_a_map_is_still_refused(helm: Path, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"global": "yes"}))
    argv = [str(helm), "template", "bm", str(CHART_DIR), "-f", str(values), "--skip-tests"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode != 0
    assert "global" in result.stderr, result.stderr
