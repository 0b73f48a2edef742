"""What worked for this VM last time, kept in the domain's own `<metadata>` so it migrates with it.

Under `nic-refresh: auto` a NetworkManager guest ignores the link refresh and is verified only
after the reattach; the next migration of that VM then starts at the reattach instead of paying
for the link refresh again. The fixer keeps that in an element of its own namespace inside the
domain's `<metadata>`: the live domain's XML goes to the target with the migration, so the
fixer there reads what the one on the source learned (docs/kubevirt-facts.md R20 and after say
what KubeVirt does with such an element). Nothing else is stored, and any failure to read or write
it only costs the next migration its head start.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any, Final, Protocol

from bridge_migration_contract import FixupAction

log = logging.getLogger(__name__)

URI: Final = "https://bridge-migration.kubevirt.io/fixer/v1"
PREFIX: Final = "bridge-migration"
METADATA_ELEMENT = 2  # VIR_DOMAIN_METADATA_ELEMENT
ERR_NO_DOMAIN_METADATA = 80  # VIR_ERR_NO_DOMAIN_METADATA: nothing stored yet
_STEPS: Final[frozenset[str]] = frozenset({"link-refresh", "reattach"})


class MetadataDomain(Protocol):
    def metadata(self, type: int, uri: str | None, flags: int = 0) -> str: ...
    def setMetadata(  # noqa: N802 - libvirt's name
        self,
        type: int,
        metadata: str | None,
        key: str | None,
        uri: str | None,
        flags: int = 0,
    ) -> int: ...


def _code(exc: BaseException) -> Any:
    code_of = getattr(exc, "get_error_code", None)
    return code_of() if callable(code_of) else None


def recall(dom: MetadataDomain) -> dict[str, FixupAction]:
    """Domain alias -> the step that verified last time; empty when nothing (valid) is stored."""
    try:
        text = dom.metadata(METADATA_ELEMENT, URI, 0)
    except Exception as exc:
        if _code(exc) != ERR_NO_DOMAIN_METADATA:
            log.warning("cannot read what worked last time from the domain's metadata: %s", exc)
        return {}
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        log.warning("ignoring unreadable fixer metadata in the domain: %r", text[:200])
        return {}
    out: dict[str, FixupAction] = {}
    for nic in root.iter("nic"):
        alias, start = nic.get("alias"), nic.get("start")
        if alias and start in _STEPS:
            out[alias] = "reattach" if start == "reattach" else "link-refresh"
    return out


def to_xml(starts: Mapping[str, FixupAction]) -> str:
    root = ET.Element("nics")
    for alias in sorted(starts):
        ET.SubElement(root, "nic", {"alias": alias, "start": starts[alias]})
    return ET.tostring(root, encoding="unicode")


def remember(dom: MetadataDomain, starts: Mapping[str, FixupAction], flags: int) -> bool:
    """Store ``starts`` (alias -> step) in the live domain (and its definition, per ``flags``).
    An empty mapping removes the element. True when libvirt took it."""
    try:
        if starts:
            dom.setMetadata(METADATA_ELEMENT, to_xml(starts), PREFIX, URI, flags)
        else:
            dom.setMetadata(METADATA_ELEMENT, None, None, URI, flags)
    except Exception as exc:
        log.warning("cannot keep what worked in the domain's metadata (the next migration starts over): %s", exc)
        return False
    return True
