"""The values most charts share (as cert-manager's and Kyverno's have them): name overrides,
commonLabels, image registry/digest, and the sidecar's pull policy, as a user checks them in the
rendered objects."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from cryptography import x509

from kubelab.chart import CHART_DIR
from tests.chart.conftest import Render, by_kind, one
from webhook.cli import config_from_args
from webhook.hook_sidecars import is_our_image, merged_sidecars

APP_VERSION = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]
DIGEST = "sha256:" + "0123456789abcdef" * 4
# Every optional object on: certificates from the chart, the node agent and its Plugin, monitoring.
ALL_OBJECTS = {
    "networkPolicy": {"enabled": True},
    "metrics": {"serviceMonitor": {"enabled": True}},
    "node": {"enabled": True},
}
WITH_CERT_MANAGER = ALL_OBJECTS | {"tls": {"certManager": {"enabled": True}}}


def _containers(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return one(objects, kind)["spec"]["template"]["spec"]["containers"]  # type: ignore[no-any-return]


def _webhook_args(objects: list[dict[str, Any]]) -> list[str]:
    (container,) = _containers(objects, "Deployment")
    return container["args"]  # type: ignore[no-any-return]


def _flag(args: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return value


def _service_refs(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        (hook["clientConfig"]["service"]["name"], hook["clientConfig"]["service"]["namespace"])
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
        for hook in one(objects, kind)["webhooks"]
    }


def _serving_dns_names(objects: list[dict[str, Any]]) -> set[str]:
    secrets = [s for s in by_kind(objects, "Secret") if s["type"] == "kubernetes.io/tls"]
    if secrets:
        leaf = x509.load_pem_x509_certificate(base64.b64decode(secrets[0]["data"]["tls.crt"]))
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return set(san.get_values_for_type(x509.DNSName))
    (serving,) = [c for c in by_kind(objects, "Certificate") if not c["spec"].get("isCA")]
    return set(serving["spec"]["dnsNames"])


# ---- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("release", ["bridge-migration", "bm"])
def test_default_names_are_unchanged(render: Render, release: str) -> None:
    expected = "bridge-migration" if release == "bridge-migration" else "bm-bridge-migration"
    objects = render(release=release)
    assert one(objects, "Service")["metadata"]["name"] == expected
    assert one(objects, "Deployment")["metadata"]["name"] == expected
    assert _service_refs(objects) == {(expected, "bridge-migration")}


@pytest.mark.parametrize("values", [ALL_OBJECTS, WITH_CERT_MANAGER], ids=["chart-ca", "cert-manager"])
def test_fullname_override_renames_every_object_and_the_webhooks_follow_the_service(
    render: Render, values: dict[str, Any]
) -> None:
    objects = render(values | {"fullnameOverride": "vmnet-fix"}, release="bm", tests=True)
    for obj in objects:
        if obj["kind"] == "Plugin":
            assert obj["metadata"]["name"] == "bridge-migration"  # node.pluginName: the agent's socket name
            continue
        assert obj["metadata"]["name"].startswith("vmnet-fix"), obj["kind"]
        assert "bm-" not in obj["metadata"]["name"], obj["kind"]
    assert one(objects, "Service")["metadata"]["name"] == "vmnet-fix"
    assert _service_refs(objects) == {("vmnet-fix", "bridge-migration")}
    # The certificate is made for the name the API server calls.
    assert "vmnet-fix.bridge-migration.svc" in _serving_dns_names(objects)
    (sa,) = by_kind(
        [o for o in objects if "helm.sh/hook" not in (o["metadata"].get("annotations") or {})], "ServiceAccount"
    )
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    bindings = [b for b in by_kind(objects, "ClusterRoleBinding") if b["metadata"]["name"] == "vmnet-fix"]
    assert bindings[0]["subjects"][0]["name"] == "vmnet-fix"
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "vmnet-fix-tls"}} in volumes


def test_name_override_replaces_the_chart_name_in_names_and_the_name_label(render: Render) -> None:
    objects = render(ALL_OBJECTS | {"nameOverride": "netfix"}, release="bm", tests=True)
    assert one(objects, "Service")["metadata"]["name"] == "bm-netfix"
    assert _service_refs(objects) == {("bm-netfix", "bridge-migration")}
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "netfix", obj["kind"]
    # The Service still selects the webhook's pods.
    selector = one(objects, "Service")["spec"]["selector"]
    assert selector.items() <= one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("bad", [{"fullnameOverride": "Not_A_Name"}, {"nameOverride": "x" * 64}])
def test_a_name_that_is_not_a_dns_label_is_refused(render: Render, bad: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="values don't meet the specifications of the schema"):
        render(bad)


# ---- commonLabels -----------------------------------------------------------------------------

LABELS = {"team": "virt", "example.com/cost-center": "42"}


@pytest.mark.parametrize("values", [ALL_OBJECTS, WITH_CERT_MANAGER], ids=["chart-ca", "cert-manager"])
def test_common_labels_are_on_every_object_and_pod_but_not_in_selectors(render: Render, values: dict[str, Any]) -> None:
    objects = render(values | {"commonLabels": LABELS}, tests=True)
    kinds = {o["kind"] for o in objects}
    assert {"Plugin", "DaemonSet", "Pod", "ServiceMonitor", "Certificate" if "tls" in values else "Secret"} <= kinds
    for obj in objects:
        assert LABELS.items() <= obj["metadata"]["labels"].items(), (obj["kind"], obj["metadata"]["name"])
    for kind in ("Deployment", "DaemonSet"):
        workload = one(objects, kind)
        assert LABELS.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        assert not set(LABELS) & set(workload["spec"]["selector"]["matchLabels"])
    assert not set(LABELS) & set(one(objects, "Service")["spec"]["selector"])
    assert not set(LABELS) & set(one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])


def test_pod_labels_add_to_common_labels_and_never_change_the_selector(render: Render) -> None:
    objects = render(
        {"commonLabels": {"team": "virt"}, "podLabels": {"team": "net", "app.kubernetes.io/component": "other"}}
    )
    deploy = one(objects, "Deployment")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "net"
    assert labels["app.kubernetes.io/component"] == "webhook"
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize(
    "bad",
    [{"app.kubernetes.io/name": "x"}, {"helm.sh/chart": "x"}, {"not a key": "x"}, {"team": "not a value"}],
)
def test_common_labels_that_would_break_selectors_or_are_not_labels_are_refused(
    render: Render, bad: dict[str, str]
) -> None:
    with pytest.raises(RuntimeError, match="values don't meet the specifications of the schema"):
        render({"commonLabels": bad})


# ---- images -----------------------------------------------------------------------------------


def test_default_images_are_the_ones_the_build_tags(render: Render) -> None:
    objects = render(ALL_OBJECTS)
    (webhook,) = _containers(objects, "Deployment")
    assert webhook["image"] == f"ghcr.io/kubevirt-bridge-migration/bridge-migration:{APP_VERSION}"
    sidecar = f"ghcr.io/kubevirt-bridge-migration/bridge-migration-sidecar:{APP_VERSION}"
    assert _flag(webhook["args"], "sidecar-image") == sidecar
    assert [c["image"] for c in _containers(objects, "DaemonSet")] == [sidecar]


def test_a_registry_prefixes_the_repository_and_a_digest_wins_over_the_tag(render: Render) -> None:
    objects = render(
        ALL_OBJECTS
        | {
            "image": {"registry": "registry.example.org:5000", "repository": "mirror/bridge-migration", "tag": "1.0"},
            "sidecar": {
                "image": {
                    "registry": "registry.example.org:5000",
                    "repository": "mirror/bridge-migration-sidecar",
                    "tag": "1.0",
                    "digest": DIGEST,
                }
            },
        }
    )
    (webhook,) = _containers(objects, "Deployment")
    assert webhook["image"] == "registry.example.org:5000/mirror/bridge-migration:1.0"
    pinned = f"registry.example.org:5000/mirror/bridge-migration-sidecar@{DIGEST}"
    assert _flag(webhook["args"], "sidecar-image") == pinned
    assert [c["image"] for c in _containers(objects, "DaemonSet")] == [pinned]
    # The webhook still knows a digest-pinned entry of ours as its own (no second entry on upgrade).
    assert is_our_image("registry.example.org:5000/mirror/bridge-migration-sidecar:0.9", pinned)


def test_a_webhook_digest_is_used_by_the_deployment_and_the_test_pod(render: Render) -> None:
    objects = render({"image": {"digest": DIGEST}}, tests=True)
    expected = f"ghcr.io/kubevirt-bridge-migration/bridge-migration@{DIGEST}"
    assert _containers(objects, "Deployment")[0]["image"] == expected
    (test_pod,) = by_kind(objects, "Pod")
    assert test_pod["spec"]["containers"][0]["image"] == expected


@pytest.mark.parametrize(
    "bad",
    [
        {"image": {"digest": "0123abcd"}},
        {"image": {"digest": "sha256:xyz"}},
        {"image": {"registry": "https://registry.example.org"}},
        {"image": {"registry": "registry.example.org/"}},
        {"image": {"tag": "has space"}},
        {"sidecar": {"image": {"digest": "latest"}}},
        {"sidecar": {"image": {"pullPolicy": "Sometimes"}}},
    ],
)
def test_malformed_image_values_are_refused(render: Render, bad: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="values don't meet the specifications of the schema"):
        render(bad)


# ---- the sidecar's pull policy ------------------------------------------------------------------


def test_the_sidecar_pull_policy_reaches_the_hook_sidecar_entry_and_the_node_agent(render: Render) -> None:
    objects = render(ALL_OBJECTS | {"sidecar": {"image": {"pullPolicy": "Always", "digest": DIGEST}}})
    args = _webhook_args(objects)
    assert _flag(args, "sidecar-pull-policy") == "Always"
    assert [c["imagePullPolicy"] for c in _containers(objects, "DaemonSet")] == ["Always"]
    # The webhook's own parser reads the Deployment's flags; the entry it writes into
    # hooks.kubevirt.io/hookSidecars carries the image and its pull policy.
    config = config_from_args(args)
    raw = merged_sidecars(None, image=config.sidecar_image, pull_policy=config.sidecar_pull_policy)
    assert raw is not None
    (entry,) = json.loads(raw)
    assert entry["image"] == f"ghcr.io/kubevirt-bridge-migration/bridge-migration-sidecar@{DIGEST}"
    assert entry["imagePullPolicy"] == "Always"


def test_the_default_sidecar_pull_policy_is_if_not_present(render: Render) -> None:
    assert _flag(_webhook_args(render()), "sidecar-pull-policy") == "IfNotPresent"


# ---- schema coverage --------------------------------------------------------------------------


def test_every_value_in_values_yaml_is_in_the_schema() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        return resolve(schema["definitions"][ref.rsplit("/", 1)[1]]) if ref else node

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        node = resolve(node)
        if isinstance(value, dict) and "properties" in node:
            for key, sub in value.items():
                assert key in node["properties"], f"{path}{key} is not in values.schema.json"
                walk(sub, node["properties"][key], f"{path}{key}.")

    walk(values, schema, "")


def test_chart_home_is_the_repository_the_images_are_published_from() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    owner, name = values["image"]["repository"].removeprefix("ghcr.io/").split("/")
    assert chart["home"] == f"https://github.com/{owner}/{name}"
    assert chart["sources"] == [chart["home"]]
