#!/usr/bin/env python3
"""The exactly-once chaos harness (docs/RELIABILITY.md); the code is ``peer.dev.chaos``.

uv run python scripts/chaos.py --duration 3m --seed 20261123          # what CI runs
uv run python scripts/chaos.py --help
"""

import sys

from peer.dev.chaos.main import main

if __name__ == "__main__":
    sys.exit(main())
