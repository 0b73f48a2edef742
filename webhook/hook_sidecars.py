"""Merging our sidecar into KubeVirt's ``hooks.kubevirt.io/hookSidecars`` annotation.

The annotation is a JSON list of ``{image, imagePullPolicy, command, args, configMap, pvc}``
written by users for their own hooks: every entry of theirs is kept as it was, ours is added
once and recognised again by its image.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict


class SidecarEntry(TypedDict, total=False):
    image: str
    imagePullPolicy: str
    command: list[str]
    args: list[str]


class MalformedSidecarsError(ValueError):
    """The user's hookSidecars value cannot be merged safely."""


def our_entry(*, image: str, pull_policy: str) -> SidecarEntry:
    # An explicit command keeps the entry independent of the image's ENTRYPOINT.
    return {"image": image, "imagePullPolicy": pull_policy, "command": ["python", "-m", "sidecar", "serve"]}


def parse_sidecars(raw: str | None) -> list[dict[str, Any]]:
    if raw is None or not raw.strip():
        return []
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MalformedSidecarsError(f"not valid JSON ({exc.msg})") from exc
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise MalformedSidecarsError("must be a JSON list of objects")
    return value


def has_our_sidecar(entries: list[dict[str, Any]], image: str) -> bool:
    return any(e.get("image") == image for e in entries)


def merged_sidecars(raw: str | None, *, image: str, pull_policy: str) -> str | None:
    """The new annotation value with our entry appended, or None when it is already there."""
    entries = parse_sidecars(raw)
    if has_our_sidecar(entries, image):
        return None
    entries.append(dict(our_entry(image=image, pull_policy=pull_policy)))
    return json.dumps(entries, separators=(",", ":"))
