"""Rendering the Helm chart, and pointing its webhook configurations at a loopback webhook."""

from __future__ import annotations

import base64
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kubelab.tools import REPO_ROOT

CHART_DIR = REPO_ROOT / "charts" / "bridge-migration"
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def helm_template(
    helm: Path,
    *,
    release: str = "bridge-migration",
    namespace: str = "bridge-migration",
    values: Mapping[str, Any] | None = None,
    show_only: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """``helm template`` of the chart, as a list of objects (empty documents dropped)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-") as vals:
        yaml.safe_dump(dict(values or {}), vals)
        vals.flush()
        argv = [str(helm), "template", release, str(CHART_DIR), "--namespace", namespace, "-f", vals.name]
        for template in show_only:
            argv += ["--show-only", template]
        argv += list(extra)
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"helm template failed:\n{result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def loopback_webhook_configs(
    rendered: Sequence[Mapping[str, Any]], *, base_url: str, ca_pem: bytes
) -> list[dict[str, Any]]:
    """The chart's webhook configurations with each Service reference swapped for ``base_url`` + path
    and the caBundle for ``ca_pem``: the only two changes, so every other field is the chart's own."""
    out: list[dict[str, Any]] = []
    bundle = base64.b64encode(ca_pem).decode()
    for doc in rendered:
        if doc.get("kind") not in WEBHOOK_KINDS:
            continue
        config: dict[str, Any] = yaml.safe_load(yaml.safe_dump(dict(doc)))  # deep copy
        for hook in config["webhooks"]:
            service = hook["clientConfig"]["service"]
            hook["clientConfig"] = {"url": base_url.rstrip("/") + service["path"], "caBundle": bundle}
        out.append(config)
    return out
