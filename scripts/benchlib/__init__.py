"""Shared pieces of the benchmark scripts (``scripts/bench.py``, ``scripts/bench_peer.py``).

Not part of the ``mdpeer`` package: the scripts put ``scripts/`` on ``sys.path`` by being run
from there, and ``tests/test_bench.py`` adds it explicitly.
"""
