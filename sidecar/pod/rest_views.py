"""What GET /healthz and GET /v1/status answer, built from the running sidecar's parts.

The REST room's read side: it reads the watcher, the hook server, the VMI store, the fixer and
the pod's links, and never imports libvirt (the libvirt error class comes with the parts).
"""

from __future__ import annotations

from typing import Protocol

from bridge_migration_contract import DOMAIN_ALIAS_PREFIX
from sidecar.core import podinfo
from sidecar.core.domain import Domain, DomainState
from sidecar.core.domxml import parse_interfaces
from sidecar.core.errors import LibvirtUnavailableError, NoDomainError
from sidecar.core.models import Health, InterfaceStatus, Status
from sidecar.core.plan import targets_from_vmi
from sidecar.core.vmistore import VmiStore
from sidecar.fixer.engine import Fixer
from sidecar.fixer.metrics import Metrics
from sidecar.fixer.podlinks import read_links
from sidecar.pod.settings import ServeSettings


class LibvirtLink(Protocol):
    """The watcher as the views see it."""

    @property
    def connected(self) -> bool: ...
    @property
    def last_error(self) -> str | None: ...
    def domain(self) -> Domain: ...


class HookEndpoint(Protocol):
    """The hook server as the views see it."""

    @property
    def enabled(self) -> bool: ...


class SidecarParts(Protocol):
    """The running sidecar as REST sees it (sidecar/pod/wiring.py's `Sidecar`)."""

    @property
    def settings(self) -> ServeSettings: ...
    @property
    def watcher(self) -> LibvirtLink: ...
    @property
    def hooks(self) -> HookEndpoint | None: ...
    @property
    def vmis(self) -> VmiStore: ...
    @property
    def fixer(self) -> Fixer: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def libvirt_errors(self) -> tuple[type[Exception], ...]:
        """What a libvirt call raises when it fails (libvirt.libvirtError): 503, not 500."""
        ...


def state_name(code: int) -> str:
    """virDomainState as GET /v1/status spells it (`running`, `shutoff`, ...); the number if unknown."""
    try:
        return DomainState(code).name.lower()
    except ValueError:
        return str(code)


def health(sidecar: SidecarParts) -> Health:
    connected = sidecar.watcher.connected
    registered = sidecar.vmis.registered.is_set()
    hook_on = sidecar.hooks is not None and sidecar.hooks.enabled
    # Health (the status code) is about the job the sidecar does: it needs libvirt. The
    # hook registration only happens when virt-launcher starts, so it is reported, not required.
    ready = connected and (registered or not hook_on)
    problems = []
    if not connected:
        problems.append(f"libvirt not connected ({sidecar.watcher.last_error or 'connecting'})")
    if hook_on and not registered:
        problems.append("virt-launcher has not called Info on the hook socket yet")
    return Health(
        ok=connected,
        ready=ready,
        libvirt_connected=connected,
        hook_registered=registered,
        hook_server_enabled=hook_on,
        detail="; ".join(problems) or "ok",
    )


def status(sidecar: SidecarParts) -> Status:
    settings = sidecar.settings
    vmi = sidecar.vmis.get()
    info = podinfo.load(settings.pod_annotations, vmi=vmi, keys=settings.keys)
    connected = sidecar.watcher.connected
    name: str | None = None
    state: str | None = None
    interfaces: list[InterfaceStatus] = []
    unavailable: tuple[type[Exception], ...] = (NoDomainError, LibvirtUnavailableError, *sidecar.libvirt_errors)
    try:
        dom = sidecar.watcher.domain()
        name = str(dom.name())
        code, _reason = dom.state()
        state = state_name(code)
        xml: str | None = dom.XMLDesc(0)
    except unavailable:
        xml = None
    if xml is not None:
        links = read_links()
        targets = {t.name: t for t in targets_from_vmi(vmi, xml, links, recorded=info.interfaces)}
        for iface in parse_interfaces(xml):
            vmi_name = (
                iface.alias.removeprefix(DOMAIN_ALIAS_PREFIX)
                if iface.alias and iface.alias.startswith(DOMAIN_ALIAS_PREFIX)
                else None
            )
            target = targets.get(vmi_name) if vmi_name else None
            pod_link = target.pod_link if target else None
            link = links.get(pod_link) if pod_link else None
            interfaces.append(
                InterfaceStatus(
                    name=vmi_name,
                    alias=iface.alias,
                    type=iface.type,
                    mac=iface.mac,
                    link_state=iface.link_state,
                    target_dev=iface.target_dev,
                    managed=target is not None,
                    pod_link=pod_link,
                    pod_link_mac=link.mac if link else None,
                    pod_link_state=link.operstate if link else None,
                )
            )
    return Status(
        domain=name,
        domain_state=state,
        libvirt_connected=connected,
        libvirt_uri=settings.libvirt_uri,
        hook_registered=sidecar.vmis.registered.is_set(),
        vmi_known=vmi is not None,
        policy=info.policy,
        enabled=info.enabled,
        interfaces=interfaces,
        restore_pending=sidecar.fixer.watched(),
        last_fixup=sidecar.fixer.last(),
    )
