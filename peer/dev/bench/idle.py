"""Idle subjects in doorbell mode, without Kafka: the source's CPU per safety fetch (issue #16).

    uv run --locked python scripts/bench_idle.py --subjects 100000 --window 60
    uv run --locked python scripts/bench_idle.py --subjects 10000 --window 60

A :class:`DoorbellSource` with the test tree's stand-in doorbell client (``tests/standin``)
follows N subjects of one message each on a ``mdpeer sim serve`` process (its own process,
so its CPU is not counted here), resuming each after that message as a peer resumes after
its checkpoint. A thread takes from the source as the peer's loop does when idle (every
100 ms). Once every subject is armed and the request rate has come down to about one fetch
per subject per safety interval, CPU is read over ``--window`` seconds (two safety intervals
or more): this process's, and the source's loop thread's alone (``/proc/self/task``). The
interpreter is set up as ``mdpeer run`` sets it (GIL switch interval, young-generation GC
threshold), so the figures compare with the scale benchmark's peer less its Kafka side.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from typing import Any

from peer.dev.bench.scale import find_epoch
from peer.model import Position
from peer.runner import GC_YOUNG_THRESHOLD, SWITCH_INTERVAL_S
from peer.source.base import DEFAULT_POLICY, SubjectStart
from peer.testing import STANDIN_DIR, SimProcess, memory_mb, wait_until
from peer.testing.doorbell import standin_doorbell_source

#: the window over which the request rate must have settled before measuring
SETTLE_WINDOW_S = 10.0


def thread_cpu(tid: int) -> tuple[float, float]:
    """CPU seconds (user, system) of one thread of this process."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class CollectorClock:
    """CPU time spent in the garbage collector, per generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._started: dict[int, float] = {}

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.thread_time()
        if phase == "start":
            self._started[threading.get_ident()] = now
            return
        began = self._started.pop(threading.get_ident(), None)
        if began is not None:
            self.seconds[info["generation"]] += now - began
            self.count[info["generation"]] += 1


def source_tid() -> int:
    for thread in threading.enumerate():
        if thread.name == "mdpeer-rest-source" and thread.native_id is not None:
            return thread.native_id
    raise RuntimeError("the source's loop thread is not running")


def measure(subjects: int, safety_ms: int, window: float, concurrency: int) -> dict[str, Any]:
    sys.path.insert(0, str(STANDIN_DIR))
    sim = SimProcess("--cache-size", "10", "--cache-expire", "3600")
    try:
        prefix = f"/idle{os.getpid()}"
        sim.generate(prefix, subjects, 0, 100, subjects)  # one message per subject
        sim.wait_generated(300)
        epoch = find_epoch(sim.admin("GET", f"/admin/state?subject={prefix}/1")) or 1
        source, wakeups = standin_doorbell_source(
            sim.url, safety_ms=safety_ms, max_concurrency=concurrency
        )
        stop = threading.Event()
        taken = [0]

        def take() -> None:  # the peer's loop, idle: a take every 100 ms
            while not stop.is_set():
                taken[0] += len(source.poll_batches(2000, 0.1))

        taker = threading.Thread(target=take, name="taker", daemon=True)
        source.start()
        taker.start()
        try:
            t0 = time.monotonic()
            after = Position(epoch, 1)
            source.subscribe_many(
                [
                    SubjectStart(f"{prefix}/{i}", after, DEFAULT_POLICY)
                    for i in range(1, subjects + 1)
                ]
            )
            wait_until(lambda: wakeups.stats()["armed"] >= subjects, 600, "every subject armed")
            armed_s = time.monotonic() - t0
            ceiling = 1.5 * subjects / (safety_ms / 1000) + 20
            last = {"at": time.monotonic(), "n": source.stats().requests}

            def calm() -> bool:
                now, n = time.monotonic(), source.stats().requests
                if now - last["at"] < SETTLE_WINDOW_S:
                    return False
                rate = (n - last["n"]) / (now - last["at"])
                last.update(at=now, n=n)
                return rate <= ceiling

            wait_until(calm, 900, f"requests settling below {ceiling:.0f}/s", step=1.0)
            settled_s = time.monotonic() - t0
            tid = source_tid()
            req0, errors0 = source.stats().requests, source.stats().request_errors
            collector = CollectorClock()
            gc.callbacks.append(collector)
            cpu0, tcpu0, w0 = time.process_time(), thread_cpu(tid), time.monotonic()
            time.sleep(window)  # the measurement window: nothing to wait for but time
            gc.callbacks.remove(collector)
            elapsed = time.monotonic() - w0
            user, system = (b - a for a, b in zip(tcpu0, thread_cpu(tid), strict=True))
            cpu, tcpu = time.process_time() - cpu0, user + system
            stats = source.stats()
            rate = (stats.requests - req0) / elapsed
        finally:
            stop.set()
            source.close()
            taker.join(5)
        per_fetch = 1e6 / rate if rate else 0.0
        return {
            "subjects": subjects,
            "safety_interval_ms": safety_ms,
            "window_s": round(elapsed, 1),
            "armed_after_s": round(armed_s, 1),
            "settled_after_s": round(settled_s, 1),
            "requests_per_s": round(rate, 1),
            "request_errors": stats.request_errors - errors0,
            "process_cpu_cores": round(cpu / elapsed, 4),
            "source_thread_cpu_cores": round(tcpu / elapsed, 4),
            "source_thread_system_share": round(system / tcpu, 2) if tcpu else None,
            "process_us_per_fetch": round(cpu / elapsed * per_fetch, 1),
            "source_thread_us_per_fetch": round(tcpu / elapsed * per_fetch, 1),
            "gc_cpu_cores": round(sum(collector.seconds) / elapsed, 4),
            "gc_collections_per_generation": collector.count,
            "gc_seconds_per_generation": [round(x, 2) for x in collector.seconds],
            "rss_mb": memory_mb(os.getpid()).get("rss_mb"),
            "events_taken": taken[0],
        }
    finally:
        sim.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--safety-interval-ms", type=int, default=30_000)
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    result = measure(args.subjects, args.safety_interval_ms, args.window, args.max_concurrency)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


__all__ = ["main", "measure"]
