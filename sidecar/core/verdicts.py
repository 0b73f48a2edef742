"""Which libvirt lifecycle event means "the guest has landed here": the verdicts, from data alone.

The reasoning per event (pre-copy, post-copy, a paused arrival) is in sidecar/fixer/dispatch.py,
which acts on these verdicts.
"""

from __future__ import annotations

from typing import Literal

from sidecar.core.events import EventType, ResumedDetail, StartedDetail, SuspendedDetail

# What a lifecycle event means for the fixup (the webhook's admission `Decision` is another thing).
EventVerdict = Literal["incoming", "postcopy-started", "fix", "unpaused", "postcopy-failed", "ignore"]

_VERDICTS: dict[tuple[int, int], EventVerdict] = {
    (EventType.STARTED, StartedDetail.MIGRATED): "incoming",
    (EventType.RESUMED, ResumedDetail.MIGRATED): "fix",
    (EventType.RESUMED, ResumedDetail.POSTCOPY): "postcopy-started",
    (EventType.RESUMED, ResumedDetail.UNPAUSED): "unpaused",
    (EventType.RESUMED, ResumedDetail.POSTCOPY_FAILED): "postcopy-failed",
    (EventType.SUSPENDED, SuspendedDetail.POSTCOPY_FAILED): "postcopy-failed",
}


def classify(event: int, detail: int) -> EventVerdict:
    return _VERDICTS.get((event, detail), "ignore")
