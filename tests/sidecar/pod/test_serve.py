"""`python -m sidecar serve` as a real process: REST on loopback, hook socket, CLI, faults.

libvirt here is the test driver (`test:///default`, one running domain named "test"): it
answers queries and events but cannot change devices, which the lab tests cover.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bench.common import rss_kib
from sidecar.hookapi import hook_info_pb2, hook_info_pb2_grpc, hook_v1alpha3_pb2, hook_v1alpha3_pb2_grpc
from sidecar.pod.rest import MAX_BODY_BYTES
from tests.sidecar.serving import REPO, SidecarProcess


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[SidecarProcess]:
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir()
    proc = SidecarProcess(libvirt_uri="test:///default", tmp=tmp_path, hook_dir=hook_dir)
    proc.wait_ready()
    yield proc
    proc.stop()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_health_reports_the_hook_registration(sidecar: SidecarProcess, tmp_path: Path) -> None:
    sidecar.wait_for(lambda: sidecar.client.get("/healthz").json()["libvirtConnected"], timeout=20, what="connect")
    before = sidecar.client.get("/healthz")
    assert before.status_code == 200
    assert (before.json()["hookRegistered"], before.json()["ready"]) == (False, False)
    assert "has not called Info" in before.json()["detail"]
    with grpc.insecure_channel(f"unix://{tmp_path / 'hooks' / 'bridge-migration.sock'}") as channel:
        hook_info_pb2_grpc.InfoStub(channel).Info(hook_info_pb2.InfoParams(), timeout=10)
    after = sidecar.client.get("/healthz")
    assert after.status_code == 200
    assert after.json() == {
        "ok": True,
        "ready": True,
        "libvirtConnected": True,
        "hookRegistered": True,
        "hookServerEnabled": True,
        "detail": "ok",
    }


def test_status_shows_the_only_domain_and_its_interfaces(sidecar: SidecarProcess) -> None:
    status = sidecar.wait_for(
        lambda: (s := sidecar.client.get("/v1/status").json())["domain"] and s, timeout=20, what="domain"
    )
    assert status["domain"] == "test"
    assert status["domainState"] == "running"
    assert status["interfaces"][0]["mac"] == "aa:bb:cc:dd:ee:ff"
    assert status["interfaces"][0]["managed"] is False
    assert status["lastFixup"] is None


def test_a_dry_run_says_what_would_be_done_and_records_nothing(sidecar: SidecarProcess) -> None:
    sidecar.wait_for(lambda: sidecar.client.get("/healthz").json()["libvirtConnected"], timeout=20, what="connect")
    response = sidecar.client.post("/v1/fixup", json={"dryRun": True})
    assert response.status_code == 200
    body = response.json()
    assert (body["result"], body["dryRun"], body["domain"]) == ("dry-run", True, "test")
    assert sidecar.client.get("/v1/fixups").json() == []


def test_an_unknown_interface_is_a_404_that_lists_the_known_names(sidecar: SidecarProcess) -> None:
    sidecar.wait_for(lambda: sidecar.client.get("/healthz").json()["libvirtConnected"], timeout=20, what="connect")
    response = sidecar.client.post("/v1/fixup", json={"interfaces": ["nope"]})
    assert response.status_code == 404
    assert response.json()["knownInterfaces"] == []
    assert "nope" in response.json()["detail"]


def test_the_cli_prints_status_and_fails_on_an_unknown_interface(sidecar: SidecarProcess) -> None:
    sidecar.wait_for(lambda: sidecar.client.get("/healthz").json()["libvirtConnected"], timeout=20, what="connect")
    status = cli("status", "--url", sidecar.url)
    assert status.returncode == 0, status.stderr
    assert "domain:  test (running)" in status.stdout
    fixup = cli("fixup", "--url", sidecar.url, "--interface", "nope")
    assert fixup.returncode == 1
    assert "unknown interface" in fixup.stderr


def test_metrics_are_prometheus_text(sidecar: SidecarProcess) -> None:
    text = sidecar.client.get("/metrics").text
    assert "# TYPE bridge_migration_fixup_duration_seconds histogram" in text
    assert "bridge_migration_event_to_fixup_done_seconds" in text


def test_the_openapi_schema_names_the_stable_fields(sidecar: SidecarProcess) -> None:
    schema = sidecar.client.get("/openapi.json").json()
    record = schema["components"]["schemas"]["FixupRecord"]["properties"]
    for field in ("triggerTime", "triggerTimeIso", "started", "finished", "eventToDoneMs", "interfaces"):
        assert field in record
    assert "dryRun" in schema["components"]["schemas"]["FixupRequest"]["properties"]


def test_shutdown_through_the_hook_ends_the_process_with_0(sidecar: SidecarProcess, tmp_path: Path) -> None:
    with grpc.insecure_channel(f"unix://{tmp_path / 'hooks' / 'bridge-migration.sock'}") as channel:
        hook_v1alpha3_pb2_grpc.CallbacksStub(channel).Shutdown(hook_v1alpha3_pb2.ShutdownParams(), timeout=10)
    assert sidecar.proc.wait(30) == 0
    assert not (tmp_path / "hooks" / "bridge-migration.sock").exists()


def test_no_domain_yet_is_a_409(tmp_path: Path) -> None:
    proc = SidecarProcess(libvirt_uri="test:///default", tmp=tmp_path, domain="not-there-yet")
    try:
        proc.wait_ready()
        proc.wait_for(lambda: proc.client.get("/healthz").json()["libvirtConnected"], timeout=20, what="connect")
        response = proc.client.post("/v1/fixup", json={})
        assert response.status_code == 409
        assert "not-there-yet" in response.json()["detail"]
        # Nothing ran, nothing is recorded or counted; the refusal is logged.
        status = proc.client.get("/v1/status").json()
        assert (status["domain"], status["interfaces"], status["lastFixup"]) == (None, [], None)
        assert proc.client.get("/v1/fixups").json() == []
        assert "bridge_migration_fixup_runs_total{" not in proc.client.get("/metrics").text
        assert "POST /v1/fixup refused (409): domain 'not-there-yet' does not exist (yet)" in proc.log()
        # Without a hook directory the hook server is off, and health does not wait for it.
        assert proc.client.get("/healthz").json()["hookServerEnabled"] is False
        assert proc.client.get("/healthz").status_code == 200
    finally:
        assert proc.stop() == 0


def test_libvirt_down_shows_in_health_and_fixup_answers_503(tmp_path: Path) -> None:
    proc = SidecarProcess(libvirt_uri=f"qemu+unix:///system?socket={tmp_path}/absent-sock", tmp=tmp_path)
    try:
        proc.wait_ready()
        health = proc.client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["libvirtConnected"] is False
        assert "libvirt not connected" in health.json()["detail"]
        assert proc.client.post("/v1/fixup", json={}).status_code == 503
        assert proc.client.get("/v1/status").json()["libvirtConnected"] is False
    finally:
        proc.stop()


def test_a_non_loopback_listen_address_is_refused_without_a_token() -> None:
    result = cli("serve", "--listen", "0.0.0.0:8186", "--libvirt-uri", "test:///default")
    assert result.returncode == 2
    assert "not loopback" in result.stderr
    assert "--token-file" in result.stderr


def test_an_empty_or_missing_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path, message in ((empty, "is empty"), (tmp_path / "absent", "cannot read")):
        result = cli("serve", "--token-file", str(path), "--libvirt-uri", "test:///default")
        assert result.returncode == 2
        assert message in result.stderr


TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[SidecarProcess]:
    """The sidecar with a token file, bound to 0.0.0.0 (not loopback, so only allowed with a token);
    the tests still talk to it over 127.0.0.1."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    proc = SidecarProcess(
        libvirt_uri="test:///default", tmp=tmp_path, extra=["--token-file", str(token_file)], listen_host="0.0.0.0"
    )
    proc.wait_ready()
    yield proc
    proc.stop()


