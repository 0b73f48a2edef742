"""The webhook's log of what it decided: one INFO line per admission (the object, the verdict, what
the patch touched, why) and one WARNING per review it could not read (HTTP 400 or 413).

With ``--log-format json`` each line's fields are JSON keys (bridge_migration_contract.LogFormatter),
named as KubeVirt names an object's (namespace, name, kind, uid; docs/kubevirt-facts.md O1). What
the patch touched is named, never its values: annotation keys, and the JSON pointers of the rest.
Everything here is read from the request, which kube-apiserver has not validated yet when a
mutating webhook sees it: strings are clipped and control characters escaped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

from bridge_migration_contract import DOMAIN_ANNOTATION, log_fields
from webhook.admission import Review
from webhook.decision import Decision, PatchOp

log = logging.getLogger(__name__)

ANNOTATIONS_PATH: Final = "/metadata/annotations"
# Longer than any valid Kubernetes name (253) or annotation key (317): room for both, not for a body.
MAX_NAME: Final = 320
MAX_TEXT: Final = 1000


def _clean(value: object, limit: int = MAX_NAME) -> str | None:
    """``value`` as a string fit for one log line, None when it is no string or empty."""
    if not isinstance(value, str) or not value:
        return None
    text = value if len(value) <= limit else value[:limit] + "..."
    return text if text.isprintable() else json.dumps(text)[1:-1]


def _unescape(token: str) -> str:
    """One JSON-pointer token as written (RFC 6901: ~1 is '/', ~0 is '~')."""
    return token.replace("~1", "/").replace("~0", "~")


def patch_touches(patch: list[PatchOp]) -> tuple[list[str], list[str]]:
    """The annotation keys and the other paths a patch sets (no values), each once, in order."""
    keys: dict[str, None] = {}
    paths: dict[str, None] = {}
    for op in patch:
        path = op["path"]
        if path == ANNOTATIONS_PATH and isinstance(op.get("value"), Mapping):
            keys.update(dict.fromkeys(str(k) for k in op["value"]))
        elif path.startswith(ANNOTATIONS_PATH + "/"):
            keys[_unescape(path[len(ANNOTATIONS_PATH) + 1 :])] = None
        else:
            paths[path] = None
    return [k for k in map(_clean, keys) if k], [p for p in map(_clean, paths) if p]


def _vmi_of(kind: str, obj: Mapping[str, Any]) -> str | None:
    """The VMI a launcher pod or a migration is about (a VMI's or VM's own name is its ``name``)."""
    if kind == "Pod":
        return _clean(((obj.get("metadata") or {}).get("annotations") or {}).get(DOMAIN_ANNOTATION))
    if kind == "VirtualMachineInstanceMigration":
        spec = obj.get("spec")
        return _clean(spec.get("vmiName")) if isinstance(spec, Mapping) else None
    return None


def decision_fields(review: Review, decision: Decision, *, endpoint: str, kind: str, verdict: str) -> dict[str, Any]:
    """The fields of one decision line. ``uid`` is the object's (kube-apiserver assigns it after
    the mutating webhooks, so a CREATE they see has none yet); ``request`` is the review's."""
    obj = review.obj or review.old_obj or {}
    meta = obj.get("metadata") or {}
    name = _clean(meta.get("name"))
    annotations, paths = patch_touches(decision.patch)
    return {
        "endpoint": endpoint,
        "kind": kind,
        "operation": review.operation,
        "namespace": _clean(review.namespace),
        "name": name,
        "generateName": None if name else _clean(meta.get("generateName")),
        "uid": _clean(meta.get("uid")),
        "vmi": _vmi_of(kind, obj),
        "request": _clean(review.uid),
        "verdict": verdict,
        "allowed": decision.allowed,
        "patchOps": len(decision.patch),
        "annotations": annotations or None,
        "paths": paths or None,
        "warnings": [_clean(w, MAX_TEXT) for w in decision.warnings] or None,
        "reason": None if decision.allowed else _clean(decision.message or "denied", MAX_TEXT),
        "code": None if decision.allowed else decision.code or 403,
    }


def log_decision(review: Review, decision: Decision, *, endpoint: str, kind: str, verdict: str, seconds: float) -> None:
    """The INFO line of one answered review; ``verdict`` is the label /metrics counts it under."""
    if not log.isEnabledFor(logging.INFO):
        return  # --log-level warning: not even the fields are built
    fields = decision_fields(review, decision, endpoint=endpoint, kind=kind, verdict=verdict)
    fields["durationMs"] = round(seconds * 1000, 2)
    who = f"{fields['namespace'] or ''}/{fields['name'] or (fields['generateName'] or '') + '*'}"
    log.info("%s %s %s: %s", review.operation, kind, who, verdict, extra=log_fields(**fields))


def log_bad_review(*, endpoint: str, kind: str, status: int, reason: str) -> None:
    """The WARNING line of a review answered with an HTTP error, never decided."""
    why = _clean(reason, MAX_TEXT) or "?"
    fields = log_fields(endpoint=endpoint, kind=kind, status=status, reason=why)
    log.warning("%s: review answered with HTTP %d, not decided", endpoint, status, extra=fields)
