#!/usr/bin/env python3
"""A measured prototype, not part of mdpeer: what a compiled decode of a consume answer saves.

uv run python scripts/proto/bench_wire_fastpath.py            # 6,510 messages of 1 KB

Builds ``wire_fastpath.c`` (next to this file) with ``gcc`` against this interpreter's
headers into a temporary directory, makes one consume answer with the reference server's own
store (``peer.dev.sim.model.Store``, the throughput benchmark's shape: one subject's whole
history), checks that the C path builds exactly the messages ``decode_consume`` builds, and
prints CPU per message of each (this thread's CPU clock, median and best of 30). The C path
skips msgspec's intermediate structs and ``str`` contents, and returns None (use the full
decoder) for anything it does not handle, such as an escape inside a string; it validates
nothing, so it could only ever sit in front of ``decode_consume``. docs/PERFORMANCE.md has
the figures and why it is not wired in.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from peer.dev.sim.model import Store
from peer.model import Message
from peer.source.wire import decode_consume

HERE = Path(__file__).resolve().parent


def build(tmp: Path) -> ModuleType:
    """Compile and import the prototype extension."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    target = tmp / f"wire_fastpath{suffix}"
    include = sysconfig.get_paths()["include"]
    cmd = ["gcc", "-O2", "-shared", "-fPIC", "-Wall", f"-I{include}"]
    subprocess.run([*cmd, str(HERE / "wire_fastpath.c"), "-o", str(target)], check=True)
    spec = importlib.util.spec_from_file_location("wire_fastpath", target)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def answer(messages: int, size: int) -> bytes:
    """One subject's whole history as the reference server answers it."""
    store = Store(cache_size=messages, cache_expire_s=3600)
    filler = "x" * size
    items = (("/tput/1", f"{i}:{filler}"[:size]) for i in range(messages))
    store.publish_many(items, closure=None)
    return store.history("/tput/1", messages)


def per_message(fn: Callable[[], object], n: int, reps: int = 30) -> tuple[float, float]:
    """(median, best) CPU µs per message of ``fn()``, freeing its result included."""
    times = []
    for _ in range(reps):
        start = time.thread_time()
        fn()  # the result is freed before the clock is read again
        times.append(time.thread_time() - start)
    times.sort()
    return times[len(times) // 2] / n * 1e6, times[0] / n * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--messages", type=int, default=6510)
    p.add_argument("--size", type=int, default=1024)
    args = p.parse_args()
    body = answer(args.messages, args.size)
    subject = "/tput/1"
    with tempfile.TemporaryDirectory(prefix="mdpeer-proto-") as tmp:
        fast = build(Path(tmp))
        make = functools.partial(Message, subject)
        expected = decode_consume(subject, body)
        if fast.decode(body, make) != expected:
            print("the C path built other messages than decode_consume", file=sys.stderr)
            return 1
        n = len(expected)
        del expected
        print(f"one answer: {n} messages, {len(body):,} bytes")
        for label, fn in (
            ("decode_consume (msgspec, Message)", lambda: decode_consume(subject, body)),
            ("C fast path (Message)", lambda: fast.decode(body, make)),
        ):
            median, best = per_message(fn, n)
            print(f"{label:<36} {median:6.3f} µs/msg median, {best:6.3f} best")
    return 0


if __name__ == "__main__":
    sys.exit(main())
