"""mdpeer's benchmarks, side by side in one run on one broker (issue 6; not a test).

    uv run python scripts/bench.py                       # everything, ~25 min here
    uv run python scripts/bench.py --quick               # small N, a smoke in a few minutes
    uv run python scripts/bench.py --only throughput --sizes 1024

Parts (``--only``, comma separated):

* throughput: for each size, mdpeer exactly-once with 1 and 3 peers, a bare confluent-kafka
  idempotent producer sending the same records (values, key, partition, md.* headers), and
  Kafka's Java ``org.apache.kafka.tools.ProducerPerformance`` of the broker's release;
* latency: publish on the reference server to visible for a read_committed consumer, p50 /
  p99 / p99.9, at each rate for each commit interval;
* failover: SIGTERM, then SIGKILL, of one of two peers; time until every subject of the moved
  shards flows again;
* scale: shard-state rebuild time and peer RSS for 1k / 10k / 100k subjects.

Writes a JSON document (``--json``), PNG plots (``--plots``) and prints a table with every
target of the issue: measured, target, met / missed. Every process it starts (the broker, the
reference servers, peers, the Java tool) is stopped on every exit path.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from peer.dev.bench import log
from peer.dev.bench.failover import failover
from peer.dev.bench.latency import latency_sweep
from peer.dev.bench.plots import write_plots
from peer.dev.bench.scale import scale_point
from peer.dev.bench.stats import evaluate_targets, machine
from peer.dev.bench.throughput import throughput_for_size
from peer.dev.localkafka import start_on_free_ports

PARTS = ("throughput", "latency", "failover", "scale")


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers")
    return values


def parts_list(text: str) -> list[str]:
    parts = [x.strip() for x in text.split(",") if x.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"--only {text!r}: choose from {', '.join(PARTS)}")
    return parts


def parse_args(argv: list[str] | None = None, *, root: Path = Path()) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small N and short windows (a smoke)")
    p.add_argument("--only", type=parts_list, default=list(PARTS), help="parts to run")
    p.add_argument("--sizes", type=int_list, default=[100, 1024, 10240], help="value bytes")
    p.add_argument(
        "--messages-mb",
        type=float,
        default=None,
        help="throughput: MB of values per size (N = MB / size, 20k..200k); default 200, quick 20",
    )
    p.add_argument(
        "--max-messages", type=int, default=None, help="throughput N cap (default 200k; quick 50k)"
    )
    p.add_argument("--peers", type=int_list, default=[1, 3], help="throughput peer counts")
    p.add_argument("--subjects", type=int, default=30, help="throughput and latency subjects")
    p.add_argument(
        "--rates",
        type=int_list,
        default=None,
        help="latency rates, msg/s (default 100,1000,5000; quick 100,1000)",
    )
    p.add_argument(
        "--commit-intervals",
        type=int_list,
        default=None,
        help="latency commit_interval_ms (default 50,100,250; quick 50,100)",
    )
    p.add_argument(
        "--latency-seconds",
        type=float,
        default=None,
        help="latency window per rate (default 15; quick 5)",
    )
    p.add_argument("--failover-subjects", type=int, default=20)
    p.add_argument("--failover-rate", type=float, default=1000.0, help="msg/s, live")
    p.add_argument("--failover-bound", type=float, default=90.0, help="max wait, s")
    p.add_argument(
        "--failover-txn-timeout-ms",
        type=int,
        default=None,
        help="diagnostic; default: the peer's own",
    )
    p.add_argument("--scale", type=int_list, default=[1000, 10_000, 100_000], help="subjects")
    p.add_argument(
        "--scale-settle",
        type=float,
        default=None,
        help="seconds the scale peer runs before its RSS is read (default 20; quick 8)",
    )
    p.add_argument("--json", type=Path, default=root / "docs" / "bench" / "bench.json")
    p.add_argument("--plots", type=Path, default=root / "docs" / "bench")
    args = p.parse_args(argv)
    quick = args.quick

    def default(name: str, full: object, small: object) -> None:
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)

    default("messages_mb", 200.0, 20.0)
    default("max_messages", 200_000, 50_000)
    default("rates", [100, 1000, 5000], [100, 1000])
    default("commit_intervals", [50, 100, 250], [50, 100])
    default("latency_seconds", 15.0, 5.0)
    default("scale_settle", 20.0, 8.0)
    return args


def messages_for(size: int, mb: float, cap: int) -> int:
    """N for a size: ``mb`` of values, at least 20,000 and at most ``cap`` messages."""
    return max(20_000, min(cap, int(mb * 1e6 / size)))


def run(args: argparse.Namespace, doc: dict[str, Any], bootstrap: str, work: Path) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if "throughput" in args.only:
        sizes = []
        for size in args.sizes:
            n = messages_for(size, args.messages_mb, args.max_messages)
            log(f"throughput: {size} B x {n}")
            sizes.append(
                throughput_for_size(
                    bootstrap,
                    admin,
                    work,
                    n=n,
                    size=size,
                    subjects=args.subjects,
                    peer_counts=args.peers,
                )
            )
        doc["throughput"] = {"sizes": sizes}
    if "latency" in args.only:
        doc["latency"] = []
        for ms in args.commit_intervals:
            log(f"latency: commit_interval_ms {ms}, rates {args.rates}")
            doc["latency"] += latency_sweep(
                bootstrap,
                admin,
                work,
                commit_ms=ms,
                rates=[float(r) for r in args.rates],
                subjects=args.subjects,
                seconds=args.latency_seconds,
            )
    if "failover" in args.only:
        log("failover: SIGTERM then SIGKILL")
        doc["failover"] = failover(
            bootstrap,
            admin,
            work,
            subjects=args.failover_subjects,
            rate=args.failover_rate,
            bound=args.failover_bound,
            txn_timeout_ms=args.failover_txn_timeout_ms,
        )
    if "scale" in args.only:
        doc["scale"] = []
        for n in args.scale:
            log(f"scale: {n} subjects")
            doc["scale"].append(
                scale_point(bootstrap, admin, work, subjects=n, settle_s=args.scale_settle)
            )


def table(doc: dict[str, Any]) -> str:
    rows = [""]

    def row(name: str, value: object, target: str = "") -> None:
        rows.append(f"{name:52} {value!s:>26}  {target}")

    for entry in doc.get("throughput", {}).get("sizes", []):
        size = entry["size"]
        for name in [k for k in entry if k.startswith("peer")] + ["bare", "java"]:
            res = entry.get(name, {})
            value = (
                f"{res['msgs_per_s']} msg/s {res['mb_per_s']} MB/s"
                if "msgs_per_s" in res
                else res.get("skipped") or res.get("error", "-")[:26]
            )
            row(f"throughput {size} B: {name}", value)
        for name, ratio in entry.get("ratios", {}).items():
            row(f"  {size} B ratio {name}", ratio)
    for r in doc.get("latency", []):
        row(
            f"latency commit {r['commit_interval_ms']} ms @ {r['rate_target']:g} msg/s",
            f"{r['p50_ms']} / {r['p99_ms']} / {r['p999_ms']} ms",
            "p50 / p99 / p99.9",
        )
    for kind in ("sigterm", "sigkill"):
        f = doc.get("failover", {}).get(kind)
        if f:
            row(
                f"failover {kind}: owned / flowing, s",
                f"{f['owned_after_s']} / {f['flowing_after_s']}",
            )
    once = doc.get("failover", {}).get("exactly_once")
    if once:
        row(
            "failover exactly once: dup / order / missing",
            f"{once['duplicates']} / {once['order_violations']} / {once['missing']}",
            "OK" if once["ok"] else "FAILED",
        )
    for pnt in doc.get("scale", []):
        row(
            f"scale {pnt['subjects']} subjects: rebuild s / RSS MB",
            f"{pnt['peer_rebuild_s']} / {pnt['rss_mb']}",
        )
    rows += ["", f"{'target':52} {'measured':>26}  target       status"]
    for t in doc["targets"]:
        rows.append(f"{t['name']:52} {t['measured']!s:>26}  {t['target']:12} {t['status']}")
    return "\n".join(rows)


def main(argv: list[str] | None = None, *, root: Path = Path()) -> int:
    """``root``: the checkout, whose docs/bench/ receives the results by default."""
    args = parse_args(argv, root=root)

    # SIGTERM/SIGHUP become SystemExit so every finally below runs and stops its processes.
    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, _exit)
    doc: dict[str, Any] = {
        "kind": "quick run" if args.quick else "full run",
        "machine": machine(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join(["uv run python scripts/bench.py", *(argv or sys.argv[1:])]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        cluster = start_on_free_ports(work / "kafka", 1)
        try:
            log(f"kafka at {cluster.bootstrap}")
            run(args, doc, cluster.bootstrap, work)
        finally:
            cluster.stop()
    doc["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    doc["wall_s"] = round(time.monotonic() - t_start, 1)
    doc["targets"] = [t.as_dict() for t in evaluate_targets(doc)]
    print(table(doc))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    plots = write_plots(doc, args.plots)
    print(f"\nwritten: {args.json}, {', '.join(str(p) for p in plots)}")
    return 0
