"""Reading our annotations from the downward-API file (or the VMI), with safe defaults."""

from __future__ import annotations

import logging
import uuid
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


def test_the_nic_refresh_mode_is_read_and_a_bad_one_falls_back_to_auto(tmp_path: Path) -> None:
    info = podinfo.load(write(tmp_path, 'bridge-migration.kubevirt.io/nic-refresh="reattach"\n'), vmi=None)
    assert (info.nic_refresh, info.problems) == ("reattach", ())
    link = podinfo.load(write(tmp_path, 'bridge-migration.kubevirt.io/nic-refresh="link"\n'), vmi=None)
    assert link.nic_refresh == "link"
    assert podinfo.load(write(tmp_path, ""), vmi=None).nic_refresh == "auto"
    bad = podinfo.load(write(tmp_path, 'bridge-migration.kubevirt.io/nic-refresh="flap"\n'), vmi=None)
    assert bad.nic_refresh == "auto" and "nic-refresh" in bad.problems[0]


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


# Found by mutation testing (docs/testing.md, "Mutation testing"): what an admin reads in the
# fixer's log and status when the annotations file is off, and where the settings come from.


def test_a_malformed_line_is_named_by_its_number_after_blank_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, 'a="1"\n\nb="2"\nnot a line\n')
    with caplog.at_level(logging.WARNING):
        info = podinfo.load(path, vmi=None)
    assert info.problems == ('line 4: expected key="value"',)
    assert f'malformed annotations file {path}: line 4: expected key="value"; using defaults' in caplog.messages
    empty_key = podinfo.load(write(tmp_path, 'a="1"\n="2"\n'), vmi=None)
    assert empty_key.problems == ('line 2: expected key="value"',)
    unquoted = podinfo.load(write(tmp_path, "a=5\n"), vmi=None)
    assert unquoted.problems == ("line 1: value is not a quoted string",)


def test_another_annotations_value_with_an_equals_sign_does_not_hide_ours(tmp_path: Path) -> None:
    path = write(tmp_path, 'example.com/selector="app=web"\nbridge-migration.kubevirt.io/mac-policy="keep"\n')
    assert podinfo.parse_annotations_file(path.read_text())["example.com/selector"] == "app=web"
    info = podinfo.load(path, vmi=None)
    assert (info.policy, info.problems) == ("keep", ())


def test_each_ignored_annotation_is_named_in_the_problems_and_the_log(caplog: pytest.LogCaptureFixture) -> None:
    # Messages of its own: each is logged once per process, and mutmut runs the tests several times in one.
    keys = AnnotationKeys(prefix=f"x{uuid.uuid4().hex[:12]}.example.com/")
    with caplog.at_level(logging.WARNING):
        info = podinfo.from_annotations(
            {keys.mac_policy: "sometimes", keys.macs: "[1,2]", keys.kubevirt_version: "latest"}, keys
        )
    assert [p.split(": ")[0] for p in info.problems] == [keys.mac_policy, keys.macs, keys.kubevirt_version]
    assert info.kubevirt_family is None
    for problem in info.problems:
        assert f"ignoring annotation {problem}" in caplog.messages


def test_the_kubevirt_version_and_the_multus_opt_out_are_read() -> None:
    keys = AnnotationKeys()
    info = podinfo.from_annotations({keys.kubevirt_version: "v1.8.4", keys.skip_multus_bridges: "lan, storage"})
    assert (info.kubevirt_family, info.skip_multus_bridges) == ("v1.5-v1.8", frozenset({"lan", "storage"}))
    assert podinfo.from_annotations({keys.kubevirt_version: "v1.10.0-rc.1"}).kubevirt_family == "v1.9+"
    assert podinfo.from_annotations({keys.skip_multus_bridges: "*"}).skip_multus_bridges == "*"
    absent = podinfo.from_annotations({})
    assert (absent.kubevirt_family, absent.skip_multus_bridges, absent.problems) == (None, frozenset(), ())


def test_without_a_file_path_the_node_agent_reads_the_vmi_and_its_strings_only() -> None:
    source = vmi(annotations={"bridge-migration.kubevirt.io/mac-policy": "keep"})
    assert podinfo.load(None, vmi=source).policy == "keep"
    assert podinfo.load(None, vmi=None) == podinfo.PodInfo()
    assert podinfo.load(None, vmi={"metadata": None}) == podinfo.PodInfo()
    assert podinfo.load(None, vmi={"metadata": {"annotations": ["x"]}}) == podinfo.PodInfo()
    odd = {"metadata": {"annotations": {"bridge-migration.kubevirt.io/mac-policy": 5, "a": "b"}}}
    assert podinfo.vmi_annotations(odd) == {"a": "b"}
    assert podinfo.load(None, vmi=odd) == podinfo.PodInfo()


def test_a_custom_annotation_prefix_is_read_from_the_file_and_from_the_vmi(tmp_path: Path) -> None:
    keys = AnnotationKeys(prefix="example.com/")
    source = vmi(annotations={"example.com/mac-policy": "keep"})
    assert podinfo.load(None, vmi=source, keys=keys).policy == "keep"
    assert podinfo.load(tmp_path / "missing", vmi=source, keys=keys).policy == "keep"
    path = write(tmp_path, 'example.com/mac-policy="follow-pod"\nbridge-migration.kubevirt.io/enabled="false"\n')
    info = podinfo.load(path, vmi=None, keys=keys)
    assert (info.policy, info.enabled) == ("follow-pod", True)


def test_an_unreadable_file_gives_the_defaults_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        info = podinfo.load(tmp_path, vmi=vmi(annotations={"bridge-migration.kubevirt.io/mac-policy": "keep"}))
    assert (info.policy, info.enabled) == ("pin", True)
    assert len(info.problems) == 1 and "Is a directory" in info.problems[0]
    assert f"cannot read {tmp_path}: {info.problems[0]}; using defaults" in caplog.messages
