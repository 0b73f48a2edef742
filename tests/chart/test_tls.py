"""Serving TLS: a chart-made CA shared by the Secret and every webhook, or cert-manager injection."""

from __future__ import annotations

import base64
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.chart.conftest import Render, by_kind, one

SERVICE_DNS = "bridge-migration.bridge-migration.svc"


def _webhook_configs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return by_kind(objects, "MutatingWebhookConfiguration") + by_kind(objects, "ValidatingWebhookConfiguration")


def test_self_signed_ca_signs_the_serving_cert_and_is_every_webhooks_ca_bundle(render: Render) -> None:
    objects = render()
    secret = one(objects, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    ca = x509.load_pem_x509_certificate(ca_pem)
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    assert leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert SERVICE_DNS in sans.get_values_for_type(x509.DNSName)
    bundles = {hook["clientConfig"]["caBundle"] for config in _webhook_configs(objects) for hook in config["webhooks"]}
    assert bundles == {secret["data"]["ca.crt"]}
    # The key in the Secret belongs to the certificate.
    key = load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), password=None)
    assert key.public_key() == leaf.public_key()


def test_deployment_mounts_the_tls_secret(render: Render) -> None:
    objects = render()
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": one(objects, "Secret")["metadata"]["name"]}} in volumes


def test_cert_manager_injects_the_ca_and_the_chart_makes_no_secret(render: Render) -> None:
    objects = render({"tls": {"certManager": {"enabled": True}}})
    assert by_kind(objects, "Secret") == []
    serving = [c for c in by_kind(objects, "Certificate") if not c["spec"].get("isCA")]
    assert len(serving) == 1
    cert = serving[0]
    assert SERVICE_DNS in cert["spec"]["dnsNames"]
    assert cert["spec"]["secretName"] == "bridge-migration-tls"
    for config in _webhook_configs(objects):
        annotations = config["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == f"bridge-migration/{cert['metadata']['name']}"
        for hook in config["webhooks"]:
            assert "caBundle" not in hook["clientConfig"]


def test_cert_manager_with_an_existing_issuer_makes_only_the_serving_certificate(render: Render) -> None:
    objects = render(
        {"tls": {"certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}}
    )
    assert by_kind(objects, "Issuer") == []
    cert = one(objects, "Certificate")
    assert cert["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


def test_the_cert_manager_ca_lives_long_and_keeps_its_key_when_renewed(render: Render) -> None:
    """cert-manager's defaults are 90 days and, from 1.18, a new key at each renewal: a renewed CA
    with a new key is a new trust root, and the webhooks fail open until the injected bundle catches up."""
    objects = render({"tls": {"certManager": {"enabled": True}}})
    (ca,) = [c for c in by_kind(objects, "Certificate") if c["spec"].get("isCA")]
    assert ca["spec"]["duration"] == "87600h"  # ten years
    assert ca["spec"]["privateKey"]["rotationPolicy"] == "Never"
    custom = render({"tls": {"certManager": {"enabled": True, "caDuration": "43800h"}}})
    (ca,) = [c for c in by_kind(custom, "Certificate") if c["spec"].get("isCA")]
    assert ca["spec"]["duration"] == "43800h"
    # The serving certificate still renews with a new key; the webhook re-reads it from the Secret.
    (serving,) = [c for c in by_kind(objects, "Certificate") if not c["spec"].get("isCA")]
    assert serving["spec"]["privateKey"]["rotationPolicy"] == "Always"


def test_the_gitops_path_renders_the_same_every_time(render: Render) -> None:
    """Argo CD renders with `helm template` (no `lookup`): with cert-manager nothing random is in the
    output, so a sync changes nothing. Without it every render makes a new CA, which is why the docs
    send GitOps installs to cert-manager."""
    gitops = {"tls": {"certManager": {"enabled": True}}}
    assert render(gitops) == render(gitops)
    assert render() != render()  # the chart-made CA: what `helm install`/`upgrade` keep by `lookup`
