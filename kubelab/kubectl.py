"""A thin kubectl runner: the tests drive the API server the way a person does."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KubectlError(RuntimeError):
    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr.strip()}")
        self.stderr = result.stderr
        self.stdout = result.stdout


def to_yaml(objects: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> str:
    docs = [objects] if isinstance(objects, Mapping) else list(objects)
    return yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False)


@dataclass(frozen=True)
class Kubectl:
    binary: Path
    kubeconfig: Path
    timeout_s: float = 120.0

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        if check and result.returncode != 0:
            raise KubectlError(args, result)
        return result

    def apply(
        self,
        objects: Sequence[Mapping[str, Any]] | Mapping[str, Any] | str,
        *,
        namespace: str | None = None,
        check: bool = True,
        extra: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -``; warnings from admission webhooks come back on stderr."""
        text = objects if isinstance(objects, str) else to_yaml(objects)
        ns = [f"--namespace={namespace}"] if namespace else []
        return self.run("apply", "-f", "-", *ns, *extra, stdin=text, check=check)

    def get(self, resource: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        ns = [f"--namespace={namespace}"] if namespace else []
        out = self.run("get", resource, name, *ns, "-o", "json").stdout
        obj: dict[str, Any] = json.loads(out)
        return obj

    def create_namespace(self, name: str, *, labels: Mapping[str, str] | None = None) -> None:
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}
        self.apply(ns)
