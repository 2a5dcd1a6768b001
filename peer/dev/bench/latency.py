"""End-to-end latency: publish on the reference server (the message's closure, ms) to visible
for a read_committed consumer, at several rates, for each commit interval."""

from __future__ import annotations

import statistics
import time
from typing import Any

from peer.dev.bench import log
from peer.dev.bench.deploy import bench_server, deployment, subscribed
from peer.dev.bench.session import Broker
from peer.dev.bench.stats import percentiles
from peer.dev.bench.tail import Tail
from peer.testing import cpu_seconds, wait_until

SHARDS = 4
WARMUP_S = 2.0


def latency_sweep(
    broker: Broker,
    *,
    commit_ms: int,
    rates: list[float],
    subjects: int,
    seconds: float,
    size: int = 1024,
    doorbell: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One peer with ``commit_interval_ms = commit_ms``; the generator runs at each rate in
    turn; samples are the records arriving in a ``seconds`` window after a warm-up.
    ``doorbell``: a doorbell-mode peer's environment (``doorbell_env``), measured once it is
    subscribed; None: polling."""
    prefix = f"/lat{commit_ms}"
    names = [f"{prefix}/{i}" for i in range(1, subjects + 1)]
    out: list[dict[str, Any]] = []
    settings = {"commit_interval_ms": commit_ms}
    with (
        bench_server("--cache-size", "10000", "--cache-expire", "3600") as sim,
        deployment(
            broker, sim.hostport, names, shards=SHARDS, partitions=4, settings=settings
        ) as dep,
        Tail(broker.bootstrap, dep.topic, keep=False) as tail,
    ):
        peer = dep.start_peer(f"lat-{commit_ms}", env=doorbell)
        wait_until(lambda: len(peer.owned()) == SHARDS, 120, "the peer working every shard")
        if doorbell:
            wait_until(lambda: subscribed(sim) >= subjects, 120, "every subject subscribed")
        for rate in rates:
            sim.generate(prefix, subjects, rate, size, None)
            time.sleep(WARMUP_S)
            tail.latencies_ms = []
            tail.latency_from = time.time()
            pcpu0, scpu0 = cpu_seconds(peer.pid), cpu_seconds(sim.pid)
            t0, g0 = time.time(), sim.generator()["published"]
            time.sleep(seconds)
            peer.check_alive()
            tail.latency_from = None
            t1, g1 = time.time(), sim.generator()["published"]
            sim.stop_generator()
            lat = sorted(tail.latencies_ms)
            if not lat:
                raise RuntimeError(f"no latency samples at {rate} msg/s")
            res = {
                "mode": "doorbell" if doorbell else "polling",
                "safety_interval_ms": (doorbell or {}).get("MDPEER_POLL_SAFETY_INTERVAL_MS"),
                "commit_interval_ms": commit_ms,
                "rate_target": rate,
                "rate_achieved": round((g1 - g0) / (t1 - t0)),
                "samples": len(lat),
                **percentiles(lat),
                "max_ms": round(lat[-1], 1),
                "mean_ms": round(statistics.fmean(lat), 1),
                "peer_cpu_cores": round((cpu_seconds(peer.pid) - pcpu0) / (t1 - t0), 2),
                "server_cpu_cores": round((cpu_seconds(sim.pid) - scpu0) / (t1 - t0), 2),
            }
            log(
                f"  commit {commit_ms} ms, {rate:g} msg/s: p50 {res['p50_ms']} / p99 "
                f"{res['p99_ms']} / p99.9 {res['p999_ms']} ms ({len(lat)} samples)"
            )
            out.append(res)
            time.sleep(0.5)  # the tail of this rate's records drains before the next
    return out
