"""Fixtures for the chart tests: the pinned helm binary and a renderer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubelab.chart import helm_template
from kubelab.tools import find_tools

Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def helm() -> Path:
    # No skip: without the binaries the chart cannot be checked, and that is a failure.
    return find_tools(need=("helm",)).helm


@pytest.fixture(scope="session")
def render(helm: Path) -> Render:
    def _render(values: dict[str, Any] | None = None, *, tests: bool = False, **kwargs: Any) -> list[dict[str, Any]]:
        """The release's objects; ``tests=True`` adds the `helm test` hooks (templates/tests/)."""
        extra = list(kwargs.pop("extra", ()))
        if not tests:
            extra.append("--skip-tests")
        return helm_template(helm, values=values, extra=extra, **kwargs)

    return _render


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
