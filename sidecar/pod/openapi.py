"""The OpenAPI document of the sidecar's REST API (GET /openapi.json).

The component schemas come from the wire models themselves (msgspec's JSON Schema), so the
document cannot drift from what the API sends; the paths are described here.
"""

from __future__ import annotations

from typing import Any

import msgspec

from sidecar.core.models import WIRE_MODELS

_REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF.format(name=name)}


def _json(name: str, description: str, *, array: bool = False) -> dict[str, Any]:
    schema = {"type": "array", "items": _ref(name)} if array else _ref(name)
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json("ErrorBody", description)


def document(*, max_body_bytes: int) -> dict[str, Any]:
    """The document; ``max_body_bytes`` is the REST server's limit on a request body."""
    _, components = msgspec.json.schema_components(WIRE_MODELS, ref_template=_REF)
    secured = {"401": _error("Missing or wrong bearer token (only when the sidecar runs with --token-file)")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "bridge-migration sidecar", "version": "1"},
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Health: libvirt connected (200) or not (503)",
                    "responses": {"200": _json("Health", "Healthy"), "503": _json("Health", "libvirt not connected")},
                }
            },
            "/v1/status": {
                "get": {
                    "summary": "The domain, its NICs, their pod links and the last fixup",
                    "responses": {"200": _json("Status", "Status"), **secured},
                }
            },
            "/v1/fixup": {
                "post": {
                    "summary": "Fix the NICs now (idempotent unless forced)",
                    "requestBody": {
                        "required": False,
                        "description": f"At most {max_body_bytes} bytes",
                        "content": {"application/json": {"schema": _ref("FixupRequest")}},
                    },
                    "responses": {
                        "200": _json("FixupRecord", "The fixup ran (or was a no-op, dry run, disabled)"),
                        "500": _json("FixupRecord", "The fixup ran and failed (the record says how)"),
                        "404": _error("Unknown interface name"),
                        "409": _error("No domain to look after yet, or it does not run here yet"),
                        "411": _error("A body without Content-Length"),
                        "413": _error(f"A body over {max_body_bytes} bytes"),
                        "422": _error("A body that is not a FixupRequest"),
                        "503": _error("libvirt is not reachable"),
                        **secured,
                    },
                }
            },
            "/v1/fixups": {
                "get": {
                    "summary": "The recorded fixups, oldest first",
                    "responses": {"200": _json("FixupRecord", "Fixup history", array=True), **secured},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}},
                }
            },
        },
        "components": {"schemas": components},
    }
