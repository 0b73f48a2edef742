"""The webhook's settings: one frozen value built from flags and environment by ``cli``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bridge_migration_contract import (
    DEFAULT_LOG_FORMAT,
    DEFAULT_MAC_POLICY,
    DEFAULT_NIC_REFRESH,
    AnnotationKeys,
    DeliveryChoice,
    LogFormat,
    MacPolicy,
    NicRefresh,
)
from webhook import __version__

SidecarGate = Literal["auto", "on", "off"]
ValidationMode = Literal["warn", "strict"]
LogLevel = Literal["debug", "info", "warning", "error"]

# The build tags the sidecar image with the package version (scripts/build-image.sh).
DEFAULT_SIDECAR_IMAGE = f"ghcr.io/kubevirt-bridge-migration/bridge-migration-sidecar:{__version__}"
# kube-apiserver refuses request bodies over 3 MiB; nothing legitimate is larger.
DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class WebhookConfig:
    # IPv6 any, with IPv4 too where the kernel allows (webhook/server.py: listen_socket).
    host: str = "::"
    port: int = 8443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    dev: bool = False
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    sidecar_pull_policy: str = "IfNotPresent"
    mac_policy: MacPolicy = DEFAULT_MAC_POLICY
    # Recorded as <prefix>nic-refresh on each VMI made migratable that has none (the fixer reads it).
    nic_refresh: NicRefresh = DEFAULT_NIC_REFRESH
    # Mixed into every pinned MAC (webhook/macs.py); empty: the MACs of releases before it.
    mac_salt: str = ""
    sidecar_gate: SidecarGate = "auto"
    # auto: hook when KubeVirt's Sidecar gate is on, inject when it is off or unknown.
    delivery: DeliveryChoice = "auto"
    # A node agent is deployed (the chart's node.enabled): without one, node delivery has no fixer.
    node_agent: bool = False
    validation: ValidationMode = "warn"
    kubeconfig: Path | None = None
    cni_mac_annotation: str | None = None
    keys: AnnotationKeys = field(default_factory=AnnotationKeys)
    # Below the webhook configurations' timeoutSeconds (chart default 5 s), so we answer first.
    request_deadline_s: float = 4.0
    api_timeout_s: float = 2.0
    gate_refresh_s: float = 30.0
    tls_reload_s: float = 5.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_level: LogLevel = "info"
    # Text or JSON lines (KubeVirt's keys, docs/kubevirt-facts.md O1): the webhook's own, and those of
    # the per-VM fixers it starts (the hook sidecar entry and the injected container).
    log_format: LogFormat = DEFAULT_LOG_FORMAT
    sidecar_log_format: LogFormat = DEFAULT_LOG_FORMAT
    # FastAPI's /docs and /redoc pages (Swagger UI and ReDoc from a CDN): off unless asked for.
    api_docs: bool = False
