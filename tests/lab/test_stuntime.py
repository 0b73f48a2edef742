"""The stun-time probe: 10 ms echoes, and the gap in whole intervals."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from lab.stuntime import EchoStream, gap_ms, silence_ms, stop_all


def test_the_gap_is_last_old_reply_to_first_new_reply_in_whole_10_ms_intervals() -> None:
    old = [100.00, 100.01, 100.02]  # the source pod's address answers, then goes quiet
    new = [101.221, 101.231]  # 119 echoes lost, then the target pod's address answers
    assert gap_ms(old, new) == 1200  # (119 lost + 1) x 10 ms, rounded to the interval


def test_old_replies_after_the_first_new_one_do_not_shorten_the_gap() -> None:
    assert gap_ms([10.0, 10.5, 12.0], [10.8]) == 300


def test_no_reply_at_the_new_address_means_no_recovery_and_none_before_means_nothing_to_measure() -> None:
    assert gap_ms([1.0, 1.01], []) is None
    assert gap_ms([], [2.0]) is None
    assert gap_ms([5.0], [5.001]) == 10  # never less than one interval


def test_an_address_that_stays_is_measured_by_its_longest_silence_from_the_migration_on() -> None:
    replies = [10.00, 10.01, 10.02, 10.50, 10.51, 12.00, 12.01, 12.02]
    # The silence before the target pod existed (10.02 -> 10.50) does not count; 10.51 -> 12.00 does.
    assert silence_ms(replies, since=10.505, until=12.03) == 1490
    assert silence_ms(replies, since=10.505, until=14.0) is None  # silent for its last 2 s: not back
    assert silence_ms([11.0, 11.01], since=10.0, until=11.02) is None  # nothing before: nothing to measure


@pytest.mark.lab
def test_the_stream_reads_timestamped_replies_from_a_real_ping_in_a_namespace_of_its_own() -> None:
    netns = f"bml-stuntest-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        stream = EchoStream(netns, "127.0.0.1")
        started = time.time()
        stream.start()
        time.sleep(1.0)
        replies = stream.stop()
        assert len(replies) >= 10, "10 ms echoes on loopback should answer many times a second"
        assert replies == sorted(replies)
        assert started - 1 < replies[0] < replies[-1] < time.time() + 1  # ping -D: epoch seconds
        # Stopped means stopped: nothing more arrives.
        time.sleep(0.1)
        assert stream.replies == replies
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


@pytest.mark.lab
def test_a_stream_a_failed_scenario_left_running_is_stopped_by_stop_all_pipe_closed() -> None:
    """What Lab.close does for a scenario that raised between start and stop: no ping outlives the
    lab and no pipe is left to the garbage collector (an unraisable warning in a later test)."""
    netns = f"bml-stuntest-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        stream = EchoStream(netns, "127.0.0.1")
        stream.start()
        time.sleep(0.3)
        stop_all()
        assert stream._proc is not None and stream._proc.poll() is not None, "the ping still runs"
        assert stream._proc.stdout is not None and stream._proc.stdout.closed
        assert stream.replies, "the stream never read a reply: it did not run"
        stop_all()  # nothing left: a second call is a no-op
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
