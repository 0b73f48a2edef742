"""The chart README is helm-docs' output for README.md.gotmpl and values.yaml, so it cannot drift
from the values: a changed default or comment without `scripts/chart-readme.sh` fails here."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from kubelab.chart import CHART_DIR
from kubelab.tools import DEFAULT_BIN, REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "chart-readme.sh"


def _generated() -> str:
    bin_dir = Path(os.environ.get("BM_K8S_BIN", str(DEFAULT_BIN)))
    # No skip: without helm-docs (scripts/build-k8s.sh builds it) the README cannot be checked.
    assert (bin_dir / "helm-docs").is_file(), f"no helm-docs in {bin_dir}: run scripts/build-k8s.sh helm-docs"
    result = subprocess.run(
        [str(SCRIPT), "--dry-run"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "BM_K8S_BIN": str(bin_dir)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), f"helm-docs generated nothing: {result.stderr}"
    return result.stdout


def test_the_committed_readme_is_what_helm_docs_generates() -> None:
    committed = (CHART_DIR / "README.md").read_text()
    assert committed == _generated(), "charts/bridge-migration/README.md is stale: run scripts/chart-readme.sh"


def _rows() -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in (CHART_DIR / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] not in ("Key", "-----"):
            rows[cells[0]] = cells[3]
    return rows


def test_every_value_is_in_the_table_with_a_description() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    rows = _rows()
    undescribed = [key for key, text in rows.items() if not text]
    assert undescribed == [], f"values with no `# --` comment: {undescribed}"

    def listed(key: str, value: object) -> bool:
        # A value is listed itself, or (a map) through each of its children.
        if key in rows:
            return True
        return isinstance(value, dict) and bool(value) and all(listed(f"{key}.{k}", v) for k, v in value.items())

    missing = [key for key, value in values.items() if not listed(key, value)]
    assert missing == [], f"not in the README's values table: {missing}"
    assert rows["image.digest"] and rows["sidecar.image.pullPolicy"] and rows["commonLabels"]
