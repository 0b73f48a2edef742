"""JSON-patch (RFC 6902) operations the mutators emit.

Kept tiny on purpose: the mutators only add or replace annotations and a few list members,
and building the operations directly keeps admission in the microsecond range.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict


class PatchOp(TypedDict):
    op: Literal["add", "replace"]
    path: str
    value: NotRequired[Any]


def pointer(*parts: str | int) -> str:
    """A JSON pointer, escaping '~' and '/' as RFC 6901 asks (annotation keys hold '/')."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def set_annotations(current: Mapping[str, str] | None, changes: Mapping[str, str]) -> list[PatchOp]:
    """Operations that make ``metadata.annotations`` hold ``changes`` (other keys untouched)."""
    if not changes:
        return []
    if current is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": dict(changes)}]
    return [
        {
            "op": "replace" if key in current else "add",
            "path": pointer("metadata", "annotations", key),
            "value": value,
        }
        for key, value in changes.items()
    ]
