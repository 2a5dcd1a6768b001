#!/usr/bin/env python3
"""Benchmark of one ``mdpeer run`` (docs/PEER-BENCHMARK.md); the code is ``peer.dev.bench``.

uv run python scripts/bench_peer.py            # full run (~3 min), JSON to docs/bench/
uv run python scripts/bench_peer.py --quick    # smaller sizes
"""

import sys
from pathlib import Path

from peer.dev.bench.single import main

if __name__ == "__main__":
    # results go to this checkout's docs/bench/ unless --json says otherwise
    sys.exit(main(root=Path(__file__).resolve().parent.parent))
