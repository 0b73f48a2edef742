"""Errors the REST layer turns into status codes (409, 503, 404)."""

from __future__ import annotations


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
