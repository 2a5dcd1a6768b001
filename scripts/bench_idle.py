#!/usr/bin/env python3
"""Idle doorbell source without Kafka (issue #16); the code is ``peer.dev.bench.idle``.

uv run --locked python scripts/bench_idle.py --subjects 100000 --window 60
"""

import sys

from peer.dev.bench.idle import main

if __name__ == "__main__":
    sys.exit(main())
