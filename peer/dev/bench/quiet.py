"""Waiting for a quiet machine before a timed contender (issue 14, a fair benchmark).

A contender that follows another could inherit its leftovers: the broker rolling, indexing
and collecting after hundreds of megabytes, the kernel writing them back to disk, beside the
next contender's threads on two cores. So before each timed peer round and bare producer run
the dirty pages are flushed and the machine's busy share is awaited below a bound, for a
bounded time; what was waited, and how busy it still was, goes in the result. (The peer's
dear rounds stayed after this: docs/PERFORMANCE.md, 2026-12-02 night.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

#: below this share of all cores busy (over one window), the machine counts as quiet
QUIET_BELOW = 0.10


def busy_share(window: float = 1.0) -> float:
    """The share of all cores busy over ``window`` seconds, from ``/proc/stat``."""
    first = _jiffies()
    time.sleep(window)  # a measurement window, not a wait for a condition
    last = _jiffies()
    total = last[0] - first[0]
    return 1.0 - (last[1] - first[1]) / total if total > 0 else 0.0


def _jiffies() -> tuple[int, int]:
    """(all, idle + iowait) jiffies of every core since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4]


def settle(max_wait: float = 30.0, below: float = QUIET_BELOW) -> dict[str, Any]:
    """Flush dirty pages, then wait (at most ``max_wait`` s) for a window with fewer than
    ``below`` of the cores busy. Returns how long it took, the last busy share and whether
    the machine got quiet."""
    t0 = time.monotonic()
    os.sync()
    busy = busy_share()
    while busy >= below and time.monotonic() - t0 < max_wait:
        busy = busy_share()
    return {
        "settle_s": round(time.monotonic() - t0, 1),
        "busy_share": round(busy, 3),
        "quiet": busy < below,
    }


__all__ = ["QUIET_BELOW", "busy_share", "settle"]
