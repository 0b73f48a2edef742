"""How many hypothesis examples a property test runs.

The full suite (./scripts/test.sh, CI) runs each test's own count. The fast lane (scripts/check)
sets BM_FAST_LANE=1 and runs a quarter of it, at least 10: the same properties, fewer draws, so
the lane stays under two minutes on two cores.
"""

from __future__ import annotations

import os

FAST_LANE = os.environ.get("BM_FAST_LANE") == "1"


def examples(n: int) -> int:
    return max(10, n // 4) if FAST_LANE else n
