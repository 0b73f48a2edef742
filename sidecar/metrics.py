"""Prometheus metrics of the fixups, in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.interface_fixups = Counter(
            "bridge_migration_interface_fixups",
            "Per-interface fixups by action and result",
            ["action", "result"],
            registry=self.registry,
        )
        self.runs = Counter(
            "bridge_migration_fixup_runs",
            "Fixup runs by trigger and result",
            ["trigger", "result"],
            registry=self.registry,
        )
        self.restores = Counter(
            "bridge_migration_nic_restores",
            "Original NICs attached again outside a fixup run: released late by the guest,"
            " or detached while libvirt was away",
            ["reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "bridge_migration_fixup_duration_seconds",
            "Wall time of a fixup run that changed something",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.event_to_done = Histogram(
            "bridge_migration_event_to_fixup_done_seconds",
            "From the libvirt resume event to the end of the fixup",
            buckets=_BUCKETS,
            registry=self.registry,
        )
