"""AdmissionReview (admission.k8s.io/v1) in and out: parsing, checks, and responses.

Everything that can be wrong with a request body is turned into ``BadReviewError`` with a one-line
message, which the HTTP layer answers with status 400: never a 500, never a half-read patch.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.decision import Decision

API_VERSION = "admission.k8s.io/v1"


class BadReviewError(ValueError):
    """The request is not an AdmissionReview we can answer."""


@dataclass(frozen=True)
class Review:
    api_version: str
    uid: str
    operation: str
    namespace: str
    obj: dict[str, Any]
    kind: Mapping[str, Any]


def parse_review(body: bytes, *, expect_kind: str) -> Review:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadReviewError(f"body is not JSON: {exc}") from exc
    except RecursionError as exc:
        # The stdlib parser recurses per nesting level; nothing legitimate nests this deep.
        raise BadReviewError("body is not JSON we accept: nested too deeply") from exc
    if not isinstance(doc, dict) or doc.get("kind") != "AdmissionReview":
        raise BadReviewError("body is not an AdmissionReview (kind must be 'AdmissionReview')")
    api_version = doc.get("apiVersion")
    if api_version != API_VERSION:
        raise BadReviewError(f"unsupported AdmissionReview apiVersion {api_version!r}; only {API_VERSION} is served")
    request = doc.get("request")
    if not isinstance(request, dict):
        raise BadReviewError("AdmissionReview has no 'request' object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReviewError("AdmissionReview request has no 'uid'")
    operation = request.get("operation")
    if not isinstance(operation, str):
        raise BadReviewError("AdmissionReview request has no 'operation'")
    kind = request.get("kind")
    if not isinstance(kind, dict) or not isinstance(kind.get("kind"), str):
        raise BadReviewError("AdmissionReview request has no 'kind' {group, version, kind}")
    obj = request.get("object")
    if operation in ("CREATE", "UPDATE"):
        if not isinstance(obj, dict):
            raise BadReviewError(f"AdmissionReview request for {operation} has no 'object'")
        if kind["kind"] != expect_kind or obj.get("kind", expect_kind) != expect_kind:
            raise BadReviewError(f"this endpoint admits {expect_kind}, got {obj.get('kind') or kind['kind']}")
        _check_metadata(obj)
    namespace = request.get("namespace")
    if namespace is None and isinstance(obj, dict):
        namespace = (obj.get("metadata") or {}).get("namespace")
    return Review(
        api_version=api_version,
        uid=uid,
        operation=operation,
        namespace=namespace if isinstance(namespace, str) else "",
        obj=obj if isinstance(obj, dict) else {},
        kind=kind,
    )


def _check_metadata(obj: Mapping[str, Any]) -> None:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        raise BadReviewError("object has no 'metadata' object")
    for field in ("annotations", "labels"):
        value = metadata.get(field)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise BadReviewError(f"metadata.{field} must be an object of strings")
        for key, item in value.items():
            if not isinstance(item, str):
                raise BadReviewError(f"metadata.{field}[{key!r}] is not a string")
    for field in ("name", "generateName", "namespace"):
        value = metadata.get(field)
        if value is not None and not isinstance(value, str):
            raise BadReviewError(f"metadata.{field} is not a string")
    spec = obj.get("spec")
    if spec is not None and not isinstance(spec, dict):
        raise BadReviewError("spec must be an object")


def response(review: Review, decision: Decision) -> dict[str, Any]:
    resp: dict[str, Any] = {"uid": review.uid, "allowed": decision.allowed}
    if decision.patch:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = base64.b64encode(json.dumps(decision.patch, separators=(",", ":")).encode()).decode()
    if decision.warnings:
        resp["warnings"] = decision.warnings
    if not decision.allowed:
        resp["status"] = {"code": decision.code or 403, "message": decision.message or "denied"}
    return {"apiVersion": review.api_version, "kind": "AdmissionReview", "response": resp}


def make_review(obj: Mapping[str, Any], *, operation: str = "CREATE", uid: str | None = None) -> dict[str, Any]:
    """An AdmissionReview shaped as kube-apiserver sends it (for the demo, tests and benchmarks)."""
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    kind = str(obj["kind"])
    return {
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
            "namespace": obj["metadata"].get("namespace", "default"),
            "operation": operation,
            "userInfo": {"username": "system:admin"},
            "object": obj,
            "dryRun": False,
        },
    }
