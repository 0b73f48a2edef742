"""libvirt's domain lifecycle events as the sidecar sees them, without importing libvirt.

The numbers are libvirt's C API enums (virDomainEventType and the detail enums of the events
we act on): part of its ABI, so stable. tests/sidecar/test_triggers.py checks each against
libvirt-python's constant of the same name. An event libvirt adds later is still an `int`:
`LifecycleEvent` keeps the raw numbers and compares them with these members.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class EventType(IntEnum):
    """virDomainEventType."""

    DEFINED = 0
    UNDEFINED = 1
    STARTED = 2
    SUSPENDED = 3
    RESUMED = 4
    STOPPED = 5
    SHUTDOWN = 6
    PMSUSPENDED = 7
    CRASHED = 8


class StartedDetail(IntEnum):
    """virDomainEventStartedDetailType (the ones we tell apart)."""

    BOOTED = 0
    MIGRATED = 1


class ResumedDetail(IntEnum):
    """virDomainEventResumedDetailType."""

    UNPAUSED = 0
    MIGRATED = 1
    FROM_SNAPSHOT = 2
    POSTCOPY = 3
    POSTCOPY_FAILED = 4


class SuspendedDetail(IntEnum):
    """virDomainEventSuspendedDetailType (the ones we tell apart)."""

    PAUSED = 0
    MIGRATED = 1
    POSTCOPY_FAILED = 8


@dataclass(frozen=True)
class LifecycleEvent:
    """One VIR_DOMAIN_EVENT_ID_LIFECYCLE callback: `event` a virDomainEventType, `detail` its detail."""

    domain: str
    event: int
    detail: int
    at: float  # epoch seconds when the callback ran
