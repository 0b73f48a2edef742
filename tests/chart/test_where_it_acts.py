"""The chart's install-wide defaults for where and how the webhook acts (issue 26): `nicRefresh` and
`macSalt`, rendered into the webhook's arguments and read back by the webhook's own parser."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.conftest import Render, one
from webhook.cli import config_from_args
from webhook.config import WebhookConfig


def _args(objects: list[dict[str, Any]]) -> list[str]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container["args"]  # type: ignore[no-any-return]


def _config(render: Render, values: dict[str, Any] | None = None) -> WebhookConfig:
    """The settings the webhook starts with from the rendered Deployment's arguments."""
    return config_from_args(_args(render(values)))


def test_by_default_vmis_record_nic_refresh_auto_and_macs_are_pinned_without_a_salt(render: Render) -> None:
    args = _args(render())
    assert "--nic-refresh=auto" in args
    assert not [a for a in args if a.startswith("--mac-salt")]  # no salt: the MACs of earlier releases
    config = _config(render)
    assert (config.nic_refresh, config.mac_salt) == ("auto", "")


@pytest.mark.parametrize("refresh", ["link", "reattach"])
def test_nic_refresh_reaches_the_webhook(render: Render, refresh: str) -> None:
    assert _config(render, {"nicRefresh": refresh}).nic_refresh == refresh


@pytest.mark.parametrize("salt", ["9f86d081884c7d65", "a#b:c'd\"e\\f{g}"])
def test_mac_salt_reaches_the_webhook_as_written(render: Render, salt: str) -> None:
    # Any printable ASCII without blanks, YAML's and the shell's special characters included.
    assert _config(render, {"macSalt": salt}).mac_salt == salt


@pytest.mark.parametrize(
    "bad",
    [
        {"nicRefresh": "sometimes"},
        {"nicRefresh": ""},
        {"macSalt": "two words"},
        {"macSalt": "trailing-newline\n"},
        {"macSalt": "x" * 257},
        {"macSalt": 1234},
    ],
)
def test_bad_nic_refresh_or_salt_fails_at_install_time(render: Render, bad: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="values don't meet the specifications of the schema"):
        render(bad)
