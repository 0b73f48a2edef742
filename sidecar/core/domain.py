"""A libvirt domain as the sidecar uses it: a Protocol, and libvirt's state numbers.

The engine, the executor and the REST views talk to this protocol, never to the libvirt
module; the watcher hands out real `libvirt.virDomain` objects, which satisfy it, and tests
drive the executor with wrapped real domains.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Protocol


class DomainState(IntEnum):
    """virDomainState; `name.lower()` is how GET /v1/status spells it."""

    NOSTATE = 0
    RUNNING = 1
    BLOCKED = 2
    PAUSED = 3
    SHUTDOWN = 4
    SHUTOFF = 5
    CRASHED = 6
    PMSUSPENDED = 7


class RunningReason(IntEnum):
    """virDomainRunningReason (the ones we tell apart)."""

    UNKNOWN = 0
    BOOTED = 1
    MIGRATED = 2
    UNPAUSED = 5
    POSTCOPY = 10


class Domain(Protocol):
    """The part of libvirt.virDomain the sidecar uses."""

    def name(self) -> str: ...
    def state(self) -> list[int]: ...
    def XMLDesc(self, flags: int = 0) -> str: ...  # noqa: N802 - libvirt's name
    def isPersistent(self) -> int: ...  # noqa: N802
    def updateDeviceFlags(self, xml: str, flags: int = 0) -> int: ...  # noqa: N802
    def detachDeviceFlags(self, xml: str, flags: int = 0) -> int: ...  # noqa: N802
    def attachDeviceFlags(self, xml: str, flags: int = 0) -> int: ...  # noqa: N802
    def vcpus(self) -> Any: ...
    def interfaceAddresses(self, source: int, flags: int = 0) -> Any: ...  # noqa: N802
    def metadata(self, type: int, uri: str | None, flags: int = 0) -> str: ...
    def setMetadata(  # noqa: N802
        self,
        type: int,
        metadata: str | None,
        key: str | None,
        uri: str | None,
        flags: int = 0,
    ) -> int: ...
