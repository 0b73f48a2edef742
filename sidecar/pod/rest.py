"""REST API on loopback: health, status, manual fixup, history, Prometheus metrics, OpenAPI.

HTTP/1.1 by h11 (the sans-I/O protocol core httpcore and uvicorn use) on an asyncio server,
rather than uvicorn with FastAPI and pydantic (~30 MiB of RSS in a container capped at 64M) or
the standard library's http.server (which brings the email package along, ~2.3 MiB). The
sidecar's REST traffic is a probe, a person with curl and a metrics scrape: every response closes
its connection, and the routes run on a few worker threads (a fixup blocks on libvirt).

Bad input is refused before it costs memory: a body over `MAX_BODY_BYTES` gets 413 without
being read (with `Expect: 100-continue`, without being sent), malformed HTTP gets 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

import h11
import msgspec

from sidecar.core.errors import LibvirtUnavailableError, NoDomainError, UnknownInterfaceError
from sidecar.core.models import ErrorBody, FixupRequest, to_json
from sidecar.fixer.metrics import CONTENT_TYPE
from sidecar.pod import rest_views
from sidecar.pod.rest_views import SidecarParts

log = logging.getLogger(__name__)

# A fixup request is a few flags and interface names: well under 1 KiB. 4 KiB leaves room for a
# VMI with dozens of interfaces and still bounds what one request can make us hold.
MAX_BODY_BYTES = 4096
# Routes running at once (each on a thread); connections open at once, past which a new one
# gets 503 straight away; the time a client has to send its request.
MAX_WORKERS = 4
MAX_CONNECTIONS = 32
TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 16 * 1024
# Open without the token: kubelet probes carry no credentials, and health says nothing a
# caller could misuse (no MACs, no domain, no fixups).
OPEN_PATHS = frozenset({"/healthz"})
JSON = "application/json"
_KNOWN_STATUSES = frozenset(s.value for s in HTTPStatus)


class Reply:
    """One response: status, body, content type and extra headers."""

    def __init__(self, status: int, body: bytes, *, content_type: str = JSON, headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}


def error(status: int, detail: str, known: list[str] | None = None, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, to_json(ErrorBody(detail=detail, known_interfaces=known)), headers=headers)


def authorized(header: str | None, token: str) -> bool:
    """True when an Authorization header carries this bearer token (constant-time compare)."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


class Api:
    """The routes: what each path answers, independent of the HTTP server that carries it."""

    def __init__(self, sidecar: SidecarParts) -> None:
        self._sidecar = sidecar
        self._openapi: bytes | None = None
        self.routes: dict[tuple[str, str], Callable[[bytes], Reply]] = {
            ("GET", "/healthz"): self.healthz,
            ("GET", "/v1/status"): self.status,
            ("POST", "/v1/fixup"): self.fixup,
            ("GET", "/v1/fixups"): self.fixups,
            ("GET", "/metrics"): self.metrics,
            ("GET", "/openapi.json"): self.openapi,
        }
        self.paths = frozenset(path for _method, path in self.routes)

    def healthz(self, _body: bytes) -> Reply:
        health = rest_views.health(self._sidecar)
        return Reply(200 if health.ok else 503, to_json(health))

    def status(self, _body: bytes) -> Reply:
        return Reply(200, to_json(rest_views.status(self._sidecar)))

    def fixup(self, body: bytes) -> Reply:
        request = msgspec.json.decode(body, type=FixupRequest | None) if body.strip() else None
        request = request or FixupRequest()
        record = self._sidecar.fixer.run(
            trigger="manual", interfaces=request.interfaces, dry_run=request.dry_run, force=request.force
        )
        # A failed run is a 500 carrying the record, so `curl -f` in a launcher hook notices.
        return Reply(500 if record.result == "failed" else 200, to_json(record))

    def fixups(self, _body: bytes) -> Reply:
        return Reply(200, to_json(self._sidecar.fixer.history()))

    def metrics(self, _body: bytes) -> Reply:
        return Reply(200, self._sidecar.metrics.exposition(), content_type=CONTENT_TYPE)

    def openapi(self, _body: bytes) -> Reply:
        if self._openapi is None:
            from sidecar.pod.openapi import document  # built on the first request only

            self._openapi = msgspec.json.encode(document(max_body_bytes=MAX_BODY_BYTES))
        return Reply(200, self._openapi)

    def call(self, method: str, path: str, body: bytes) -> Reply:
        """Run a route and turn the sidecar's errors into their status codes."""
        route = self.routes.get((method, path))
        if route is None:
            if path in self.paths:
                allowed = ", ".join(sorted(m for m, p in self.routes if p == path))
                return error(405, f"{method} is not allowed on {path}", headers={"Allow": allowed})
            return error(404, f"no such path: {path}")
        try:
            return route(body)
        except UnknownInterfaceError as exc:
            return error(404, str(exc), exc.known)
        except NoDomainError as exc:
            log.info("%s %s refused (409): %s", method, path, exc)
            return error(409, str(exc))
        except LibvirtUnavailableError as exc:
            log.warning("%s %s refused (503): %s", method, path, exc)
            return error(503, str(exc))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return error(422, f"bad request body: {exc}")
        except Exception as exc:
            if isinstance(exc, self._sidecar.libvirt_errors):
                log.warning("%s %s failed (503): libvirt call failed: %s", method, path, exc)
                return error(503, f"libvirt call failed: {exc}")
            log.exception("%s %s failed", method, path)
            return error(500, f"internal error: {type(exc).__name__}: {exc}")


