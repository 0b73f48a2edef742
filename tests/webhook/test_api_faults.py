"""When the Kubernetes API does not answer: the migration check fails clearly and in time.

The API here is a NAMED FAKE: a loopback TCP listener that accepts connections and never says a
word (a hung apiserver), which a test cannot get from a real one on demand. The webhook is the
real process over real TLS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelab.reviews import make_review
from tests.webhook.server import hung_apiserver, running_webhook
from tests.webhook.vmis import vmi
from webhook.admission import BadReviewError, parse_review
from webhook.certs import CertificateAuthority
from webhook.kube import KubeError, target_from_kubeconfig

MIGRATION = {
    "apiVersion": "kubevirt.io/v1",
    "kind": "VirtualMachineInstanceMigration",
    "metadata": {"name": "m", "namespace": "demo"},
    "spec": {"vmiName": "web-1"},
}


@pytest.fixture
def silent_apiserver(tmp_path: Path) -> Iterator[Path]:
    with hung_apiserver(tmp_path) as (kubeconfig, _):
        yield kubeconfig


def review_migration(
    tmp_path: Path, kubeconfig: Path, *args: str, migration: dict[str, Any] = MIGRATION
) -> dict[str, object]:
    with running_webhook(tmp_path, "--kubeconfig", str(kubeconfig), "--sidecar-gate", "on", *args) as hook:
        with hook.client() as client:
            resp = client.post("/validate/virtualmachineinstancemigrations", json=make_review(migration))
        assert resp.status_code == 200
        answer: dict[str, object] = resp.json()["response"]
        return answer


def test_warn_mode_lets_the_migration_through_with_a_warning_after_the_api_timeout(
    tmp_path: Path, silent_apiserver: Path
) -> None:
    answer = review_migration(tmp_path, silent_apiserver, "--api-timeout", "0.5")
    assert answer["allowed"] is True
    (warning,) = answer["warnings"]  # type: ignore[misc]
    assert "could not read VMI demo/web-1" in warning and "not checked" in warning


def test_strict_mode_refuses_what_it_cannot_check(tmp_path: Path, silent_apiserver: Path) -> None:
    answer = review_migration(tmp_path, silent_apiserver, "--api-timeout", "0.5", "--validation", "strict")
    assert answer["allowed"] is False
    status = answer["status"]
    assert isinstance(status, dict) and status["code"] == 503
    assert "could not read VMI demo/web-1" in status["message"]


def test_a_vmi_name_that_climbs_into_another_namespace_is_refused_without_touching_the_api(tmp_path: Path) -> None:
    """The real process, a real socket: not one connection reaches the API (the gate is forced on,
    so nothing else reads it). Before the fix the read went out, to namespace victims."""
    climbing = {**MIGRATION, "spec": {"vmiName": "../../victims/virtualmachineinstances/secret"}}
    with hung_apiserver(tmp_path) as (kubeconfig, accepted):
        answer = review_migration(tmp_path, kubeconfig, "--api-timeout", "0.5", migration=climbing)
        assert accepted == []
    assert answer["allowed"] is False
    status = answer["status"]
    assert isinstance(status, dict) and status["code"] == 400
    assert status["message"] == (
        "bridge-migration: spec.vmiName: '../../victims/virtualmachineinstances/secret' is not a valid"
        " VirtualMachineInstance name (lower-case letters, digits, '-' and '.', at most 253 characters)"
    )


def test_the_per_request_deadline_answers_before_a_slower_api_read(tmp_path: Path, silent_apiserver: Path) -> None:
    answer = review_migration(tmp_path, silent_apiserver, "--api-timeout", "30", "--request-deadline", "1")
    assert answer["allowed"] is True
    assert "no answer within 1.0s" in answer["warnings"][0]  # type: ignore[index]


def test_a_create_with_a_null_old_object_is_admitted_as_kube_apiserver_sends_it() -> None:
    review = make_review(vmi())
    review["request"]["oldObject"] = None  # what kube-apiserver sends on CREATE
    parsed = parse_review(json.dumps(review).encode(), expect_kind="VirtualMachineInstance")
    assert parsed.old_obj is None
    review["request"]["oldObject"] = "not an object"
    with pytest.raises(BadReviewError, match="oldObject"):
        parse_review(json.dumps(review).encode(), expect_kind="VirtualMachineInstance")


def run_webhook(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", "--dev", *args],  # each case stops before it listens
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_an_invalid_environment_value_stops_the_webhook_as_the_flag_would() -> None:
    for env, flag in (
        ({"BM_WEBHOOK_VALIDATION": "strictt"}, "--validation"),
        ({"BM_WEBHOOK_MAC_POLICY": "pinn"}, "--mac-policy"),
        ({"BM_WEBHOOK_SIDECAR_GATE": "maybe"}, "--sidecar-gate"),
        ({"BM_WEBHOOK_DELIVERY": "sidecar"}, "--delivery"),
        ({"BM_WEBHOOK_LOG_LEVEL": "loud"}, "--log-level"),
    ):
        result = run_webhook(env=env)
        assert result.returncode == 2, (env, result.stderr)
        assert f"{flag} (or {next(iter(env))})" in result.stderr
        assert "invalid choice" in result.stderr
    bad_port = run_webhook(env={"BM_WEBHOOK_PORT": "eighty"})
    assert bad_port.returncode == 2 and "--port" in bad_port.stderr


def test_an_explicit_kubeconfig_that_cannot_be_used_stops_the_webhook(tmp_path: Path) -> None:
    missing = run_webhook("--kubeconfig", str(tmp_path / "absent"))
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    garbage = tmp_path / "kubeconfig"
    garbage.write_text("this: is: not: a kubeconfig\n")
    broken = run_webhook("--kubeconfig", str(garbage))
    assert broken.returncode == 2
    assert "cannot use kubeconfig" in broken.stderr


def test_kubeconfig_file_paths_are_read_relative_to_the_kubeconfig_as_kubectl_does(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "ca.crt").write_bytes(ca.ca_path.read_bytes())
    (config_dir / "token").write_text("s3cret\n")
    kubeconfig = config_dir / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority": "ca.crt"}}
                ],
                "users": [{"name": "u", "user": {"tokenFile": "token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    target = target_from_kubeconfig(kubeconfig)  # from any working directory
    assert target.token_file == config_dir / "token"
    assert target.ssl_context.get_ca_certs(), "the relative CA file was not loaded"


EXEC_API = "client.authentication.k8s.io/v1"


def test_a_kubeconfig_with_a_credential_plugin_is_refused_with_what_to_use_instead(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [
                    {"name": "u", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}}}
                ],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    with pytest.raises(KubeError, match="'exec' credential plugin, which the webhook does not run"):
        target_from_kubeconfig(kubeconfig)
    result = run_webhook("--kubeconfig", str(kubeconfig))
    assert result.returncode == 2 and "credential plugin" in result.stderr
