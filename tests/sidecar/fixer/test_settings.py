"""The fixer's timing settings: defaults declared once, and both programs' flags derived from them."""

from __future__ import annotations

import argparse

import pytest

from sidecar.cli import build_parser
from sidecar.fixer.settings import FixerSettings
from sidecar.node.settings import NODE_FIXER, node_agent_settings_from_args
from sidecar.pod.settings import settings_from_args


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_the_promised_defaults() -> None:
    # docs/sidecar.md and docs/node-agent.md quote these; a change here is a change users see.
    assert FixerSettings() == FixerSettings(
        link_pause_s=0.1, resume_settle_s=1.0, link_down_spacing_s=1.5, detach_timeout_s=30.0
    )


def test_serve_without_flags_runs_with_the_fixers_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("BM_SIDECAR_LINK_PAUSE_MS", "BM_SIDECAR_RESUME_SETTLE_MS", "BM_SIDECAR_DETACH_TIMEOUT"):
        monkeypatch.delenv(env, raising=False)
    assert settings_from_args(parse("serve")).fixer == FixerSettings()


def test_the_node_agent_gives_up_on_a_slow_release_sooner_and_keeps_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("BM_SIDECAR_LINK_PAUSE_MS", "BM_SIDECAR_RESUME_SETTLE_MS", "BM_SIDECAR_DETACH_TIMEOUT"):
        monkeypatch.delenv(env, raising=False)
    fixer = node_agent_settings_from_args(parse("node-agent")).fixer
    assert fixer == NODE_FIXER
    assert fixer.detach_timeout_s == 15.0
    assert (fixer.link_pause_s, fixer.resume_settle_s) == (
        FixerSettings().link_pause_s,
        FixerSettings().resume_settle_s,
    )


def test_flags_and_their_environment_twins_set_the_same_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    from_flags = settings_from_args(parse("serve", "--link-pause-ms", "250", "--resume-settle-ms", "0")).fixer
    monkeypatch.setenv("BM_SIDECAR_LINK_PAUSE_MS", "250")
    monkeypatch.setenv("BM_SIDECAR_RESUME_SETTLE_MS", "0")
    from_env = settings_from_args(parse("serve")).fixer
    assert from_flags == from_env
    assert (from_flags.link_pause_s, from_flags.resume_settle_s) == (0.25, 0.0)


def test_the_help_shows_the_defaults_in_the_flags_units(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("serve", "--help")
    flat = " ".join(capsys.readouterr().out.split())
    assert "default: 100]" in flat  # --link-pause-ms, in ms
    assert "default: 1000]" in flat  # --resume-settle-ms
    assert "default: 30]" in flat  # --detach-timeout, in seconds


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--link-pause-ms", "-1"), "must be >= 0"),
        (("--detach-timeout", "0"), "--detach-timeout > 0"),
        (("--resume-settle-ms", "soon"), "bad number"),
    ],
)
def test_a_bad_timing_flag_is_refused_with_a_message(argv: tuple[str, ...], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        settings_from_args(parse("serve", *argv))


def test_negative_or_zero_settings_cannot_be_built() -> None:
    with pytest.raises(ValueError):
        FixerSettings(link_pause_s=-0.1)
    with pytest.raises(ValueError):
        FixerSettings(detach_timeout_s=0)
