#!/usr/bin/env python3
"""mdpeer's benchmarks, side by side (docs/PERFORMANCE.md); the code is ``peer.dev.bench``.

uv run python scripts/bench.py                       # everything, ~25 min here
uv run python scripts/bench.py --quick               # small N, a smoke in a few minutes
uv run python scripts/bench.py --help
"""

import sys
from pathlib import Path

from peer.dev.bench.main import main

if __name__ == "__main__":
    # results go to this checkout's docs/bench/ unless --json / --plots say otherwise
    sys.exit(main(root=Path(__file__).resolve().parent.parent))
