"""The fixer's command line, as the webhook writes it, is one the fixer's own parser reads.

The webhook never imports the sidecar (`.importlinter`), so nothing but this test ties the
command lines of the hook sidecar entry and the injected container to the flags `python -m
sidecar serve` takes. The parser is the real one (`sidecar.cli.build_parser`), not a copy.
"""

from __future__ import annotations

import json
import os

import pytest

from bridge_migration_contract import (
    DEFAULT_FIXER_DELIVERY,
    DEFAULT_LOG_FORMAT,
    DEFAULT_PREFIX,
    FIXER_DELIVERIES,
    HOOK_SIDECARS,
    LOG_FORMATS,
    AnnotationKeys,
    FixerDelivery,
    LogFormat,
    fixer_args,
)
from sidecar.cli import build_parser
from tests.webhook.vmis import vmi
from webhook.config import WebhookConfig
from webhook.hook_sidecars import our_entry
from webhook.injected import injected_container
from webhook.vmi_mutation import mutate_vmi

IMAGE = "registry.example/bridge-migration:test"
PREFIXES = (DEFAULT_PREFIX, "acme.io/")


@pytest.fixture(autouse=True)
def _no_sidecar_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sidecar's flags default from BM_SIDECAR_* variables: one set here would hide a flag the
    # command line failed to pass.
    for name in os.environ:
        if name.startswith("BM_SIDECAR_"):
            monkeypatch.delenv(name)


def fixer_reads(command: list[str]) -> tuple[str, str]:
    """The delivery and prefix `python -m sidecar` takes from ``command`` (argparse exits on an
    unknown flag, so a flag the fixer does not know fails the test)."""
    assert command[:3] == ["python", "-m", "sidecar"]
    args = build_parser().parse_args(command[3:])
    assert args.command == "serve"
    return args.delivery, args.annotation_prefix


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("delivery", FIXER_DELIVERIES)
def test_the_args_the_contract_builds_parse_with_the_fixers_own_parser(delivery: FixerDelivery, prefix: str) -> None:
    args = build_parser().parse_args(["serve", *fixer_args(delivery=delivery, prefix=prefix)])
    assert (args.delivery, args.annotation_prefix) == (delivery, prefix)


def test_the_fixers_own_default_delivery_is_the_one_the_contract_leaves_out() -> None:
    assert build_parser().parse_args(["serve"]).delivery == DEFAULT_FIXER_DELIVERY
    assert fixer_args(delivery=DEFAULT_FIXER_DELIVERY) == []


@pytest.mark.parametrize("prefix", PREFIXES)
def test_the_hook_sidecar_entry_starts_a_hook_fixer_with_the_webhooks_prefix(prefix: str) -> None:
    entry = our_entry(image=IMAGE, pull_policy="IfNotPresent", prefix=prefix)
    # virt-launcher runs command then args, as a container does.
    assert fixer_reads([*entry["command"], *entry.get("args", [])]) == ("hook", prefix)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_the_injected_container_starts_an_inject_fixer_with_the_webhooks_prefix(prefix: str) -> None:
    config = WebhookConfig(sidecar_image=IMAGE, keys=AnnotationKeys(prefix))
    container = injected_container({"containers": []}, config=config)
    assert "args" not in container
    assert fixer_reads(container["command"]) == ("inject", prefix)


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_the_fixers_the_webhook_starts_log_in_its_sidecar_log_format(log_format: LogFormat) -> None:
    config = WebhookConfig(sidecar_image=IMAGE, sidecar_log_format=log_format)
    # The hook sidecar entry, as a VMI gets it (delivery hook, the gate on).
    decision = mutate_vmi(vmi(), namespace="demo", config=config, sidecar_gate_on=True)
    (annotations,) = [op["value"] for op in decision.patch if op["path"] == "/metadata/annotations"]
    (entry,) = json.loads(annotations[HOOK_SIDECARS])
    hook = build_parser().parse_args([*entry["command"][3:], *entry.get("args", [])])
    inject = build_parser().parse_args(injected_container({"containers": []}, config=config)["command"][3:])
    assert hook.log_format == inject.log_format == log_format
    if log_format == DEFAULT_LOG_FORMAT:
        # The fixer's default is left out: entries written before --sidecar-log-format stay current.
        assert "args" not in entry
