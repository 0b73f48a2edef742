"""The log lines both services write (bridge_migration_contract.LogFormatter), read as a log
pipeline reads them: JSON lines with KubeVirt's keys (docs/kubevirt-facts.md O1), or the classic
text line with the fields after it."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from bridge_migration_contract import LOG_FORMATS, LogFormat, LogFormatter, log_fields, parse_log_format


@contextmanager
def logged(fmt: LogFormat) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own, writing ``fmt`` lines to a string."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(LogFormatter(fmt, component="test-component"))
    logger = logging.getLogger("tests.log-format")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def test_a_json_line_carries_kubevirts_keys_and_the_fields_given() -> None:
    with logged("json") as (logger, out):
        before = time.time()
        fields = log_fields(namespace="demo", name="web-1", uid="u-1", vmi=None)
        logger.warning("fixup of %s: %s", "demo/web-1", "stale", extra=fields)
    (line,) = out.getvalue().splitlines()
    doc = json.loads(line)
    assert list(doc)[:6] == ["timestamp", "level", "component", "logger", "pos", "msg"]
    assert doc["level"] == "warning"
    assert doc["component"] == "test-component"
    assert doc["logger"] == "tests.log-format"
    assert re.fullmatch(r"test_log_format\.py:\d+", doc["pos"])
    assert doc["msg"] == "fixup of demo/web-1: stale"
    assert (doc["namespace"], doc["name"], doc["uid"]) == ("demo", "web-1", "u-1")
    assert "vmi" not in doc  # a None field is left out
    # KubeVirt's form: RFC 3339, UTC, microseconds.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", doc["timestamp"])
    stamp = datetime.fromisoformat(doc["timestamp"])
    assert stamp.tzinfo == UTC
    assert before - 1 <= stamp.timestamp() <= time.time() + 1


def test_levels_are_spelt_as_kubevirt_spells_them() -> None:
    with logged("json") as (logger, out):
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
            logger.log(level, "x")
    levels = [json.loads(line)["level"] for line in out.getvalue().splitlines()]
    assert levels == ["debug", "info", "warning", "error", "fatal"]


def test_a_field_never_replaces_one_of_the_lines_own_keys() -> None:
    with logged("json") as (logger, out):
        logger.info("the message", extra=log_fields(msg="a field", level="loud", kind="VirtualMachineInstance"))
    doc = json.loads(out.getvalue())
    assert (doc["msg"], doc["level"], doc["kind"]) == ("the message", "info", "VirtualMachineInstance")


def test_an_exception_stays_one_json_line_with_the_reason_and_the_traceback() -> None:
    with logged("json") as (logger, out):
        try:
            raise ValueError("no such NIC")
        except ValueError:
            logger.exception("fixup failed")
    (line,) = out.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["level"] == "error"
    assert doc["reason"] == "ValueError: no such NIC"
    assert "Traceback (most recent call last)" in doc["traceback"]
    assert 'raise ValueError("no such NIC")' in doc["traceback"]


def test_a_text_line_keeps_its_shape_and_adds_the_fields_as_key_value() -> None:
    with logged("text") as (logger, out):
        logger.info(
            "CREATE VirtualMachineInstance %s: patched",
            "demo/web-1",
            extra=log_fields(namespace="demo", patchOps=2, allowed=True, paths=["/spec/x"], reason="two words"),
        )
    (line,) = out.getvalue().splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO tests\.log-format: "
        r"CREATE VirtualMachineInstance demo/web-1: patched"
        r' namespace=demo patchOps=2 allowed=true paths=\["/spec/x"\] reason="two words"',
        line,
    )


def test_a_value_with_a_line_break_cannot_start_a_line_of_its_own_in_either_format() -> None:
    written = {}
    for fmt in LOG_FORMATS:
        with logged(fmt) as (logger, out):
            logger.info("x", extra=log_fields(name="web-1\n2026-12-07 00:00:00,000 ERROR forged: line"))
        (written[fmt],) = out.getvalue().splitlines()
    assert written["text"].endswith(r'name="web-1\n2026-12-07 00:00:00,000 ERROR forged: line"')
    assert json.loads(written["json"])["name"] == "web-1\n2026-12-07 00:00:00,000 ERROR forged: line"


def test_a_line_without_fields_is_the_classic_text_line() -> None:
    with logged("text") as (logger, out):
        logger.info("hook directory %s does not exist: hook server off", "/var/run/kubevirt-hooks")
    assert (
        out.getvalue()
        .rstrip("\n")
        .endswith(" INFO tests.log-format: hook directory /var/run/kubevirt-hooks does not exist: hook server off")
    )


def test_only_text_and_json_are_log_formats() -> None:
    assert [parse_log_format(f) for f in ("text", "json")] == ["text", "json"]
    with pytest.raises(ValueError, match="must be one of text, json, got 'yaml'"):
        parse_log_format("yaml")
