"""Merging our sidecar into KubeVirt's ``hooks.kubevirt.io/hookSidecars`` annotation.

The annotation is a JSON list of ``{image, imagePullPolicy, command, args, configMap, pvc}``
written by users for their own hooks: every entry of theirs is kept as it was, ours is added
once. Ours is recognised by its image *repository*, whatever the tag or digest: after a
`helm upgrade` the tag changes, and a second entry of ours would make virt-launcher wait for two
sockets of the same file name, time out and panic (docs/kubevirt-facts.md H6). The same test,
`is_our_image`, tells our container in a launcher pod and our entry in a migrating VMI.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

from bridge_migration_contract import DEFAULT_LOG_FORMAT, DEFAULT_PREFIX, FIXER_COMMAND, LogFormat, fixer_args


class SidecarEntry(TypedDict, total=False):
    image: str
    imagePullPolicy: str
    command: list[str]
    args: list[str]


class MalformedSidecarsError(ValueError):
    """The user's hookSidecars value cannot be merged safely."""


def our_entry(
    *, image: str, pull_policy: str, prefix: str = DEFAULT_PREFIX, log_format: LogFormat = DEFAULT_LOG_FORMAT
) -> SidecarEntry:
    # An explicit command keeps the entry independent of the image's ENTRYPOINT.
    entry: SidecarEntry = {
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": list(FIXER_COMMAND),
    }
    # No "args" key at all when there are none: the entry is compared whole (merged_sidecars).
    if args := fixer_args(delivery="hook", prefix=prefix, log_format=log_format):
        entry["args"] = args
    return entry


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


def image_repository(ref: str) -> str:
    """An image reference without its digest and tag: `reg:5000/a/b:1.2@sha256:..` -> `reg:5000/a/b`."""
    name = ref.strip().partition("@")[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:  # a colon after the last slash is a tag; before it, a registry port
        name = name[:colon]
    return name


def is_our_image(image: object, ours: str) -> bool:
    """True for an image of our repository, any tag or digest (every release's entries)."""
    return isinstance(image, str) and bool(image.strip()) and image_repository(image) == image_repository(ours)


def has_our_sidecar(entries: list[dict[str, Any]], image: str) -> bool:
    return any(is_our_image(e.get("image"), image) for e in entries)


def merged_sidecars(
    raw: str | None,
    *,
    image: str,
    pull_policy: str,
    prefix: str = DEFAULT_PREFIX,
    log_format: LogFormat = DEFAULT_LOG_FORMAT,
) -> str | None:
    """The new annotation value with exactly one entry of ours, the current one, where the first
    of ours stood (or appended); None when the annotation already is that. The user's entries
    are kept, in their order, with their content as it was."""
    entries = parse_sidecars(raw)
    wanted = dict(our_entry(image=image, pull_policy=pull_policy, prefix=prefix, log_format=log_format))
    ours = [i for i, e in enumerate(entries) if is_our_image(e.get("image"), image)]
    if len(ours) == 1 and entries[ours[0]] == wanted:
        return None
    merged: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        if i not in ours:
            merged.append(entry)
        elif i == ours[0]:
            merged.append(wanted)
    if not ours:
        merged.append(wanted)
    return json.dumps(merged, separators=(",", ":"))
