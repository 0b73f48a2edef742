"""The webhook's log of its decisions (issue 26, "Seeing what it does"): one line per review, through
the real HTTP app, saying what was admitted, the verdict, what the patch touched and why; a review
that cannot be read is a WARNING and a 400. With --log-format json the real process writes only
JSON lines, uvicorn's own included."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge_migration_contract import (
    ALLOW_POD_BRIDGE_MIGRATION,
    HOOK_SIDECARS,
    LOG_FORMATS,
    LogFormat,
    LogFormatter,
    record_fields,
)
from kubelab.reviews import make_review
from tests.webhook.launcher_pods import IMAGE, launcher_pod
from tests.webhook.server import running_webhook
from tests.webhook.vmis import masquerade_vmi, vmi
from webhook.app import Runtime, create_app
from webhook.config import WebhookConfig
from webhook.kube import SidecarGateCache

DECISIONS = "webhook.decision_log"
VMIS = "/mutate/virtualmachineinstances"
VMS = "/mutate/virtualmachines"
PODS = "/mutate/pods"
TARGET_PODS = "/mutate/migration-target-pods"
MIGRATIONS = "/validate/virtualmachineinstancemigrations"
VM_UID = "3f6c2b1e-6a39-4a57-9d0e-2c1f0e8a4b7d"


def runtime(**config: Any) -> Runtime:
    return Runtime(
        config=WebhookConfig(dev=True, sidecar_image=IMAGE, **config),
        gate=SidecarGateCache(None, forced=True, refresh_s=30),
    )


def post_all(rt: Runtime, requests: list[tuple[str, Any]]) -> list[httpx.Response]:
    """Each body (a review, or raw bytes) to its path, in order, through the real app."""

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(rt, background=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = []
            for path, body in requests:
                if isinstance(body, bytes):
                    answers.append(await client.post(path, content=body))
                else:
                    answers.append(await client.post(path, json=body))
            return answers

    return asyncio.run(go())


def decision_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [record_fields(r) for r in caplog.records if r.name == DECISIONS and r.levelno == logging.INFO]


def vm(*, uid: str = VM_UID) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web-1", "namespace": "demo", "uid": uid},
        "spec": {"runStrategy": "Always", "template": {"spec": copy.deepcopy(vmi()["spec"])}},
    }


def migration(**spec: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "move", "namespace": "demo"},
        "spec": spec,
    }


def test_every_endpoint_logs_one_decision_line_with_the_object_and_the_verdict(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=DECISIONS)
    reviews = [
        (VMIS, make_review(vmi())),
        (VMIS, make_review(masquerade_vmi())),
        (VMS, make_review(vm(), operation="UPDATE", old=vm())),
        (PODS, make_review(launcher_pod())),
        (TARGET_PODS, make_review(launcher_pod(target=True))),
        (MIGRATIONS, make_review(migration(vmiName="web-1"))),
    ]
    answers = post_all(runtime(), reviews)
    assert [a.status_code for a in answers] == [200] * len(reviews)
    lines = decision_lines(caplog)
    # One line per review, told apart by the review's uid.
    assert [line["request"] for line in lines] == [review["request"]["uid"] for _, review in reviews]
    got = [
        (line["endpoint"], line["kind"], line["operation"], line["namespace"], line.get("name"), line["verdict"])
        for line in lines
    ]
    assert got == [
        ("mutate/virtualmachineinstances", "VirtualMachineInstance", "CREATE", "demo", "web-1", "patched"),
        ("mutate/virtualmachineinstances", "VirtualMachineInstance", "CREATE", "demo", "web-1", "allowed"),
        ("mutate/virtualmachines", "VirtualMachine", "UPDATE", "demo", "web-1", "patched"),
        ("mutate/pods", "Pod", "CREATE", "demo", None, "patched"),
        ("mutate/migration-target-pods", "Pod", "CREATE", "demo", None, "patched"),
        # No API configured here: warn mode admits it unchecked, and says so.
        ("validate/virtualmachineinstancemigrations", "VirtualMachineInstanceMigration", "CREATE", "demo", "move",
         "warned"),
    ]  # fmt: skip
    vm_line, pod_line, migration_line = lines[2], lines[3], lines[5]
    assert vm_line["uid"] == VM_UID
    # A launcher pod has no name yet at CREATE: its generateName, and the VMI it runs.
    assert (pod_line["generateName"], pod_line["vmi"]) == ("virt-launcher-web-1-", "web-1")
    assert migration_line["vmi"] == "web-1"
    (warning,) = migration_line["warnings"]
    assert "migration not checked" in warning
    assert all(line["allowed"] is True and line["durationMs"] >= 0 for line in lines)


def test_what_a_patch_changed_is_named_by_annotation_keys_and_paths_never_by_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=DECISIONS)
    (answer,) = post_all(runtime(), [(VMIS, make_review(vmi()))])
    patch = json.loads(base64.b64decode(answer.json()["response"]["patch"]))
    (line,) = decision_lines(caplog)
    assert line["patchOps"] == len(patch)
    assert {ALLOW_POD_BRIDGE_MIGRATION, HOOK_SIDECARS, "bridge-migration.kubevirt.io/macs"} <= set(line["annotations"])
    assert line["paths"] == ["/spec/domain/devices/interfaces/0/macAddress"]
    (pinned,) = [op["value"] for op in patch if op["path"].endswith("/macAddress")]
    (record,) = [r for r in caplog.records if r.name == DECISIONS]
    written = LogFormatter("json", component="t").format(record) + LogFormatter("text", component="t").format(record)
    assert pinned not in written  # the MAC it pinned, and the hookSidecars entry, are values: not logged
    assert IMAGE not in written


def test_a_refusal_is_logged_with_its_reason_and_code(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=DECISIONS)
    (answer,) = post_all(runtime(), [(MIGRATIONS, make_review(migration()))])
    assert answer.json()["response"]["allowed"] is False
    (line,) = decision_lines(caplog)
    assert (line["verdict"], line["allowed"], line["code"]) == ("denied", False, 400)
    assert line["reason"] == "spec.vmiName is missing"
    assert line["patchOps"] == 0 and "annotations" not in line and "paths" not in line


@pytest.mark.parametrize(
    ("path", "body", "status", "reason"),
    [
        (PODS, b"{not json", 400, "body is not JSON"),
        (PODS, json.dumps(make_review(vmi())).encode(), 400, "this endpoint admits Pod, got VirtualMachineInstance"),
        (VMIS, b"x" * 2048, 413, "body larger than 1024 bytes"),
    ],
    ids=["not-json", "wrong-kind", "too-large"],
)
def test_a_review_that_cannot_be_read_is_answered_with_an_error_and_logged_as_a_warning_with_the_reason(
    caplog: pytest.LogCaptureFixture, path: str, body: bytes, status: int, reason: str
) -> None:
    caplog.set_level(logging.INFO, logger=DECISIONS)
    (answer,) = post_all(runtime(max_body_bytes=1024), [(path, body)])
    assert answer.status_code == status
    (record,) = [r for r in caplog.records if r.name == DECISIONS]
    assert record.levelno == logging.WARNING
    fields = record_fields(record)
    assert (fields["endpoint"], fields["status"]) == (path.lstrip("/"), status)
    assert fields["reason"].startswith(reason)
    assert decision_lines(caplog) == []


def test_json_lines_parse_and_carry_the_objects_namespace_name_and_uid(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=DECISIONS)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(LogFormatter("json", component="bridge-migration-webhook"))
    logging.getLogger(DECISIONS).addHandler(handler)
    try:
        post_all(runtime(), [(VMS, make_review(vm(), operation="UPDATE", old=vm())), (PODS, b"[]")])
    finally:
        logging.getLogger(DECISIONS).removeHandler(handler)
    decision, refusal = (json.loads(line) for line in out.getvalue().splitlines())
    assert (decision["level"], decision["component"], decision["logger"]) == (
        "info",
        "bridge-migration-webhook",
        DECISIONS,
    )
    assert (decision["kind"], decision["namespace"], decision["name"], decision["uid"]) == (
        "VirtualMachine",
        "demo",
        "web-1",
        VM_UID,
    )
    assert (decision["operation"], decision["verdict"]) == ("UPDATE", "patched")
    assert decision["msg"] == "UPDATE VirtualMachine demo/web-1: patched"
    assert (refusal["level"], refusal["status"]) == ("warning", 400)
    assert refusal["reason"].startswith("body is not an AdmissionReview")


def test_at_log_level_warning_there_is_no_decision_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=DECISIONS)
    post_all(runtime(), [(VMIS, make_review(vmi()))])
    assert [r for r in caplog.records if r.name == DECISIONS] == []


TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: .*")


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_the_real_process_writes_every_line_in_its_log_format_uvicorns_included(
    tmp_path: Path, log_format: LogFormat
) -> None:
    with running_webhook(tmp_path, "--sidecar-gate", "on", "--log-format", log_format) as hook, hook.client() as client:
        assert client.post(VMIS, json=make_review(vmi())).status_code == 200
        assert client.post(PODS, content=b"{not json").status_code == 400
    lines = hook.log.read_text().splitlines()
    if log_format == "text":
        assert [line for line in lines if not TEXT_LINE.fullmatch(line)] == []
        (decision,) = [line for line in lines if " INFO webhook.decision_log: " in line]
        assert "CREATE VirtualMachineInstance demo/web-1: patched" in decision and " verdict=patched " in decision
        assert any(" INFO uvicorn.error: Application startup complete." in line for line in lines)
        return
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {d["component"] for d in docs} == {"bridge-migration-webhook"}
    assert any(d["logger"] == "uvicorn.error" and d["msg"] == "Application startup complete." for d in docs)
    (decision,) = [d for d in docs if d["logger"] == DECISIONS and d["level"] == "info"]
    assert (decision["namespace"], decision["name"], decision["verdict"]) == ("demo", "web-1", "patched")
    (bad,) = [d for d in docs if d["logger"] == DECISIONS and d["level"] == "warning"]
    assert (bad["status"], bad["endpoint"]) == (400, "mutate/pods")
