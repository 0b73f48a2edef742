"""Errors the REST layer turns into status codes (409, 503, 404)."""

from __future__ import annotations


def libvirt_error_code(exc: BaseException) -> int | None:
    """libvirt's virErrorNumber of ``exc`` (a libvirtError), None for any other exception; read
    without importing libvirt, so the modules that only handle its errors stay free of it."""
    code_of = getattr(exc, "get_error_code", None)
    code = code_of() if callable(code_of) else None
    return code if isinstance(code, int) else None


class NoDomainError(Exception):
    """There is no domain to look after (yet), or several and no --domain."""


class DomainNotRunningError(NoDomainError):
    """The domain exists but does not run here (yet): still arriving, paused or shut off."""


class LibvirtUnavailableError(Exception):
    """The libvirt daemon is not reachable right now."""


class UnknownInterfaceError(Exception):
    def __init__(self, unknown: list[str], known: list[str]) -> None:
        super().__init__(f"unknown interface(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}")
        self.unknown = unknown
        self.known = known