def refusal(request: h11.Request, *, token: str | None) -> Reply | None:
    """401 or 413 for a request we will not read further; None when it may go on."""
    path = request.target.decode("latin-1").partition("?")[0]
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.headers}
    if token is not None and path not in OPEN_PATHS and not authorized(headers.get("authorization"), token):
        return error(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
    length = headers.get("content-length")
    if length is not None and int(length) > MAX_BODY_BYTES:  # h11 has checked it is a number
        return error(413, f"request body over {MAX_BODY_BYTES} bytes")
    return None


class RestServer:
    """The asyncio server that carries the Api: one h11 connection per TCP connection."""

    def __init__(self, api: Api, *, token: str | None) -> None:
        self.api = api
        self.token = token
        self._pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="rest")
        self._open = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEADER_BYTES)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._open += 1
        try:
            if self._open > MAX_CONNECTIONS:
                await self._send(conn, writer, error(503, "busy: too many connections", headers={"Retry-After": "1"}))
                return
            reply: Reply | None
            try:
                # Only receiving is timed: a fixup may rightly take as long as a guest needs.
                received = await asyncio.wait_for(self._receive(conn, reader, writer), TIMEOUT_S)
            except TimeoutError:
                received = error(408, f"request not received within {TIMEOUT_S:g}s")
            except h11.RemoteProtocolError as exc:
                received = error(exc.error_status_hint, f"malformed HTTP request: {exc}")
            if isinstance(received, tuple):
                method, path, body = received
                loop = asyncio.get_running_loop()
                reply = await loop.run_in_executor(self._pool, self.api.call, method, path, body)
            else:
                reply = received
            if reply is not None:
                await self._send(conn, writer, reply)
        except (ConnectionError, h11.LocalProtocolError):
            pass  # the client went away, or is in a state where no answer can be sent
        finally:
            self._open -= 1
            await self._close(reader, writer)

    async def _receive(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, str, bytes] | Reply | None:
        """Read one request: (method, path, body), a refusal, or None when the client closed."""
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
                refused = refusal(request, token=self.token)
                if refused is not None:
                    return refused
                if conn.they_are_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:  # a chunked body has no length to check up front
                    return error(413, f"request body over {MAX_BODY_BYTES} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
        assert request is not None
        return request.method.decode("latin-1"), request.target.decode("latin-1").partition("?")[0], bytes(body)

    @staticmethod
    async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
        headers = [
            ("Content-Type", reply.content_type),
            ("Content-Length", str(len(reply.body))),
            ("Connection", "close"),
            *reply.headers.items(),
        ]
        reason = HTTPStatus(reply.status).phrase.encode() if reply.status in _KNOWN_STATUSES else b""
        data = conn.send(h11.Response(status_code=reply.status, headers=headers, reason=reason))
        writer.write((data or b"") + (conn.send(h11.Data(data=reply.body)) or b""))
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    @staticmethod
    async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Close after discarding, briefly and in a small buffer, what a refused client still
        sends: closing with unread data would reset the connection before it reads our answer."""
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    while await reader.read(65536):
                        pass
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def create_server(sidecar: SidecarParts, *, token: str | None = None) -> RestServer:
    return RestServer(Api(sidecar), token=token)
