"""Reading a pod's links: whether a Multus pod interface holds an IPv4 address (facts M1, M2).

Run in a network namespace of the test's own, laid out as virt-handler leaves a bridge-bound pod:
the dummy keeping the pod interface's name is never set up, and keeps the CNI's address if the
CNI gave one."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.root  # ip netns add


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def pod_netns() -> Iterator[str]:
    ns = f"bmt-links-{secrets.token_hex(3)}"
    _ip("netns", "add", ns)
    try:
        # With IPAM (flannel-like): the dummy holds the pod's address, link down.
        # A tap nobody opens stands in for the dummy, as in lab.network (some kernels lack dummy).
        _ip("-n", ns, "tuntap", "add", "dev", "poda7662f44d65", "mode", "tap")
        _ip("-n", ns, "addr", "add", "10.246.1.11/24", "dev", "poda7662f44d65")
        # Without (bridge CNI on a VLAN): a MAC and nothing else.
        _ip("-n", ns, "tuntap", "add", "dev", "pod1f3e9a0c2b7", "mode", "tap")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def test_has_ipv4_tells_a_down_dummy_with_an_address_from_one_without_and_from_no_link(pod_netns: str) -> None:
    code = (
        "import json; from sidecar.fixer.podlinks import has_ipv4, ipv4_less;"
        "names = ['poda7662f44d65', 'pod1f3e9a0c2b7', 'nosuchlink'];"
        "print(json.dumps({'each': [has_ipv4(n) for n in names], 'less': sorted(ipv4_less(names))}))"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", pod_netns, sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    assert json.loads(out.stdout) == {"each": [True, False, None], "less": ["pod1f3e9a0c2b7"]}
