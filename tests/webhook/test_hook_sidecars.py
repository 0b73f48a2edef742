"""Our entry in `hooks.kubevirt.io/hookSidecars` is ours whatever its tag: one of ours, never two."""

from __future__ import annotations

import json

import pytest

from webhook.hook_sidecars import image_repository, is_our_image, merged_sidecars

OURS = "registry.example:5000/team/bridge-migration:0.2.0"


@pytest.mark.parametrize(
    ("ref", "repository"),
    [
        ("registry.example:5000/team/bridge-migration:0.2.0", "registry.example:5000/team/bridge-migration"),
        ("registry.example:5000/team/bridge-migration", "registry.example:5000/team/bridge-migration"),
        ("ghcr.io/x/bridge-migration@sha256:" + "a" * 64, "ghcr.io/x/bridge-migration"),
        ("ghcr.io/x/bridge-migration:0.1.0@sha256:" + "b" * 64, "ghcr.io/x/bridge-migration"),
        ("localhost:5000/bm", "localhost:5000/bm"),
        ("bm:1", "bm"),
    ],
)
def test_the_repository_is_the_reference_without_tag_or_digest(ref: str, repository: str) -> None:
    assert image_repository(ref) == repository


def test_every_tag_and_digest_of_our_repository_is_ours_and_nothing_else() -> None:
    assert is_our_image("registry.example:5000/team/bridge-migration:0.1.0", OURS)
    assert is_our_image("registry.example:5000/team/bridge-migration@sha256:" + "c" * 64, OURS)
    assert not is_our_image("registry.example:5000/team/bridge-migration-fork:0.2.0", OURS)
    assert not is_our_image("other.example/team/bridge-migration:0.2.0", OURS)
    for not_an_image in (None, "", "   ", 7, ["registry.example:5000/team/bridge-migration:0.2.0"]):
        assert not is_our_image(not_an_image, OURS)


def test_an_entry_of_an_earlier_release_is_replaced_in_place_and_the_users_entries_kept() -> None:
    theirs_before = {"image": "quay.io/me/hook:1", "args": ["--version", "v1alpha2"]}
    theirs_after = {"image": "quay.io/me/other:2", "command": ["/hook"], "pvc": {"name": "x"}}
    old = {
        "image": "registry.example:5000/team/bridge-migration:0.1.0",
        "command": ["python", "-m", "sidecar", "serve"],
    }
    raw = json.dumps([theirs_before, old, theirs_after])
    merged = json.loads(merged_sidecars(raw, image=OURS, pull_policy="IfNotPresent") or "null")
    assert merged == [
        theirs_before,
        {"image": OURS, "imagePullPolicy": "IfNotPresent", "command": ["python", "-m", "sidecar", "serve"]},
        theirs_after,
    ]
    # Admitted again: already right, nothing to change.
    assert merged_sidecars(json.dumps(merged), image=OURS, pull_policy="IfNotPresent") is None


def test_two_entries_of_ours_become_one() -> None:
    a = {"image": "registry.example:5000/team/bridge-migration:0.1.0"}
    b = {"image": "registry.example:5000/team/bridge-migration:0.2.0", "imagePullPolicy": "Always"}
    merged = json.loads(merged_sidecars(json.dumps([a, b]), image=OURS, pull_policy="IfNotPresent") or "null")
    assert [e["image"] for e in merged] == [OURS]