def test_with_a_token_it_may_listen_beyond_loopback_and_every_call_but_healthz_needs_it(
    guarded: SidecarProcess,
) -> None:
    # Only loopback traffic in tests: 0.0.0.0 is bound, 127.0.0.1 is what we call.
    client = guarded.client
    guarded.wait_for(lambda: client.get("/healthz").status_code == 200, timeout=20, what="connect")
    for method, path in (
        ("GET", "/v1/status"),
        ("POST", "/v1/fixup"),
        ("GET", "/v1/fixups"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ):
        missing = client.request(method, path, json={"dryRun": True} if method == "POST" else None)
        assert missing.status_code == 401, (path, missing.text)
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json() == {"detail": "missing or wrong bearer token"}
        wrong = client.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, path
        basic = client.request(method, path, headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401, path
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/v1/status", headers=auth).json()["domain"] == "test"
    assert client.post("/v1/fixup", json={"dryRun": True}, headers=auth).json()["result"] == "dry-run"
    assert client.get("/metrics", headers=auth).status_code == 200
    assert "REST API on 0.0.0.0" in guarded.log()
    assert "bearer token required" in guarded.log()
    assert TOKEN not in guarded.log()


def test_the_cli_sends_the_token_from_its_file_or_environment(guarded: SidecarProcess, tmp_path: Path) -> None:
    guarded.wait_for(lambda: guarded.client.get("/healthz").status_code == 200, timeout=20, what="connect")
    without = cli("status", "--url", guarded.url)
    assert without.returncode == 1
    assert "error 401: missing or wrong bearer token" in without.stderr
    with_flag = cli("status", "--url", guarded.url, "--token-file", str(tmp_path / "token"))
    assert with_flag.returncode == 0, with_flag.stderr
    assert "domain:  test (running)" in with_flag.stdout
    with_env = cli("fixup", "--dry-run", "--url", guarded.url, env={"BM_SIDECAR_TOKEN_FILE": str(tmp_path / "token")})
    assert with_env.returncode == 0, with_env.stderr
    assert "result=dry-run" in with_env.stdout


def test_every_flag_has_an_environment_twin_in_help() -> None:
    out = cli("serve", "--help").stdout
    for flag in (
        "LIBVIRT_URI",
        "LISTEN",
        "HOOK_SOCKET_DIR",
        "POD_ANNOTATIONS",
        "LINK_PAUSE_MS",
        "DOMAIN",
        "DETACH_TIMEOUT",
        "TOKEN_FILE",
        "DELIVERY",
        "END_GRACE",
    ):
        assert f"BM_SIDECAR_{flag}" in out
    assert "qemu+unix:///session?socket=/var/run/libvirt/virtqemud-sock" in out.replace("\n", "").replace(" ", "")


def raw_http(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send bytes as they are and read the whole answer (the server closes every connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(head + body)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_an_oversized_body_is_refused_with_413_before_it_is_read(sidecar: SidecarProcess) -> None:
    before = rss_kib(sidecar.proc.pid)
    response = sidecar.client.post("/v1/fixup", content=b"x" * 20_000_000)
    assert response.status_code == 413
    assert response.json() == {"detail": f"request body over {MAX_BODY_BYTES} bytes"}
    # Not read into memory: a 20 MB body that were held would show here many times over.
    assert rss_kib(sidecar.proc.pid) - before < 4096
    assert sidecar.client.get("/healthz").status_code in (200, 503)


def test_a_client_that_expects_100_continue_is_refused_before_it_sends_the_body(sidecar: SidecarProcess) -> None:
    answer = raw_http(
        sidecar.port,
        b"POST /v1/fixup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 20000000\r\nExpect: 100-continue\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer


def test_a_chunked_body_over_the_bound_is_refused_too(sidecar: SidecarProcess) -> None:
    chunk = b"x" * 3000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    answer = raw_http(sidecar.port, b"POST /v1/fixup HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", body)
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_malformed_http_is_a_400_and_a_body_of_the_wrong_shape_a_422(sidecar: SidecarProcess) -> None:
    assert raw_http(sidecar.port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request")
    wrong = sidecar.client.post("/v1/fixup", json={"dryRun": "yes"})
    assert wrong.status_code == 422
    assert "dryRun" in wrong.json()["detail"]
    assert sidecar.client.post("/v1/fixup", content=b"{not json").status_code == 422
    assert sidecar.client.get("/nope").status_code == 404
    assert sidecar.client.delete("/v1/fixup").status_code == 405


def test_the_sidecar_reads_our_keys_under_the_prefix_the_webhook_hands_it(tmp_path: Path) -> None:
    """The entry the webhook writes with --annotation-prefix acme.io/ gives the sidecar
    `--annotation-prefix acme.io/`; the pod's annotations file then says policy and opt-out
    under that prefix, and keys under the default prefix mean nothing."""
    annotations = tmp_path / "annotations"
    annotations.write_text('acme.io/mac-policy="follow-pod"\nbridge-migration.kubevirt.io/mac-policy="keep"\n')
    proc = SidecarProcess(
        libvirt_uri="test:///default",
        tmp=tmp_path,
        annotations=annotations,
        extra=["--annotation-prefix", "acme.io/"],
    )
    try:
        proc.wait_ready()
        assert proc.client.get("/v1/status").json()["policy"] == "follow-pod"
        annotations.write_text('acme.io/enabled="false"\n')
        assert proc.client.get("/v1/status").json()["enabled"] is False
    finally:
        proc.stop()
    bad = cli("serve", "--annotation-prefix", "no-slash", "--libvirt-uri", "test:///default")
    assert bad.returncode == 2 and "--annotation-prefix" in bad.stderr
