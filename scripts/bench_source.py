#!/usr/bin/env python3
"""Benchmark of the REST source (docs/SOURCE.md); the code is ``peer.dev.bench.source``.

uv run python scripts/bench_source.py                 # the full table, JSON to docs/bench/
uv run python scripts/bench_source.py --quick         # shorter runs
"""

import sys
from pathlib import Path

from peer.dev.bench.source import main

if __name__ == "__main__":
    # results go to this checkout's docs/bench/ unless --json says otherwise
    sys.exit(main(root=Path(__file__).resolve().parent.parent))
