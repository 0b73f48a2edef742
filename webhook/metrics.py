"""Prometheus metrics of the webhook (its own registry, so tests and apps do not collide)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

# The apiserver's own admission histogram starts at 5 ms; ours resolves the sub-millisecond
# range where this webhook actually lives.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class WebhookMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "bridge_migration_webhook_requests",
            "AdmissionReviews answered, by endpoint and verdict (patched, allowed, warned, denied, bad_request)",
            ["endpoint", "verdict"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bridge_migration_webhook_request_seconds",
            "Time to answer an AdmissionReview, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.patch_ops = Counter(
            "bridge_migration_webhook_patch_operations",
            "JSON-patch operations returned, by endpoint",
            ["endpoint"],
            registry=self.registry,
        )
        self.tls_reloads = Counter(
            "bridge_migration_webhook_tls_reloads",
            "New TLS certificate/key pairs seen on disk, by result (reloaded, rejected: the old pair kept serving)",
            ["result"],
            registry=self.registry,
        )
