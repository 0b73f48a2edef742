"""FastAPI's interactive pages (/docs, /redoc) are off unless an admin asks for them.

They load Swagger UI and ReDoc from a public CDN into the browser of whoever opens them, and an
admission webhook has no one to show them to. /openapi.json stays: it is the webhook's own schema
(webhook/openapi.py), which schemathesis fuzzes from and a client may read.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace

import httpx
import pytest

from webhook.app import create_app
from webhook.cli import config_from_args
from webhook.config import WebhookConfig
from webhook.kube import SidecarGateCache
from webhook.orchestration import Runtime


def get(config: WebhookConfig, path: str) -> httpx.Response:
    app = create_app(Runtime(config=config, gate=SidecarGateCache(None, forced=True, refresh_s=30)), background=False)

    async def fetch() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://webhook.test") as c:
            return await c.get(path)

    return asyncio.run(fetch())


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_the_interactive_pages_are_not_served_by_default(path: str) -> None:
    assert get(WebhookConfig(), path).status_code == 404


def test_the_openapi_schema_is_served_without_them() -> None:
    resp = get(WebhookConfig(), "/openapi.json")
    assert resp.status_code == 200
    assert "/mutate/virtualmachines" in resp.json()["paths"]


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_an_admin_who_asks_gets_them(path: str) -> None:
    resp = get(replace(WebhookConfig(), api_docs=True), path)
    assert resp.status_code == 200
    assert "/openapi.json" in resp.text


def test_the_flag_and_its_environment_twin_turn_them_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("BM_WEBHOOK_")]:
        monkeypatch.delenv(name)
    assert config_from_args(["--dev"]).api_docs is False
    assert config_from_args(["--dev", "--api-docs"]).api_docs is True
    monkeypatch.setenv("BM_WEBHOOK_API_DOCS", "true")
    assert config_from_args(["--dev"]).api_docs is True
