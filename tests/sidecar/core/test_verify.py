"""What the guest agent's view means for one NIC, and the steps each refresh mode may take."""

from __future__ import annotations

import pytest

from sidecar.core.verify import CHANGED, UNKNOWN, at_window_end, judge, ladder

OLD, NEW = "10.244.1.7", "10.244.2.9"


def test_the_pod_address_held_is_verified_and_another_one_is_pending_until_the_window_ends() -> None:
    assert judge(expected=NEW, seen={NEW}).judgement == "verified"
    pending = judge(expected=NEW, seen={OLD})
    assert pending.judgement == "pending"
    stale = at_window_end(pending, NEW)
    assert (stale.judgement, stale.address) == ("stale", OLD)
    assert "expected 10.244.2.9" in stale.reason


def test_an_old_address_kept_through_the_step_is_stale_at_once() -> None:
    verdict = judge(expected=NEW, seen={OLD}, kept_old=True)
    assert (verdict.judgement, verdict.reason) == ("stale", f"kept {OLD} through the step (expected {NEW})")


def test_a_nic_the_agent_does_not_list_or_without_an_address_is_pending() -> None:
    assert judge(expected=NEW, seen=None).judgement == "pending"
    assert judge(expected=NEW, seen=set()).judgement == "pending"
    assert judge(expected=NEW, seen=set(), kept_old=True).judgement == "pending"


def test_a_network_with_its_own_dhcp_needs_any_address() -> None:
    assert judge(expected=None, seen={OLD}).judgement == "verified"
    assert judge(expected=None, seen=set()).judgement == "pending"


def test_without_a_readable_pod_link_nothing_can_be_verified() -> None:
    assert judge(expected=UNKNOWN, seen={NEW}).judgement == "unverifiable"
    assert judge(expected=CHANGED, seen={NEW}, before=None).judgement == "unverifiable"


def test_changed_means_an_address_the_nic_did_not_hold_before() -> None:
    assert judge(expected=CHANGED, seen={OLD, NEW}, before={OLD}).judgement == "verified"
    assert judge(expected=CHANGED, seen={OLD}, before={OLD}).judgement == "pending"
    assert judge(expected=CHANGED, seen={OLD}, before={OLD}, kept_old=True).judgement == "stale"


@pytest.mark.parametrize(
    ("action", "refresh", "remembered", "steps"),
    [
        ("link-refresh", "auto", None, ("link-refresh", "reattach")),
        ("link-refresh", "auto", "reattach", ("reattach", "reattach")),
        ("link-refresh", "auto", "link-refresh", ("link-refresh", "reattach")),
        ("link-refresh", "link", "reattach", ("link-refresh",)),
        ("reattach", "reattach", None, ("reattach", "reattach")),
        ("reattach", "auto", None, ("reattach", "reattach")),
        ("reattach", "link", None, ("reattach", "reattach")),
        ("none", "auto", "reattach", ()),
    ],
)
def test_the_ladder(action: str, refresh: str, remembered: str | None, steps: tuple[str, ...]) -> None:
    assert ladder(action, refresh, remembered) == steps  # type: ignore[arg-type]
