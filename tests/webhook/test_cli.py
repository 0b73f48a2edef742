"""Starting the webhook: flags that must come together, and what an admin is told when they do not."""

from __future__ import annotations

import pytest

from webhook.cli import config_from_args


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
