"""Inside a cluster the webhook reads the API at the address Kubernetes gives every pod.

The service-account directory is a test directory laid out as the kubelet mounts it (token, CA);
the environment is the one the kubelet sets.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from webhook import kube
from webhook.certs import CertificateAuthority


@pytest.fixture
def service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "serviceaccount"
    CertificateAuthority(directory)  # writes ca.crt, as the kubelet does
    (directory / "token").write_text("a-token\n")
    monkeypatch.setattr(kube, "SA_DIR", directory)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    return directory


def test_an_ipv6_service_address_becomes_a_url_with_brackets(
    service_account: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00:10:96::1")
    target = kube.target_in_cluster()
    assert target.server == "https://[fd00:10:96::1]:443"
    assert httpx.URL(target.server).host == "fd00:10:96::1"  # what the client connects to


def test_an_ipv4_service_address_is_used_as_it_is(service_account: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    target = kube.target_in_cluster()
    assert target.server == "https://10.96.0.1:6443"
    assert target.token_file == service_account / "token"


def test_outside_a_cluster_the_webhook_says_it_needs_a_kubeconfig(
    service_account: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(kube.KubeError, match="--kubeconfig"):
        kube.target_in_cluster()
