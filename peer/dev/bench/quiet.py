"""Waiting for a quiet machine before a timed contender (issue 14, a fair benchmark).

A contender that follows another could inherit its leftovers: the broker rolling, indexing
and collecting after hundreds of megabytes, the kernel writing them back to disk, beside the
next contender's threads on two cores. So before each timed peer round and bare producer run
the dirty pages are flushed and the machine's busy share is awaited below a bound, for a
bounded time; what was waited, and how busy it still was, goes in the result. (The peer's
dear rounds stayed after this: docs/PERFORMANCE.md, 2026-12-02 night; :func:`warm_memory`
tests one suspect of them, 2026-12-03.)
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path
from typing import Any

#: below this share of all cores busy (over one window), the machine counts as quiet
QUIET_BELOW = 0.10


def busy_share(window: float = 1.0) -> float:
    """The share of all cores busy over ``window`` seconds, from ``/proc/stat``."""
    first = jiffies()
    time.sleep(window)  # a measurement window, not a wait for a condition
    last = jiffies()
    total = last[0] - first[0]
    return 1.0 - (last[1] - first[1]) / total if total > 0 else 0.0


def jiffies() -> tuple[int, int]:
    """(all, idle + iowait) jiffies of every core since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4]


def busy_cores(first: tuple[int, int], last: tuple[int, int]) -> float:
    """How many cores were busy on average between two :func:`jiffies` readings: every
    process of the machine (the broker, the reference server, the contender), to tell a
    contender that waits from a machine that is full."""
    total = last[0] - first[0]
    if total <= 0:
        return 0.0
    cores = os.cpu_count() or 1
    return cores * (1.0 - (last[1] - first[1]) / total)


def warm_memory(mb: int) -> float:
    """Write every page of ``mb`` MB of fresh anonymous memory once, then give it back;
    returns the seconds it took (none for ``mb`` 0).

    On a virtual machine whose balloon device reports free pages to the host (virtio's free
    page reporting), memory a process gave back is soon discarded by the host, and the next
    process to touch it pays a host-side fault per page on top of the guest's. A contender
    started as a fresh process (every one since the bare producer got its own,
    :mod:`peer.dev.bench.bare`) then runs on such pages. Touching memory just before a
    contender starts leaves the guest's free lists backed again, the same for every
    contender. A diagnostic, off by default: side by side it did not remove the
    peer's dear rounds (docs/PERFORMANCE.md, 2026-12-03).
    """
    if mb <= 0:
        return 0.0
    t0 = time.monotonic()
    chunk = b"\x01" * (1 << 20)
    with mmap.mmap(-1, mb << 20) as area:
        for offset in range(0, mb << 20, 1 << 20):
            area[offset : offset + (1 << 20)] = chunk
    return time.monotonic() - t0


def settle(
    max_wait: float = 30.0, below: float = QUIET_BELOW, *, warm_mb: int = 0
) -> dict[str, Any]:
    """Flush dirty pages, wait (at most ``max_wait`` s) for a window with fewer than
    ``below`` of the cores busy, then warm ``warm_mb`` MB of memory (:func:`warm_memory`).
    Returns how long it took, the last busy share and whether the machine got quiet."""
    t0 = time.monotonic()
    os.sync()
    busy = busy_share()
    while busy >= below and time.monotonic() - t0 < max_wait:
        busy = busy_share()
    # last, right before the contender: the host starts discarding freed pages at once
    warmed = warm_memory(warm_mb)
    out: dict[str, Any] = {
        "settle_s": round(time.monotonic() - t0, 1),
        "busy_share": round(busy, 3),
        "quiet": busy < below,
    }
    if warm_mb > 0:
        out.update(warmed_mb=warm_mb, warm_s=round(warmed, 1))
    return out


__all__ = ["QUIET_BELOW", "busy_cores", "busy_share", "jiffies", "settle", "warm_memory"]
