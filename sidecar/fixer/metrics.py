"""Prometheus metrics of the fixups, and their text exposition (format 0.0.4).

Written here rather than taken from prometheus_client: the sidecar has five metric families,
and prometheus_client's import brings http.server, wsgiref and email along, ~3.5 MiB of RSS in
a container capped at 64M (docs/performance.md, "Sidecar memory"). The output is checked
against prometheus_client's own parser in tests/sidecar/test_metrics.py.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(pairs)) + "}"


class _Child:
    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        with self._lock:
            self.value += amount


class Counter:
    """A counter with a fixed set of label names; `.labels(...).inc()` as in prometheus_client."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name if name.endswith("_total") else name + "_total"
        self.documentation = documentation
        self.labelnames = labelnames
        self._lock = threading.Lock()
        self._children: dict[tuple[tuple[str, str], ...], _Child] = {}

    def labels(self, **labels: str) -> _Child:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        key = tuple((k, str(labels[k])) for k in self.labelnames)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = _Child(self._lock)
        return child

    def expose(self) -> Iterator[str]:
        yield f"# HELP {self.name} {_escape_help(self.documentation)}"
        yield f"# TYPE {self.name} counter"
        with self._lock:
            samples = [(key, child.value) for key, child in self._children.items()]
        for key, value in samples:
            yield f"{self.name}{_labels(key)} {_number(value)}"


class Histogram:
    """A histogram without labels, with fixed upper bounds (plus +Inf)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...] = _BUCKETS) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = (*sorted(buckets), math.inf)
        self._lock = threading.Lock()
        self._counts = [0] * len(self.bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        with self._lock:
            self._sum += value
            for i, bound in enumerate(self.bounds):
                if value <= bound:
                    self._counts[i] += 1
                    break

    def expose(self) -> Iterator[str]:
        yield f"# HELP {self.name} {_escape_help(self.documentation)}"
        yield f"# TYPE {self.name} histogram"
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative = 0
        for bound, count in zip(self.bounds, counts, strict=True):
            cumulative += count
            yield f'{self.name}_bucket{{le="{_number(bound)}"}} {_number(cumulative)}'
        yield f"{self.name}_count {_number(cumulative)}"
        yield f"{self.name}_sum {_number(total)}"


class Metrics:
    def __init__(self) -> None:
        self.interface_fixups = Counter(
            "bridge_migration_interface_fixups", "Per-interface fixups by action and result", ("action", "result")
        )
        self.runs = Counter("bridge_migration_fixup_runs", "Fixup runs by trigger and result", ("trigger", "result"))
        self.restores = Counter(
            "bridge_migration_nic_restores",
            "Original NICs attached again outside a fixup run: released late by the guest,"
            " or detached while libvirt was away",
            ("reason",),
        )
        self.duration = Histogram(
            "bridge_migration_fixup_duration_seconds", "Wall time of a fixup run that changed something"
        )
        self.event_to_done = Histogram(
            "bridge_migration_event_to_fixup_done_seconds", "From the libvirt resume event to the end of the fixup"
        )
        self.outcomes = Counter(
            "bridge_migration_interface_outcomes",
            "Per-interface outcomes as the guest showed them (verified, unverified, stale, failed) by the last step",
            ("outcome", "step"),
        )
        self.time_to_verified = Histogram(
            "bridge_migration_time_to_verified_seconds",
            "From the resume event (or request) to the guest agent showing the NIC's expected address",
        )
        self.link_reasserted = Counter(
            "bridge_migration_link_reasserted",
            "Link-downs set again after another client (KubeVirt's reconcile) raised the link during a hold",
            (),
        )

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        families: tuple[Counter | Histogram, ...] = (
            self.interface_fixups,
            self.runs,
            self.restores,
            self.duration,
            self.event_to_done,
            self.outcomes,
            self.time_to_verified,
            self.link_reasserted,
        )
        lines = [line for family in families for line in family.expose()]
        return ("\n".join(lines) + "\n").encode()
