"""The benchmarks behind ``scripts/bench.py``, ``scripts/bench_peer.py`` and
``scripts/bench_source.py`` (docs/PERFORMANCE.md, docs/PEER-BENCHMARK.md, docs/SOURCE.md).

Not tests: they measure and report, a missed target is a line in the table. The processes
they drive are :mod:`peer.testing`'s, and where they check what a consumer saw, they use its
exactly-once verdict.
"""

from __future__ import annotations

import sys
import time


def log(text: str) -> None:
    """Progress on stderr, time-stamped (stdout is kept for the results table)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


__all__ = ["log"]
