"""The chart's `logFormat`: the webhook, the fixers it adds to VMs and the node agent all log in it,
read through the programs' real argument parsers."""

from __future__ import annotations

from typing import Any

import pytest

from bridge_migration_contract import LOG_FORMATS, LogFormat
from sidecar.cli import build_parser as sidecar_parser
from tests.chart.conftest import Render, one
from webhook.cli import config_from_args


def _args(objects: list[dict[str, Any]], kind: str) -> list[str]:
    (container,) = one(objects, kind)["spec"]["template"]["spec"]["containers"]
    return container["args"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("log_format", [None, *LOG_FORMATS])
def test_log_format_reaches_the_webhook_its_fixers_and_the_node_agent(
    render: Render, log_format: LogFormat | None
) -> None:
    values: dict[str, Any] = {"node": {"enabled": True}}
    if log_format is not None:
        values["logFormat"] = log_format
    objects = render(values)
    expected = log_format or "text"  # the default
    config = config_from_args(_args(objects, "Deployment"))
    assert (config.log_format, config.sidecar_log_format) == (expected, expected)
    agent = sidecar_parser().parse_args(["node-agent", *_args(objects, "DaemonSet")])
    assert agent.log_format == expected


def test_a_log_format_the_programs_do_not_know_fails_at_install_time(render: Render) -> None:
    with pytest.raises(RuntimeError, match="values don't meet the specifications of the schema"):
        render({"logFormat": "yaml"})
