"""AdmissionReview (admission.k8s.io/v1) in and out: parsing, checks, and responses.

Everything that can be wrong with a request body is turned into ``BadReviewError`` with a one-line
message, which the HTTP layer answers with status 400: never a 500, never a half-read patch.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Required, TypedDict, cast

from webhook.decision import Decision

API_VERSION = "admission.k8s.io/v1"
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]

# The wire shapes of admission.k8s.io/v1 as JSON, field names as the API spells them. total=False:
# the apiserver leaves out what is empty, and what a value must hold is checked in parse_review.


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class AdmissionRequest(TypedDict, total=False):
    # Required: what parse_review insists on; the apiserver sends resource and userInfo too.
    uid: Required[str]
    kind: Required[GroupVersionKind]
    resource: GroupVersionResource
    subResource: str
    requestKind: GroupVersionKind
    requestResource: GroupVersionResource
    requestSubResource: str
    name: str
    namespace: str
    operation: Required[Operation]
    userInfo: UserInfo
    object: dict[str, Any] | None
    oldObject: dict[str, Any] | None
    dryRun: bool
    options: dict[str, Any] | None


class ResponseStatus(TypedDict, total=False):
    """The part of a metav1.Status a refusal carries: kubectl prints the message."""

    code: int
    message: str


class AdmissionResponse(TypedDict, total=False):
    uid: Required[str]
    allowed: Required[bool]
    patchType: Literal["JSONPatch"]
    patch: str  # base64 of the JSON-patch list
    warnings: list[str]
    status: ResponseStatus
    auditAnnotations: dict[str, str]


class AdmissionReview(TypedDict, total=False):
    apiVersion: Required[str]
    kind: Required[Literal["AdmissionReview"]]
    request: AdmissionRequest
    response: AdmissionResponse


class BadReviewError(ValueError):
    """The request is not an AdmissionReview we can answer."""


@dataclass(frozen=True)
class Review:
    """The parts of a checked AdmissionRequest that admitting reads."""

    api_version: str
    uid: str
    operation: Operation
    namespace: str
    obj: dict[str, Any]
    old_obj: dict[str, Any] | None = None  # oldObject, on UPDATE


def parse_review(body: bytes, *, expect_kind: str) -> Review:
    request = _checked_request(body, expect_kind=expect_kind)
    obj = request.get("object")
    old = request.get("oldObject")
    namespace = request.get("namespace")
    if namespace is None and obj is not None:
        namespace = (obj.get("metadata") or {}).get("namespace")
    return Review(
        api_version=API_VERSION,
        uid=request["uid"],
        operation=request["operation"],
        namespace=namespace if isinstance(namespace, str) else "",
        obj=obj if obj is not None else {},
        old_obj=old,
    )


def _checked_request(body: bytes, *, expect_kind: str) -> AdmissionRequest:
    """The request of an AdmissionReview body, once every field admitting reads has its type."""
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
    if operation not in OPERATIONS:
        raise BadReviewError(f"AdmissionReview request 'operation' must be one of {', '.join(OPERATIONS)}")
    kind = request.get("kind")
    if not isinstance(kind, dict) or not all(isinstance(kind.get(k), str) for k in ("group", "version", "kind")):
        raise BadReviewError("AdmissionReview request 'kind' must be {group, version, kind} strings")
    for field, typ in (("namespace", str), ("resource", dict), ("object", dict), ("oldObject", dict)):
        # kube-apiserver sends `"oldObject": null` on CREATE.
        nullable = field == "oldObject" and request.get(field) is None
        if field in request and not nullable and not isinstance(request[field], typ):
            raise BadReviewError(f"AdmissionReview request '{field}' has the wrong type")
    if kind["kind"] != expect_kind:
        raise BadReviewError(f"this endpoint admits {expect_kind}, got {kind['kind']}")
    obj = request.get("object")
    if obj is None and operation in ("CREATE", "UPDATE"):
        raise BadReviewError(f"AdmissionReview request for {operation} has no 'object'")
    if obj is not None:
        if obj.get("kind", expect_kind) != expect_kind:
            raise BadReviewError(f"this endpoint admits {expect_kind}, got {obj.get('kind')}")
        _check_metadata(obj)
    return cast(AdmissionRequest, request)


def _check_metadata(obj: Mapping[str, Any]) -> None:
    """The fields the deciders read must have their Kubernetes types when present."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        raise BadReviewError("object has no 'metadata' object")
    for field in ("annotations", "labels"):
        if field not in metadata:
            continue
        value = metadata[field]
        if not isinstance(value, dict):
            raise BadReviewError(f"metadata.{field} must be an object of strings")
        for key, item in value.items():
            if not isinstance(item, str):
                raise BadReviewError(f"metadata.{field}[{key!r}] is not a string")
    for field in ("name", "generateName", "namespace"):
        if field in metadata and not isinstance(metadata[field], str):
            raise BadReviewError(f"metadata.{field} is not a string")
    if "spec" in obj and not isinstance(obj["spec"], dict):
        raise BadReviewError("spec must be an object")


def response(review: Review, decision: Decision) -> AdmissionReview:
    resp: AdmissionResponse = {"uid": review.uid, "allowed": decision.allowed}
    if decision.patch:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = base64.b64encode(json.dumps(decision.patch, separators=(",", ":")).encode()).decode()
    if decision.warnings:
        resp["warnings"] = decision.warnings
    if not decision.allowed:
        resp["status"] = {"code": decision.code or 403, "message": decision.message or "denied"}
    return {"apiVersion": review.api_version, "kind": "AdmissionReview", "response": resp}
