"""The KubeVirt hook server, called by a real gRPC client over the real unix socket."""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sidecar.core.vmistore import VmiStore
from sidecar.hookapi import (
    hook_info_pb2,
    hook_info_pb2_grpc,
    hook_v1alpha2_pb2,
    hook_v1alpha2_pb2_grpc,
    hook_v1alpha3_pb2,
    hook_v1alpha3_pb2_grpc,
)
from sidecar.pod.hook_server import SOCKET_NAME, HookServer
from tests.sidecar.samples import THREE_NIC_VMI, domain_xml

# grpclib's Server.close() cancels requests but leaves an idle client connection open until the
# client goes, and Python 3.11's asyncio cannot close a server's clients. With grpcio's client and
# our server in one process, the server's end of a connection the client has just closed can be
# collected unclosed after the hook loop stops. The sidecar process exits right after stopping
# its hook server, so only these tests see it: the fixture collects it here, where it is ignored,
# instead of in whichever later test the garbage collector happens to run.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class Running:
    def __init__(self, server: HookServer, store: VmiStore, shutdown: threading.Event) -> None:
        self.server = server
        self.store = store
        self.shutdown = shutdown
        self.channel = grpc.insecure_channel(f"unix://{server.socket_path}")


@pytest.fixture
def hook(tmp_path: Path) -> Iterator[Running]:
    store = VmiStore()
    shutdown = threading.Event()
    server = HookServer(directory=tmp_path, store=store, on_shutdown=shutdown.set)
    assert server.start()
    running = Running(server, store, shutdown)
    yield running
    running.channel.close()
    server.stop()
    del running, server
    gc.collect()


def test_the_socket_is_a_dot_sock_file_in_the_hook_directory(hook: Running, tmp_path: Path) -> None:
    assert [p.name for p in tmp_path.iterdir()] == [SOCKET_NAME]
    assert SOCKET_NAME.endswith(".sock")


def test_info_lists_only_the_hook_points_virt_launcher_survives(hook: Running) -> None:
    # Played as virt-launcher does: Info first, over the socket, with a grpcio (not grpclib) client.
    info = hook_info_pb2_grpc.InfoStub(hook.channel).Info(hook_info_pb2.InfoParams(), timeout=10)
    assert info.name == "bridge-migration"
    assert sorted(info.versions) == ["v1alpha2", "v1alpha3"]
    # PreCloudInitIso would crash virt-launcher for every VMI without a cloud-init volume.
    assert sorted(p.name for p in info.hookPoints) == ["OnDefineDomain", "Shutdown"]
    assert hook.store.registered.is_set()


@pytest.mark.parametrize("version", ["v1alpha2", "v1alpha3"])
def test_on_define_domain_returns_the_xml_unchanged_and_keeps_the_vmi(hook: Running, version: str) -> None:
    xml = domain_xml().encode()
    params = {"domainXML": xml, "vmi": json.dumps(THREE_NIC_VMI).encode()}
    if version == "v1alpha2":
        returned = (
            hook_v1alpha2_pb2_grpc.CallbacksStub(hook.channel)
            .OnDefineDomain(hook_v1alpha2_pb2.OnDefineDomainParams(**params), timeout=10)
            .domainXML
        )
    else:
        returned = (
            hook_v1alpha3_pb2_grpc.CallbacksStub(hook.channel)
            .OnDefineDomain(hook_v1alpha3_pb2.OnDefineDomainParams(**params), timeout=10)
            .domainXML
        )
    assert returned == xml
    assert hook.store.get() == THREE_NIC_VMI


def test_a_method_we_do_not_list_is_unimplemented_not_a_hang(hook: Running) -> None:
    # A virt-launcher that called PreCloudInitIso anyway gets a clear gRPC status at once.
    call = hook.channel.unary_unary(
        "/kubevirt.hooks.v1alpha3.Callbacks/PreCloudInitIso",
        request_serializer=lambda _msg: b"",
        response_deserializer=lambda raw: raw,
    )
    with pytest.raises(grpc.RpcError) as failure:
        call(b"", timeout=10)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_malformed_vmi_is_ignored_and_the_previous_one_kept(hook: Running) -> None:
    stub = hook_v1alpha3_pb2_grpc.CallbacksStub(hook.channel)
    good = json.dumps(THREE_NIC_VMI).encode()
    stub.OnDefineDomain(hook_v1alpha3_pb2.OnDefineDomainParams(domainXML=b"<domain/>", vmi=good), timeout=10)
    result = stub.OnDefineDomain(
        hook_v1alpha3_pb2.OnDefineDomainParams(domainXML=b"<domain/>", vmi=b"{not json"), timeout=10
    )
    assert result.domainXML == b"<domain/>"
    assert hook.store.get() == THREE_NIC_VMI


def test_shutdown_answers_then_asks_the_process_to_stop(hook: Running) -> None:
    stub = hook_v1alpha3_pb2_grpc.CallbacksStub(hook.channel)
    stub.Shutdown(hook_v1alpha3_pb2.ShutdownParams(), timeout=10)
    assert hook.shutdown.wait(10)


def test_no_hook_directory_means_no_hook_server(tmp_path: Path) -> None:
    server = HookServer(directory=tmp_path / "absent", store=VmiStore(), on_shutdown=lambda: None)
    assert not server.start()
    assert not server.enabled
