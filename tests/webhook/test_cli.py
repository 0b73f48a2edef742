"""Starting the webhook: flags that must come together, and what an admin is told when they do not."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from webhook.cli import ENV_PREFIX, build_parser, config_from_args
from webhook.config import WebhookConfig


def refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        config_from_args(argv)
    assert stopped.value.code == 2  # argparse's usage error: the process does not start
    return capsys.readouterr().err


def test_a_certificate_without_its_key_stops_the_webhook_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--tls-cert and --tls-key go together" in refusal(["--tls-cert", "/tls/tls.crt"], capsys)


def test_a_key_without_its_certificate_stops_it_too_even_in_dev_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--tls-cert and --tls-key go together" in refusal(["--tls-key", "/tls/tls.key"], capsys)
    assert "--tls-cert and --tls-key go together" in refusal(["--dev", "--tls-key", "/tls/tls.key"], capsys)


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_tls_reload_period_that_is_not_positive_stops_the_webhook(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "--tls-reload-seconds must be > 0" in refusal(["--dev", "--tls-reload-seconds", value], capsys)


def test_half_a_pair_from_the_environment_is_refused_like_the_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BM_WEBHOOK_TLS_CERT", "/tls/tls.crt")
    assert "--tls-cert and --tls-key go together" in refusal([], capsys)


def test_the_pair_together_is_taken_as_given() -> None:
    config = config_from_args(["--tls-cert", "/tls/tls.crt", "--tls-key", "/tls/tls.key"])
    assert (str(config.tls_cert), str(config.tls_key)) == ("/tls/tls.crt", "/tls/tls.key")
    assert not config.dev


def test_without_any_certificate_the_webhook_says_how_to_get_one(capsys: pytest.CaptureFixture[str]) -> None:
    err = refusal([], capsys)
    assert "the apiserver only calls webhooks over HTTPS" in err and "--dev" in err


@pytest.fixture
def no_webhook_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every flag defaults from its BM_WEBHOOK_* twin first: one set here would stand in for the default.
    for name in os.environ:
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


# The flags whose setting has another name in WebhookConfig (the unit is in the field's name).
FIELD_OF = {
    "request_deadline": "request_deadline_s",
    "api_timeout": "api_timeout_s",
    "tls_reload_seconds": "tls_reload_s",
}


@pytest.mark.usefixtures("no_webhook_environment")
def test_without_flags_the_webhook_runs_with_webhook_configs_defaults() -> None:
    # --dev only because the webhook refuses to start without a certificate otherwise.
    assert config_from_args(["--dev"]) == replace(WebhookConfig(), dev=True)


@pytest.mark.usefixtures("no_webhook_environment")
def test_each_flags_default_is_webhook_configs() -> None:
    parser = build_parser()
    defaults = WebhookConfig()
    for action in (a for a in parser._actions if a.option_strings and a.dest != "help"):
        if action.dest == "annotation_prefix":
            assert action.default == defaults.keys.prefix
        else:
            assert action.default == getattr(defaults, FIELD_OF.get(action.dest, action.dest)), action.dest


def test_each_flags_choices_are_what_the_setting_admits() -> None:
    choices = {a.dest: a.choices for a in build_parser()._actions if a.choices is not None}
    assert choices == {
        "mac_policy": ("pin", "keep", "follow-pod"),
        "nic_refresh": ("auto", "link", "reattach"),
        "sidecar_gate": ("auto", "on", "off"),
        "delivery": ("auto", "hook", "inject", "node"),
        "validation": ("warn", "strict"),
        "log_level": ("debug", "info", "warning", "error"),
        "log_format": ("text", "json"),
        "sidecar_log_format": ("text", "json"),
    }
