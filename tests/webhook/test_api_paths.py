"""Reads of the Kubernetes API stay in the namespace of the review that asked for them.

The VMI name a read is made for comes from the tenant: a migration's ``spec.vmiName``, a launcher
pod's ``kubevirt.io/domain`` annotation. Whatever it holds, a request either goes to that VMI's
path in the review's own namespace or is not made at all, and the user is told why.

The API here is a NAMED FAKE: an ``httpx.MockTransport`` standing in for kube-apiserver, which
records every request and serves a VMI (with a MAC of its own) for any VMI path. A real
apiserver would serve another namespace's VMI just the same to our service account, which may
read VMIs cluster-wide; the fake makes that visible without a cluster.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubelab.reviews import make_review
from tests.examples import examples
from tests.webhook.kubevirt_api import post_review
from tests.webhook.launcher_pods import IMAGE, launcher_pod
from tests.webhook.vmis import vmi
from webhook.config import WebhookConfig
from webhook.kube import ApiTarget, InvalidNameError, KubeClient, SidecarGateCache
from webhook.orchestration import Runtime

CNI_KEY = "cni.projectcalico.org/hwAddr"
MACS_KEY = "bridge-migration.kubevirt.io/macs"
VICTIM_MAC = "02:00:00:00:be:ef"
PREFIX = "/apis/kubevirt.io/v1/namespaces/"

# Kubernetes' own rules, written out here independently of webhook/kube.py (apimachinery's
# IsDNS1123Subdomain for object names, IsDNS1123Label for namespaces).
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
SUBDOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")
LABEL_RE = re.compile(_LABEL)


def kubernetes_accepts_name(name: str) -> bool:
    return len(name) <= 253 and SUBDOMAIN_RE.fullmatch(name) is not None


def kubernetes_accepts_namespace(namespace: str) -> bool:
    return len(namespace) <= 63 and LABEL_RE.fullmatch(namespace) is not None


class FakeApiserver:
    """FAKE kube-apiserver: records the path of every request and answers any VMI path with a VMI
    of that namespace and name, carrying a bridge interface with its own MAC."""

    def __init__(self) -> None:
        self.paths: list[str] = []  # as sent on the wire (percent-encoding kept)

    def handle(self, request: httpx.Request) -> httpx.Response:
        raw = request.url.raw_path.decode("ascii")
        self.paths.append(raw)
        # The apiserver routes on the decoded path (Go's URL.Path), so the fake does too.
        parts = unquote(raw).split("/")
        if len(parts) == 8 and parts[1:4] == ["apis", "kubevirt.io", "v1"] and parts[6] == "virtualmachineinstances":
            namespace, name = parts[5], parts[7]
            obj = vmi(
                name=name, namespace=namespace, interfaces=[{"name": "default", "bridge": {}, "macAddress": VICTIM_MAC}]
            )
            return httpx.Response(200, json=obj)
        return httpx.Response(404, json={"kind": "Status", "code": 404})


_loop = asyncio.new_event_loop()
# Loading the system CA store costs ~45 ms; the fake is never reached over TLS, so one will do.
_TARGET = ApiTarget(server="https://apiserver.test", ssl_context=ssl.create_default_context())


def admit(api: FakeApiserver, path: str, review: dict[str, Any], **config: Any) -> dict[str, Any]:
    """One review through the real app, with the fake API behind its KubeClient."""
    kube = KubeClient(_TARGET, timeout_s=2, transport=httpx.MockTransport(api.handle))
    rt = Runtime(
        config=WebhookConfig(sidecar_image=IMAGE, cni_mac_annotation=CNI_KEY, **config),
        gate=SidecarGateCache(None, forced=True, refresh_s=30),
        kube=kube,
    )

    async def post() -> dict[str, Any]:
        try:
            return await post_review(rt, path, review)
        finally:
            await kube.aclose()

    return _loop.run_until_complete(post())


def migration_review(vmi_name: str, namespace: str = "tenant") -> dict[str, Any]:
    migration = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "m", "namespace": namespace},
        "spec": {"vmiName": vmi_name},
    }
    return dict(make_review(migration))


def target_pod_review(vmi_name: str, namespace: str = "tenant") -> dict[str, Any]:
    pod = launcher_pod(target=True, annotations={"kubevirt.io/domain": vmi_name})
    pod["metadata"]["namespace"] = namespace
    return dict(make_review(pod))


def patched_annotations(answer: dict[str, Any]) -> str:
    """Everything our patch writes, as text (empty when there is no patch)."""
    return base64.b64decode(answer["patch"]).decode() if "patch" in answer else ""


CLIMB_OUT = "../../victims/virtualmachineinstances/secret"


@pytest.mark.parametrize("validation", ["warn", "strict"])
def test_a_migration_whose_vmi_name_climbs_into_another_namespace_reads_nothing_and_is_refused(
    validation: str,
) -> None:
    api = FakeApiserver()
    answer = admit(
        api, "/validate/virtualmachineinstancemigrations", migration_review(CLIMB_OUT), validation=validation
    )
    assert api.paths == []
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 400
    message = answer["status"]["message"]
    assert "spec.vmiName" in message and "is not a valid VirtualMachineInstance name" in message
    assert "victims" not in message.replace(CLIMB_OUT, "")  # nothing read from there is shown


def test_a_target_pod_whose_domain_annotation_climbs_out_gets_no_other_vmis_mac() -> None:
    api = FakeApiserver()
    answer = admit(api, "/mutate/pods", target_pod_review(CLIMB_OUT))
    assert api.paths == []
    assert answer["allowed"] is True
    assert VICTIM_MAC not in patched_annotations(answer)
    assert any("kubevirt.io/domain" in w and "not a valid VirtualMachineInstance name" in w for w in answer["warnings"])


def test_a_valid_name_is_read_at_its_own_path_in_the_reviews_namespace() -> None:
    api = FakeApiserver()
    review = target_pod_review("web-1.example")
    answer = admit(api, "/mutate/pods", review)
    assert api.paths == ["/apis/kubevirt.io/v1/namespaces/tenant/virtualmachineinstances/web-1.example"]
    # The VMI's own MAC reaches the pod and the CNI, as before.
    pod = jsonpatch.apply_patch(review["request"]["object"], json.loads(base64.b64decode(answer["patch"])))
    assert pod["metadata"]["annotations"][CNI_KEY] == VICTIM_MAC
    assert json.loads(pod["metadata"]["annotations"][MACS_KEY]) == {"default": VICTIM_MAC}


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("demo", "../victims/virtualmachineinstances/x"),
        ("demo", "a/b"),
        ("demo", ".."),
        ("demo", "."),
        ("demo", "%2e%2e"),
        ("demo", "web-1%2F..%2F.."),
        ("demo", "Web-1"),
        ("demo", "web-1\n"),
        ("demo", "web_1"),
        ("demo", "wéb"),
        ("demo", ""),
        ("demo", "a" * 254),
        ("demo", "-web"),
        ("Demo", "web-1"),
        ("de.mo", "web-1"),
        ("../kube-system", "web-1"),
        ("d" * 64, "web-1"),
    ],
)
def test_get_vmi_refuses_what_kubernetes_would_not_accept_as_a_name_without_a_request(
    namespace: str, name: str
) -> None:
    api = FakeApiserver()
    kube = KubeClient(_TARGET, timeout_s=2, transport=httpx.MockTransport(api.handle))

    async def read() -> None:
        try:
            await kube.get_vmi(namespace, name)
        finally:
            await kube.aclose()

    with pytest.raises(InvalidNameError, match="not a valid"):
        _loop.run_until_complete(read())
    assert api.paths == []


# Names drawn to break out of a path: separators, dot segments, percent-encodings of both, and
# text Kubernetes would never accept, mixed with names it does.
PIECES = [
    "/",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%",
    "?",
    "#",
    "\\",
    "victims",
    "web-1",
    "a",
    "-",
    "é",
    "\u2024",
    " ",
]
names = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=8).map("".join),
    st.text(max_size=20),
    st.from_regex(SUBDOMAIN_RE, fullmatch=True).filter(lambda n: len(n) <= 253),
)
namespaces = st.one_of(
    st.sampled_from(["tenant", "demo", "victims"]), st.from_regex(LABEL_RE, fullmatch=True), st.text(max_size=10)
)


@settings(max_examples=examples(400), deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(names, namespaces, st.sampled_from(["migration", "pod"]))
def test_every_api_read_an_admission_makes_stays_at_its_vmi_in_the_reviews_namespace(
    name: str, namespace: str, endpoint: str
) -> None:
    api = FakeApiserver()
    if endpoint == "migration":
        admit(api, "/validate/virtualmachineinstancemigrations", migration_review(name, namespace))
    else:
        admit(api, "/mutate/pods", target_pod_review(name, namespace))
    if not (kubernetes_accepts_name(name) and kubernetes_accepts_namespace(namespace)):
        assert api.paths == [], (name, namespace)
    for raw in api.paths:
        # Both what is sent and what the apiserver routes on after decoding it.
        for path in (raw, unquote(raw)):
            assert path.startswith(f"{PREFIX}{namespace}/virtualmachineinstances/"), (name, namespace, raw)
            assert path.split("/")[4:] == ["namespaces", namespace, "virtualmachineinstances", name], raw


@pytest.fixture(autouse=True, scope="module")
def _close_loop() -> Iterator[None]:
    yield
    _loop.close()
