"""Fixtures for lab tests: a fresh two-node lab per test, and a sweep of this session's labs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.cleanup import cleanup
from lab.cluster import CREATED_LAB_IDS, Lab


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Two linked nodes, ``a`` and ``b``; everything is torn down when the test ends, pass or fail."""
    the_lab = Lab()
    try:
        the_lab.add_nodes("a", "b")
        yield the_lab
    finally:
        the_lab.close()


@pytest.fixture(scope="session", autouse=True)
def _sweep_session_labs() -> Iterator[None]:
    # Labs close themselves; this catches one whose close() was interrupted. It only touches
    # labs created by this process, never another session's.
    yield
    for lab_id in CREATED_LAB_IDS:
        cleanup(lab_id)
