"""OpenAPI descriptions of the admission endpoints.

The handlers read raw bytes (for speed and to answer malformed bodies with 400 ourselves), so
FastAPI cannot infer their schema: it is spelled out here, for users reading /docs and for
schemathesis, which generates requests from it.
"""

from __future__ import annotations

from typing import Any

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def admitted_object(kind: str) -> dict[str, Any]:
    """What the parser checks of the object itself; anything deeper is the deciders' business."""
    return {
        "type": "object",
        "description": f"the {kind} being admitted",
        "required": ["metadata"],
        "properties": {
            "kind": {"type": "string", "enum": [kind]},
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "generateName": {"type": "string"},
                    "namespace": {"type": "string"},
                    "annotations": STRING_MAP,
                    "labels": STRING_MAP,
                },
            },
            "spec": {"type": "object"},
        },
    }


def review_request_body(kind: str) -> dict[str, Any]:
    request = {
        "type": "object",
        "required": ["uid", "kind", "operation"],
        "properties": {
            "uid": {"type": "string", "minLength": 1},
            "kind": {
                "type": "object",
                "required": ["group", "version", "kind"],
                "properties": {
                    "group": {"type": "string"},
                    "version": {"type": "string"},
                    "kind": {"type": "string", "enum": [kind]},
                },
            },
            "resource": {"type": "object"},
            "namespace": {"type": "string"},
            "operation": {"type": "string", "enum": ["CREATE", "UPDATE", "DELETE", "CONNECT"]},
            "object": admitted_object(kind),
            # The object before an UPDATE; kube-apiserver sends null on CREATE.
            "oldObject": {"type": ["object", "null"]},
        },
        # The apiserver sends the object on CREATE and UPDATE; only those are looked at.
        "if": {"properties": {"operation": {"enum": ["CREATE", "UPDATE"]}}},
        "then": {"required": ["object"]},
    }
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["apiVersion", "kind", "request"],
                    "properties": {
                        "apiVersion": {"type": "string", "enum": ["admission.k8s.io/v1"]},
                        "kind": {"type": "string", "enum": ["AdmissionReview"]},
                        "request": request,
                    },
                }
            }
        },
    }


REVIEW_RESPONSE = {
    "type": "object",
    "required": ["apiVersion", "kind", "response"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string", "enum": ["AdmissionReview"]},
        "response": {
            "type": "object",
            "required": ["uid", "allowed"],
            "properties": {
                "uid": {"type": "string"},
                "allowed": {"type": "boolean"},
                "patchType": {"type": "string", "enum": ["JSONPatch"]},
                "patch": {"type": "string", "description": "base64 of a JSON-patch (RFC 6902) list"},
                "warnings": {"type": "array", "items": {"type": "string"}},
                "status": {
                    "type": "object",
                    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
                },
            },
        },
    },
}

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def admission_openapi(kind: str) -> dict[str, Any]:
    """``openapi_extra`` and ``responses`` for one admission route."""
    return {
        "openapi_extra": {"requestBody": review_request_body(kind)},
        "responses": {
            200: {"description": "the review answered", "content": {"application/json": {"schema": REVIEW_RESPONSE}}},
            400: {
                "description": "not an AdmissionReview we can answer",
                "content": {"application/json": {"schema": ERROR}},
            },
            413: {"description": "body over the size limit", "content": {"application/json": {"schema": ERROR}}},
        },
    }
