"""The server's TLS context, re-loaded in place when cert-manager rotates the files.

uvicorn keeps the SSLContext it was given for the life of the listening socket, so rotation
loads the new pair into that same context: new handshakes get the new certificate, open
connections are not dropped. A pair that does not load (half-written, mismatched key) is tried
on a scratch context first and rejected with a log line, and the old certificate keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

# Modern AEAD suites for TLS 1.2; TLS 1.3 suites are fixed by OpenSSL and all modern.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

# What a look at the files found: nothing new, a new pair now served, or a new pair refused.
ReloadResult = Literal["unchanged", "reloaded", "rejected"]


def _new_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    return ctx


class ReloadingTLS:
    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self.context = _new_context()
        self.context.load_cert_chain(str(cert), str(key))
        self._stamp = self._files_stamp()

    def _files_stamp(self) -> tuple[float, int, float, int]:
        c, k = self.cert.stat(), self.key.stat()
        return (c.st_mtime, c.st_ino, k.st_mtime, k.st_ino)

    def check(self) -> ReloadResult:
        """Reload if the files changed."""
        try:
            stamp = self._files_stamp()
        except OSError as exc:
            log.warning("TLS files unreadable, keeping the current certificate: %s", exc)
            return "unchanged"
        if stamp == self._stamp:
            return "unchanged"
        self._stamp = stamp
        try:
            _new_context().load_cert_chain(str(self.cert), str(self.key))
        except (ssl.SSLError, OSError) as exc:
            log.error("new TLS certificate/key rejected, keeping the current one: %s", exc)
            return "rejected"
        self.context.load_cert_chain(str(self.cert), str(self.key))
        log.info("TLS certificate reloaded from %s", self.cert)
        return "reloaded"

    async def watch(self, period_s: float, on_change: Callable[[ReloadResult], None]) -> None:
        """Look at the files every ``period_s``; ``on_change`` hears of each new pair, served or refused."""
        while True:
            await asyncio.sleep(period_s)
            if (result := self.check()) != "unchanged":
                on_change(result)
