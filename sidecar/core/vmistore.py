"""The VMI object virt-launcher hands the hook server, kept for the fixup plan."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class VmiStore:
    """The last VMI virt-launcher showed us (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vmi: dict[str, Any] | None = None
        self._logged_bad = False
        self.registered = threading.Event()

    def get(self) -> dict[str, Any] | None:
        with self._lock:
            return self._vmi

    def offer(self, raw: bytes) -> None:
        """Keep the VMI JSON; a malformed one is logged once and the old value kept."""
        try:
            vmi = json.loads(raw.decode("utf-8")) if raw else None
            if vmi is not None and not isinstance(vmi, dict):
                raise ValueError("VMI is not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            if not self._logged_bad:
                self._logged_bad = True
                log.warning("ignoring malformed VMI JSON from virt-launcher: %s", exc)
            return
        if vmi is not None:
            with self._lock:
                self._vmi = vmi
