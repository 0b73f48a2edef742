"""What a decider hands back, and what it builds that from (pure, no I/O).

A ``Decision`` is the answer to one admission: allowed or refused, the JSON-patch (RFC 6902)
operations to apply, and the warnings kubectl prints, each starting with ``WARN_PREFIX``.

The patch helpers are kept tiny on purpose: the mutators only add or replace annotations and a few
list members, and building the operations directly keeps admission in the microsecond range.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

# Every warning and refusal message of ours starts with it, so a user tells ours from virt-api's.
WARN_PREFIX = "bridge-migration: "
# The API server refuses an object whose annotations add up to more (docs/kubevirt-facts.md K10).
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024


def annotations_size(annotations: Mapping[str, str]) -> int:
    """Annotations' size as the API server counts it: every key's and value's length in UTF-8 bytes
    (a lone surrogate, which JSON allows and Go decodes to U+FFFD, counts its 3 bytes)."""
    return sum(len(key.encode("utf-8", "surrogatepass")) + len(value.encode("utf-8", "surrogatepass"))
               for key, value in annotations.items())  # fmt: skip


class PatchOp(TypedDict):
    op: Literal["add", "replace"]
    path: str
    value: NotRequired[Any]


@dataclass
class Decision:
    allowed: bool = True
    patch: list[PatchOp] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Only for refusals: the message kubectl prints, and the HTTP-like code the apiserver shows.
    message: str | None = None
    code: int | None = None

    @classmethod
    def deny(cls, message: str, *, code: int = 403, warnings: list[str] | None = None) -> Decision:
        return cls(allowed=False, message=message, code=code, warnings=warnings or [])


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
