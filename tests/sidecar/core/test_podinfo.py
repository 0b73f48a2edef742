"""Reading our annotations from the downward-API file (or the VMI), with safe defaults."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bridge_migration_contract import AnnotationKeys
from sidecar.core import podinfo
from tests.sidecar.samples import vmi


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "annotations"
    path.write_text(text)
    return path


def test_policy_and_macs_are_read_from_go_quoted_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'kubevirt.io/allow-pod-bridge-network-live-migration=""\n'
        'bridge-migration.kubevirt.io/mac-policy="follow-pod"\n'
        'bridge-migration.kubevirt.io/macs="{\\"default\\":\\"02:00:00:AA:BB:01\\"}"\n',
    )
    info = podinfo.load(path, vmi=None)
    assert info.policy == "follow-pod"
    assert info.macs == {"default": "02:00:00:aa:bb:01"}
    assert info.enabled


def test_the_opt_out_annotation_disables(tmp_path: Path) -> None:
    info = podinfo.load(write(tmp_path, 'bridge-migration.kubevirt.io/enabled="false"\n'), vmi=None)
    assert not info.enabled


def test_a_malformed_file_falls_back_to_defaults_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "this is not an annotations file\n")
    with caplog.at_level(logging.WARNING):
        first = podinfo.load(path, vmi=None)
        second = podinfo.load(path, vmi=None)
    assert first == second
    assert (first.policy, first.macs, first.enabled) == ("pin", {}, True)
    assert len([r for r in caplog.records if "malformed annotations file" in r.message]) == 1


def test_a_bad_policy_or_bad_macs_value_is_ignored_but_the_rest_is_used(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'bridge-migration.kubevirt.io/mac-policy="sometimes"\n'
        'bridge-migration.kubevirt.io/macs="[1,2]"\n'
        'bridge-migration.kubevirt.io/enabled="false"\n',
    )
    info = podinfo.load(path, vmi=None)
    assert (info.policy, info.macs, info.enabled) == ("pin", {}, False)
    assert len(info.problems) == 2


def test_the_nic_refresh_mode_is_read_and_a_bad_one_falls_back_to_link(tmp_path: Path) -> None:
    info = podinfo.load(write(tmp_path, 'bridge-migration.kubevirt.io/nic-refresh="reattach"\n'), vmi=None)
    assert (info.nic_refresh, info.problems) == ("reattach", ())
    assert podinfo.load(write(tmp_path, ""), vmi=None).nic_refresh == "link"
    bad = podinfo.load(write(tmp_path, 'bridge-migration.kubevirt.io/nic-refresh="flap"\n'), vmi=None)
    assert bad.nic_refresh == "link" and "nic-refresh" in bad.problems[0]


def test_without_the_file_the_vmi_annotations_are_used(tmp_path: Path) -> None:
    source = vmi(annotations={"bridge-migration.kubevirt.io/mac-policy": "keep"})
    assert podinfo.load(tmp_path / "missing", vmi=source).policy == "keep"


def test_go_escapes_that_json_lacks_are_understood() -> None:
    assert podinfo.parse_annotations_file('a="tab\\there\\x41"\n') == {"a": "tab\there" + "A"}


def test_the_interfaces_record_names_what_an_injected_fixer_may_touch() -> None:
    keys = AnnotationKeys()
    assert podinfo.from_annotations({keys.interfaces: "default, lan,"}).interfaces == {"default", "lan"}
    assert podinfo.from_annotations({keys.interfaces: ""}).interfaces == frozenset()  # a record of none: touch nothing
    assert podinfo.from_annotations({}).interfaces is None  # no record: the fixer knows the VMI, or guesses
