"""Benchmark of one ``mdpeer run`` against the issue-4 targets (not a test).

    uv run python scripts/bench_peer.py            # full run (~3 min), JSON to docs/bench/
    uv run python scripts/bench_peer.py --quick    # smaller sizes

The quick single-peer view; ``scripts/bench.py`` is the complete, side-by-side benchmark
(sizes, 1 and 3 peers, the Java perf tool, latency sweeps, scale). Both use ``peer.dev.bench``
and one local 1-node Kafka per run:

1. **throughput**, ``--size`` values: one peer bridges N pre-filled messages (rate = N / (last
   - first record visible to a read_committed consumer)); a bare idempotent producer then sends
   the same N records (values, partitions, md.* headers); the ratio is the target (>= 0.6).
2. **failover**, default peer settings, two peers, generator live: SIGTERM of one, then (after a
   fresh peer has joined) SIGKILL of one; time until every moved subject is flowing again.
3. **latency** at ``--latency-rate`` msg/s, for each ``--commit-intervals``: p50/p99/p99.9 of
   publish (closure) to visible.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from peer.dev.bench import log
from peer.dev.bench.bare import BareJob, bare_in_fresh_process
from peer.dev.bench.failover import add_failover_arguments, failover_of
from peer.dev.bench.latency import latency_sweep
from peer.dev.bench.producers import bare_producer_config, bare_topic
from peer.dev.bench.session import Broker, local_broker, recorded, write_json
from peer.dev.bench.throughput import Backlog, peer_throughput


def throughput(broker: Broker, load: Backlog, *, max_per_response: int) -> dict[str, Any]:
    peer, sample, config = peer_throughput(broker, load, peers=1, max_per_response=max_per_response)
    log(f"peer: {peer}")
    conf, topic = bare_producer_config(config), bare_topic(broker.admin)
    job = BareJob(broker.bootstrap, topic, conf, peer["messages"], load.size, load.names, sample)
    bare = bare_in_fresh_process(job)
    log(f"bare producer: {bare}")
    peer["server_max_per_response"] = max_per_response
    return {
        "bare_producer": bare,
        "peer": peer,
        "ratio": round(peer["msgs_per_s"] / bare["msgs_per_s"], 3),
    }


def main(argv: list[str] | None = None, *, root: Path = Path()) -> int:
    """``root``: the checkout, whose docs/bench/ receives the results by default."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000, help="throughput N")
    parser.add_argument("--size", type=int, default=1024, help="value bytes")
    parser.add_argument(
        "--max-per-response",
        type=int,
        default=0,
        help="reference server's page size for the throughput backlog (0 = unlimited)",
    )
    parser.add_argument("--subjects", type=int, default=10, help="subjects (throughput, latency)")
    add_failover_arguments(parser)
    parser.add_argument("--latency-rate", type=float, default=1000.0)
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--commit-intervals", default="100,50")
    parser.add_argument("--skip", default="", help="comma list of: throughput,failover,latency")
    parser.add_argument("--quick", action="store_true", help="N=30000, 6 s latency windows")
    parser.add_argument("--json", type=Path, default=root / "docs" / "bench" / "peer.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.latency_seconds = 30_000, 6.0
    skip = set(filter(None, args.skip.split(",")))
    doc: dict[str, Any] = {}
    with recorded(doc, "scripts/bench_peer.py", argv), local_broker("bench-peer-") as broker:
        if "throughput" not in skip:
            load = Backlog(args.messages, args.size, args.subjects)
            doc["throughput"] = throughput(broker, load, max_per_response=args.max_per_response)
        if "failover" not in skip:
            doc["failover"] = failover_of(broker, args)
        if "latency" not in skip:
            doc["latency"] = []
            for ms in (int(x) for x in args.commit_intervals.split(",")):
                doc["latency"] += latency_sweep(
                    broker,
                    commit_ms=ms,
                    rates=[args.latency_rate],
                    subjects=args.subjects,
                    seconds=args.latency_seconds,
                )
    doc["targets"] = targets(doc)
    print(table(doc))
    write_json(args.json, doc)
    print(f"\nwritten: {args.json}")
    return 0


def targets(doc: dict[str, Any]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    if "throughput" in doc:
        out["throughput_ratio>=0.6"] = doc["throughput"]["ratio"] >= 0.6
    if "failover" in doc:
        kill = doc["failover"]["sigkill"].get("flowing_after_s")
        term = doc["failover"]["sigterm"].get("flowing_after_s")
        out["sigkill<=15s"] = kill is not None and kill <= 15
        out["sigterm<=3s"] = term is not None and term <= 3
    for res in doc.get("latency", []):
        out[f"p99<=300ms@commit{res['commit_interval_ms']}"] = res["p99_ms"] <= 300
    return out


def table(doc: dict[str, Any]) -> str:
    rows = ["", f"{'measure':44} {'result':>24}  target"]

    def row(name: str, value: object, target: str = "") -> None:
        rows.append(f"{name:44} {value!s:>24}  {target}")

    if "throughput" in doc:
        t = doc["throughput"]
        row("bare idempotent producer, msgs/s", t["bare_producer"]["msgs_per_s"])
        row("one peer, exactly-once, msgs/s", t["peer"]["msgs_per_s"])
        row("  peer / bare", t["ratio"], ">= 0.6")
        row(
            "  peer cpu / server cpu (cores)",
            f"{t['peer']['cpu_cores']} / {t['peer']['server_cpu_cores']}",
        )
        row(
            "  CPU per message, peer / bare (µs)",
            f"{t['peer']['cpu_us_per_msg']} / {t['bare_producer']['cpu_us_per_msg']}",
        )
        row("  duplicates seen", t["peer"]["duplicates"], "0")
        once = t["peer"].get("exactly_once")
        if once:
            row("  exactly once (verdict)", "OK" if once["ok"] else "FAILED", "OK")
    if "failover" in doc:
        for kind, target in (("sigterm", "<= 3 s"), ("sigkill", "<= 15 s")):
            f = doc["failover"][kind]
            row(f"{kind}: survivor owns the shards, s", f["owned_after_s"])
            row(f"{kind}: every moved subject flowing, s", f.get("flowing_after_s"), target)
        once = doc["failover"].get("exactly_once")
        if once:
            counts = f"{once['duplicates']} / {once['order_violations']} / {once['missing']}"
            row("exactly once: dup / order / missing", counts, "OK" if once["ok"] else "FAILED")
    for res in doc.get("latency", []):
        ms = res["commit_interval_ms"]
        row(
            f"latency commit {ms} ms: p50 / p99 / p99.9 ms",
            f"{res['p50_ms']} / {res['p99_ms']} / {res['p999_ms']}",
            "p99 <= 300",
        )
    rows.append("")
    rows += [f"target {k}: {'met' if v else 'MISSED'}" for k, v in doc["targets"].items()]
    return "\n".join(rows)
