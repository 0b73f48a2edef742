"""The JSON the sidecar speaks: fixup records, status and the fixup request.

Field names are camelCase on the wire and stable; the REST layer and the CLI share them.
msgspec Structs rather than pydantic models: the same typed, validated, schema-producing
models for about a tenth of the memory (pydantic's import alone is ~20 MiB, msgspec's ~2),
which matters in a container capped at 64M (docs/performance.md, "Sidecar memory").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from bridge_migration_contract import FixupAction, MacPolicy

# Where the expected MAC came from, in the order of KubeVirt's DHCP rule: the `macs` annotation
# (what the webhook pinned or recorded from the spec), the VMI spec, the VMI status (v1.9+), the
# pod link; `domain` when none of them is known (sidecar/core/plan.py decides it).
MacSource = Literal["annotation", "spec", "status", "pod", "domain"]
# A fixup's result is what the guest showed afterwards, not what libvirt's calls returned:
# verified (the guest agent showed every refreshed NIC with the address the target gives it),
# unverified (the steps ran, but no agent answered for at least one NIC), failed (a NIC still
# stale after the last step, or a step failed). noop, dry-run and disabled changed nothing.
FixupResult = Literal["verified", "unverified", "failed", "noop", "dry-run", "disabled"]
InterfaceResult = Literal["done", "failed", "restored", "planned", "skipped"]
# What the guest showed for one NIC after its steps: verified (the expected address, seen through
# the guest agent), unverified (nobody could tell: no agent, or no address to expect), stale (the
# agent showed another address when the window ended), failed (stale after the last step of the
# escalation, or a step could not be carried out).
Outcome = Literal["verified", "unverified", "stale", "failed"]
# What ended a link refresh's hold: the guest's vCPU went idle after the link-down (it handled
# the link change), the pause for a fixup asked for by hand, the settle time after the resume
# (no evidence came), or the guest agent showed the NIC lost its address.
HoldEnd = Literal["guest-idle", "pause", "settle", "agent"]
# node-hook: virt-handler called the node agent (KubeVirt v1.9 Plugin API, docs/node-agent.md).
Trigger = Literal[
    "resumed-migrated", "postcopy-completed", "unpaused-after-migration", "catch-up", "manual", "node-hook"
]


class Model(msgspec.Struct, rename="camel", kw_only=True):
    """Base of every wire model: camelCase names, keyword-only construction."""


class FixupStep(Model, omit_defaults=True):
    """One step of the escalation for one NIC, and what the guest showed after it."""

    action: FixupAction
    result: InterfaceResult
    outcome: Outcome | None = None
    detail: str = ""
    duration_ms: float = 0.0
    held_ms: Annotated[float | None, msgspec.Meta(description="Link refresh: how long the link stayed down")] = None
    hold_ended_by: HoldEnd | None = None
    reasserted: Annotated[
        int,
        msgspec.Meta(
            description="Link refresh: how often another libvirt client (KubeVirt's own reconcile) raised the link"
            " during the hold and the fixer set it down again"
        ),
    ] = 0


class InterfaceFixup(Model):
    name: str
    alias: str
    action: FixupAction
    reason: str
    old_mac: str | None
    new_mac: str | None
    mac_source: MacSource
    result: InterfaceResult
    error: str | None = None
    duration_ms: float = 0.0
    outcome: Outcome | None = None
    outcome_reason: str = ""
    verified_ms: Annotated[
        float | None, msgspec.Meta(description="From the trigger (the resume event) to the guest showing its address")
    ] = None
    address: Annotated[str | None, msgspec.Meta(description="The IPv4 address the guest agent showed last")] = None
    steps: list[FixupStep] = msgspec.field(default_factory=list)


class FixupRecord(Model):
    id: int
    trigger: Trigger
    # Epoch seconds and ISO-8601 (UTC) for each point of the timeline.
    trigger_time: float
    trigger_time_iso: str
    started: float
    started_iso: str
    domain: str | None
    policy: MacPolicy
    result: FixupResult
    finished: float | None = None
    finished_iso: str | None = None
    duration_ms: float | None = None
    event_to_done_ms: Annotated[
        float | None, msgspec.Meta(description="From the libvirt event (or request) to the end of the fixup")
    ] = None
    dry_run: bool = False
    forced: bool = False
    message: str = ""
    interfaces: list[InterfaceFixup] = msgspec.field(default_factory=list)


class FixupRequest(Model):
    interfaces: list[str] | None = None
    dry_run: bool = False
    force: bool = False


class InterfaceStatus(Model):
    name: str | None
    alias: str | None
    type: str
    mac: str | None
    link_state: Literal["up", "down"]
    target_dev: str | None
    managed: bool
    pod_link: str | None
    pod_link_mac: str | None
    pod_link_state: str | None


class Status(Model):
    domain: str | None
    domain_state: str | None
    libvirt_connected: bool
    libvirt_uri: str
    hook_registered: bool
    vmi_known: bool
    policy: MacPolicy
    enabled: bool
    interfaces: list[InterfaceStatus]
    last_fixup: FixupRecord | None
    restore_pending: Annotated[
        list[str],
        msgspec.Meta(
            description="Aliases of NICs the sidecar will attach again: a detach the guest may still"
            " honour late, or one interrupted by libvirt going away"
        ),
    ] = msgspec.field(default_factory=list)


class Health(Model):
    ok: Annotated[bool, msgspec.Meta(description="libvirt is connected: the sidecar can fix NICs (HTTP 200 iff true)")]
    ready: Annotated[
        bool, msgspec.Meta(description="ok, and virt-launcher has called Info (or the hook server is off)")
    ]
    libvirt_connected: bool
    hook_registered: bool
    hook_server_enabled: bool
    detail: str


class ErrorBody(Model, omit_defaults=True):
    detail: str
    known_interfaces: list[str] | None = None


WIRE_MODELS: tuple[type[Model], ...] = (
    FixupRecord,
    InterfaceFixup,
    FixupStep,
    FixupRequest,
    Status,
    InterfaceStatus,
    Health,
    ErrorBody,
)


def to_json(value: Model | list[FixupRecord]) -> bytes:
    return msgspec.json.encode(value)


def to_builtins(value: Model | list[FixupRecord]) -> Any:
    """Plain dicts and lists with the wire names (what the JSON holds)."""
    return msgspec.to_builtins(value)
