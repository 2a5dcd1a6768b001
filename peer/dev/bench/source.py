"""Benchmark of the REST source against the reference server (not a test).

    uv run python scripts/bench_source.py                 # the full table, JSON to docs/bench/
    uv run python scripts/bench_source.py --quick         # shorter runs

For 1, 100 and 1000 subjects, two scenarios, each with its own ``mdpeer sim serve`` process
(so its CPU is its own, read from /proc/<pid>/stat):

* **backlog**: the server's built-in generator fills every subject's cache first (no HTTP);
  then a RestSource resumes every subject from ``1:0`` and the time to fetch everything is
  measured (a new owner catching up from its checkpoints). Exactly-once is checked
  (:func:`peer.testing.verdict.judge`, each subject its own stream).
* **live**: RestSource follows every subject while the generator publishes at ``--rate``
  messages/s in total ("busy subjects"); fetched messages/s over the window, and whether it
  kept up (no gaps, small lag at the end).

The client's CPU is this process's (poll loop + the source's loop thread); CPU shares are in
cores (1.0 = one core busy). Results go to stdout as a table and to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from peer.config.servers import parse_servers
from peer.model import Message, Position
from peer.source.base import SourceStats
from peer.source.rest import RestSource, RestSourceConfig
from peer.testing import SimProcess, cpu_seconds
from peer.testing.verdict import Delivered, judge, totals


@dataclass
class Result:
    scenario: str
    subjects: int
    messages: int
    seconds: float
    msgs_per_s: float
    server_cpu: float
    client_cpu: float
    requests: int
    msgs_per_request: float
    gaps: int
    duplicates: int
    note: str = ""


class Window:
    """A measuring window: wall time, this process's CPU and the server's, from creation to
    :meth:`stop`."""

    def __init__(self, server: SimProcess) -> None:
        self._server = server
        self._cpu0, self._scpu0 = time.process_time(), cpu_seconds(server.pid)
        self._t0 = time.perf_counter()
        self.elapsed = self.cpu = self.server_cpu = 0.0

    def stop(self) -> None:
        self.elapsed = time.perf_counter() - self._t0
        self.cpu = time.process_time() - self._cpu0
        self.server_cpu = cpu_seconds(self._server.pid) - self._scpu0

    def result(
        self,
        scenario: str,
        n: int,
        messages: int,
        *,
        stats: SourceStats,
        per_request: int,
        note: str,
    ) -> Result:
        """``messages`` fetched in the window by a source with ``stats``, ``per_request`` of
        them over its requests."""
        elapsed = self.elapsed
        return Result(
            scenario,
            n,
            messages,
            round(elapsed, 3),
            round(messages / elapsed),
            round(self.server_cpu / elapsed, 2),
            round(self.cpu / elapsed, 2),
            stats.requests,
            round(per_request / max(stats.requests, 1), 1),
            stats.gaps,
            stats.duplicates_dropped,
            note,
        )


def subjects(n: int) -> list[str]:
    return [f"/bench/{i}" for i in range(1, n + 1)]


def make_source(url: str, concurrency: int) -> RestSource:
    config = RestSourceConfig(
        servers=parse_servers(url.split("://", 1)[1]),
        max_concurrency=concurrency,
        max_buffered_messages=50_000,
    )
    return RestSource(config)


def verdict_note(got: list[Message], server: SimProcess, names: list[str]) -> str:
    """ "" when the source delivered each message of ``names`` exactly once and in order
    (the exactly-once verdict, one stream per subject), else what went wrong."""
    state = server.state()["subjects"]
    expected = {
        s: [(int(state[s]["epoch"]), seq) for seq in range(1, int(state[s]["head_seq"]) + 1)]
        for s in names
    }
    delivered = [Delivered(m.subject, m.epoch, m.seq, 0, i) for i, m in enumerate(got)]
    verdicts = judge(expected, delivered)
    if all(v.ok for v in verdicts):
        return ""
    counts = totals(verdicts)
    keys = ("expected", "delivered", "duplicates", "order_violations", "missing")
    return "NOT exactly once: " + ", ".join(f"{k} {counts[k]}" for k in keys)


def backlog(n: int, total: int, size: int, concurrency: int) -> Result:
    per_subject = total // n
    server = SimProcess("--cache-size", str(per_subject), "--cache-expire", "3600")
    source = make_source(server.url, concurrency)
    try:
        server.generate("/bench", n, 0, size, per_subject * n)
        server.wait_generated(300)
        expected = per_subject * n
        source.start()
        window = Window(server)
        for subject in subjects(n):
            source.subscribe(subject, after=Position(1, 0))
        fetched: list[Message] = []
        end = time.monotonic() + 300
        while len(fetched) < expected and time.monotonic() < end:
            fetched += [e for e in source.poll(20_000, 0.1) if isinstance(e, Message)]
        got = len(fetched)
        window.stop()
        # exactly once: nothing more may come
        fetched += [e for e in source.poll(20_000, 0.5) if isinstance(e, Message)]
        extra = len(fetched) - got
        stats = source.stats()
        note = "" if got == expected and not extra else f"expected {expected}, got {got}+{extra}"
        note = " ".join(filter(None, [note, verdict_note(fetched, server, subjects(n))]))
        return window.result("backlog", n, got, stats=stats, per_request=got, note=note)
    finally:
        source.close()
        server.close()


def live(n: int, rate: float, size: int, seconds: float, concurrency: int) -> Result:
    # a cache deep enough for ~1 s of traffic per subject: falling behind shows as lag, not gaps
    cache = max(1000, int(rate / n) + 1)
    server = SimProcess("--cache-size", str(cache), "--cache-expire", "3600")
    source = make_source(server.url, concurrency)
    try:
        source.start()
        for subject in subjects(n):
            source.subscribe(subject, after=Position(1, 0))
        server.generate("/bench", n, rate, size, None)
        warmup_end = time.monotonic() + min(2.0, seconds / 4)
        got = 0
        while time.monotonic() < warmup_end:
            got += sum(isinstance(e, Message) for e in source.poll(20_000, 0.1))
        window = Window(server)
        gen0 = server.generator()["published"]
        in_window = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            in_window += sum(isinstance(e, Message) for e in source.poll(20_000, 0.1))
        window.stop()
        generated = server.generator()["published"] - gen0
        server.stop_generator()
        published = server.generator()["published"]
        got += in_window
        drain_end = time.monotonic() + 60
        while got < published and time.monotonic() < drain_end:
            got += sum(isinstance(e, Message) for e in source.poll(20_000, 0.1))
        stats = source.stats()
        note = (
            f"generated {generated / window.elapsed:.0f}/s in the window; "
            f"all {published} delivered after stop: {got == published}"
        )
        return window.result(
            "live", n, in_window, stats=stats, per_request=stats.messages, note=note
        )
    finally:
        source.close()
        server.close()


def main(argv: list[str] | None = None, *, root: Path = Path()) -> int:
    """``root``: the checkout, whose docs/bench/ receives the results by default."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", default="1,100,1000", help="comma-separated counts")
    parser.add_argument("--total", type=int, default=300_000, help="backlog messages per run")
    parser.add_argument("--rate", type=float, default=120_000, help="live msgs/s, all subjects")
    parser.add_argument("--seconds", type=float, default=10.0, help="live measuring window")
    parser.add_argument("--size", type=int, default=100, help="content bytes per message")
    parser.add_argument("--concurrency", type=int, default=16, help="source max_concurrency")
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--json", type=Path, default=root / "docs" / "bench" / "source.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.total, args.seconds = 60_000, 3.0
    counts = [int(c) for c in args.subjects.split(",")]
    conditions = {
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "json": "stdlib",
        "size_bytes": args.size,
        "concurrency": args.concurrency,
        "live_rate": args.rate,
        "command": " ".join(["uv run python scripts/bench_source.py", *(argv or sys.argv[1:])]),
    }
    results: list[Result] = []
    for n in counts:
        results.append(backlog(n, args.total, args.size, args.concurrency))
        print(_row(results[-1]), flush=True)
        results.append(live(n, args.rate, args.size, args.seconds, args.concurrency))
        print(_row(results[-1]), flush=True)
    conditions["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print(_table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    doc = {"conditions": conditions, "results": [asdict(r) for r in results]}
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwritten: {args.json}")
    return 0


_HEAD = (
    f"{'scenario':8} {'subjects':>8} {'messages':>9} {'msgs/s':>9} {'server cpu':>10} "
    f"{'client cpu':>10} {'msgs/req':>8} {'gaps':>5} {'dups':>5}"
)


def _row(r: Result) -> str:
    line = (
        f"{r.scenario:8} {r.subjects:>8} {r.messages:>9} {r.msgs_per_s:>9} "
        f"{r.server_cpu:>10} {r.client_cpu:>10} {r.msgs_per_request:>8} {r.gaps:>5} "
        f"{r.duplicates:>5}"
    )
    return f"{line}  {r.note}" if r.note else line


def _table(results: list[Result]) -> str:
    return "\n".join([_HEAD, *(_row(r) for r in results)])
