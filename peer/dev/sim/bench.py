"""Measure the reference server itself: ``python -m peer.dev.sim.bench [--subjects 100] ...``.

Prints (1) how fast the in-process generator fills the store, (2) the latency of one consume
returning a whole 1000-message cache, over HTTP with a keep-alive connection, and (3) how
many such consumes per second one client connection gets. Not a test: numbers for the docs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp

from peer.dev.sim.generator import GeneratorSpec
from peer.dev.sim.server import SimConfig, SimServer


def _wait_generated(server: SimServer, total: int, deadline_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        gen = server.generator_status()
        if gen is not None and not gen["running"]:
            return float(gen["elapsed_s"])
        time.sleep(0.05)
    raise TimeoutError(f"the generator did not publish {total} messages in {deadline_s}s")


async def _consume_latency(url: str, subject: str, rounds: int) -> tuple[list[float], int]:
    timings: list[float] = []
    size = 0
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(rounds + 5):
            t0 = time.perf_counter()
            async with session.get(
                url + "/rest/consume", params={"subject": subject, "epoch": "1", "seq": "0"}
            ) as resp:
                body = await resp.read()
            elapsed = time.perf_counter() - t0
            if i >= 5:  # warm-up excluded
                timings.append(elapsed)
            size = len(body)
            count = len(json.loads(body)["messages"])
            if count != 1000:
                raise AssertionError(f"expected 1000 messages, got {count}")
    return timings, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--per-subject", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    total = args.subjects * args.per_subject
    with SimServer(SimConfig(port=0, cache_size=args.per_subject)) as server:
        spec = GeneratorSpec(
            prefix="/bench/s", count=args.subjects, rate=0, size=args.size, total=total
        )
        server.start_generator(spec)
        elapsed = _wait_generated(server, total, 120)
        print(
            f"generator: {total} messages of {args.size} B on {args.subjects} subjects "
            f"in {elapsed:.3f} s = {total / elapsed:,.0f} msg/s"
        )
        timings, size = asyncio.run(_consume_latency(server.url, "/bench/s/1", args.rounds))
        timings.sort()
        median = statistics.median(timings)
        p95 = timings[int(len(timings) * 0.95) - 1]
        print(
            f"consume of 1000 messages ({size:,} B response), {args.rounds} rounds, one "
            f"keep-alive connection: median {median * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms, "
            f"= {1000 / median:,.0f} msg/s from one connection"
        )


if __name__ == "__main__":
    main()
