"""The JSON the sidecar speaks: fixup records, status and the fixup request.

Field names are camelCase on the wire and stable; the REST layer and the CLI share them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from bridge_migration_contract import FixupAction, MacPolicy

FixupResult = Literal["success", "failed", "noop", "dry-run", "disabled"]
InterfaceResult = Literal["done", "failed", "restored", "planned", "skipped"]
Trigger = Literal["resumed-migrated", "postcopy-completed", "catch-up", "manual"]


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class InterfaceFixup(Model):
    name: str
    alias: str
    action: FixupAction
    reason: str
    old_mac: str | None
    new_mac: str | None
    mac_source: Literal["annotation", "pod", "domain"]
    result: InterfaceResult
    error: str | None = None
    duration_ms: float = 0.0


class FixupRecord(Model):
    id: int
    trigger: Trigger
    # Epoch seconds and ISO-8601 (UTC) for each point of the timeline.
    trigger_time: float
    trigger_time_iso: str
    started: float
    started_iso: str
    finished: float | None = None
    finished_iso: str | None = None
    duration_ms: float | None = None
    event_to_done_ms: float | None = Field(
        default=None, description="From the libvirt event (or request) to the end of the fixup"
    )
    domain: str | None
    policy: MacPolicy
    dry_run: bool = False
    forced: bool = False
    result: FixupResult
    message: str = ""
    interfaces: list[InterfaceFixup] = Field(default_factory=list)


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
    restore_pending: list[str] = Field(
        default_factory=list,
        description="Aliases of NICs the sidecar will attach again: a detach the guest may still"
        " honour late, or one interrupted by libvirt going away",
    )
    last_fixup: FixupRecord | None


class Health(Model):
    ok: bool = Field(description="libvirt is connected: the sidecar can fix NICs (HTTP 200 iff true)")
    ready: bool = Field(description="ok, and virt-launcher has called Info (or the hook server is off)")
    libvirt_connected: bool
    hook_registered: bool
    hook_server_enabled: bool
    detail: str


class ErrorBody(Model):
    detail: str
    known_interfaces: list[str] | None = None
