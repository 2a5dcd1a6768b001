"""mdpeer's benchmarks, side by side in one run on one broker (issue 6; not a test).

    uv run python scripts/bench.py                       # everything, ~25 min here
    uv run python scripts/bench.py --quick               # small N, a smoke in a few minutes
    uv run python scripts/bench.py --only throughput --sizes 1024

Parts (``--only``, comma separated):

* throughput: for each size, mdpeer exactly-once with 1 and 3 peers, a bare confluent-kafka
  idempotent producer sending the same records (values, key, partition, md.* headers),
  Kafka's Java ``org.apache.kafka.tools.ProducerPerformance`` of the broker's release, and a
  Kafka Connect worker of that release running ``FileStreamSourceConnector`` over the same
  values, exactly once and not; msg/s and CPU per message (/proc) of each. An untimed peer
  pass warms the broker up first; then ``--rounds`` rounds of the peers and the bare producer
  side by side (medians; the ratios to the bare producer are the median of each round's own);
* latency: publish on the reference server to visible for a read_committed consumer, p50 /
  p99 / p99.9, at each rate for each commit interval;
* failover: SIGTERM, then SIGKILL, of one of two peers; time until every subject of the moved
  shards flows again;
* scale: shard-state rebuild time and peer RSS for 1k / 10k / 100k subjects.

Writes a JSON document (``--json``), PNG plots (``--plots``) and prints a table with every
target of the issue: measured, target, met / missed. Every process it starts (the broker, the
reference servers, peers, the Java tool, the Connect workers) is stopped on every exit path.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peer.dev.bench import log
from peer.dev.bench.failover import add_failover_arguments, failover_of
from peer.dev.bench.latency import latency_sweep
from peer.dev.bench.plots import write_plots
from peer.dev.bench.scale import scale_point
from peer.dev.bench.session import Broker, local_broker, recorded, write_json
from peer.dev.bench.stats import evaluate_targets
from peer.dev.bench.throughput import Backlog, throughput_for_size
from peer.testing import doorbell_env

PARTS = ("throughput", "latency", "failover", "scale")
#: the Kafka Connect contenders of a throughput size, exactly once first
CONNECT = ("connect_eos", "connect")


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


def peer_setting(text: str) -> tuple[str, int | str]:
    """``--peer-setting NAME=VALUE``: one peer setting (an integer when it reads as one)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"--peer-setting {text!r}: give NAME=VALUE")
    value = value.strip()
    return name.strip(), int(value) if value.lstrip("-").isdigit() else value


#: options whose default depends on ``--quick``: flag -> (type, full run, quick run, help)
SCALED: dict[str, tuple[Callable[[str], Any], Any, Any, str]] = {
    "--messages-mb": (float, 200.0, 20.0, "throughput: MB of values per size (N = MB / size)"),
    "--max-messages": (int, 200_000, 50_000, "throughput N cap"),
    "--rates": (int_list, [100, 1000, 5000], [100, 1000], "latency rates, msg/s"),
    "--commit-intervals": (int_list, [50, 100, 250], [50, 100], "latency commit_interval_ms"),
    "--latency-seconds": (float, 15.0, 5.0, "latency window per rate"),
    "--scale-settle": (float, 20.0, 8.0, "seconds the scale peer runs before its RSS is read"),
    "--rounds": (int, 3, 1, "throughput: rounds of the peers then the bare producer (medians)"),
}


def shown(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else f"{value:g}"


def parse_args(argv: list[str] | None = None, *, root: Path = Path()) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small N and short windows (a smoke)")
    p.add_argument("--only", type=parts_list, default=list(PARTS), help="parts to run")
    p.add_argument("--sizes", type=int_list, default=[100, 1024, 10240], help="value bytes")
    p.add_argument("--peers", type=int_list, default=[1, 3], help="throughput peer counts")
    p.add_argument("--subjects", type=int, default=30, help="throughput and latency subjects")
    p.add_argument(
        "--no-connect",
        dest="connect",
        action="store_false",
        help="throughput without the Kafka Connect worker (it is run by default)",
    )
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="throughput without the untimed peer pass that warms the broker up first",
    )
    add_failover_arguments(p)
    p.add_argument(
        "--doorbell",
        action="store_true",
        help="latency and scale peers in doorbell mode with the stand-in client (tests/standin)",
    )
    p.add_argument(
        "--safety-interval-ms",
        type=int,
        default=None,
        help="with --doorbell: the peers' poll_safety_interval_ms (default: the peer's, 30 s)",
    )
    p.add_argument(
        "--peer-setting",
        dest="peer_settings",
        type=peer_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="throughput: a setting of the peers other than its default (a diagnostic; repeat)",
    )
    p.add_argument(
        "--warm-memory-mb",
        type=int,
        default=0,
        metavar="MB",
        help="throughput: write MB of fresh memory right before each timed contender, for "
        "VMs whose host discards freed memory (a diagnostic; docs/PERFORMANCE.md)",
    )
    p.add_argument("--scale", type=int_list, default=[1000, 10_000, 100_000], help="subjects")
    for flag, (kind, full, small, text) in SCALED.items():
        more = f"default {shown(full)}; quick {shown(small)}"
        p.add_argument(flag, type=kind, default=None, help=f"{text} ({more})")
    p.add_argument("--json", type=Path, default=root / "docs" / "bench" / "bench.json")
    p.add_argument("--plots", type=Path, default=root / "docs" / "bench")
    args = p.parse_args(argv)
    for flag, (_, full, small, _) in SCALED.items():
        name = flag[2:].replace("-", "_")
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    return args


def messages_for(size: int, mb: float, cap: int) -> int:
    """N for a size: ``mb`` of values, at least 20,000 and at most ``cap`` messages."""
    return max(20_000, min(cap, int(mb * 1e6 / size)))


def bell_env(args: argparse.Namespace) -> dict[str, str] | None:
    """The peers' environment in doorbell mode (None: polling)."""
    if not args.doorbell:
        return None
    safety = args.safety_interval_ms
    return doorbell_env(**({} if safety is None else {"poll_safety_interval_ms": safety}))


def run(args: argparse.Namespace, doc: dict[str, Any], broker: Broker) -> None:
    if "throughput" in args.only:
        sizes = []
        for size in args.sizes:
            n = messages_for(size, args.messages_mb, args.max_messages)
            log(f"throughput: {size} B x {n}")
            load = Backlog(n, size, args.subjects)
            sizes.append(
                throughput_for_size(
                    broker,
                    load,
                    args.peers,
                    connect=args.connect,
                    rounds=args.rounds,
                    warmup=args.warmup,
                    settings=dict(args.peer_settings),
                    warm_mb=args.warm_memory_mb,
                )
            )
        doc["throughput"] = {"sizes": sizes}
    if "latency" in args.only:
        doc["latency"] = []
        for ms in args.commit_intervals:
            log(f"latency: commit_interval_ms {ms}, rates {args.rates}")
            doc["latency"] += latency_sweep(
                broker,
                commit_ms=ms,
                rates=[float(r) for r in args.rates],
                subjects=args.subjects,
                seconds=args.latency_seconds,
                doorbell=bell_env(args),
            )
    if "failover" in args.only:
        log("failover: SIGTERM then SIGKILL")
        doc["failover"] = failover_of(broker, args)
    if "scale" in args.only:
        doc["scale"] = []
        for n in args.scale:
            log(f"scale: {n} subjects")
            doc["scale"].append(
                scale_point(broker, subjects=n, settle_s=args.scale_settle, doorbell=bell_env(args))
            )


def table(doc: dict[str, Any]) -> str:
    rows = [""]

    def row(name: str, value: object, target: str = "") -> None:
        rows.append(f"{name:52} {value!s:>26}  {target}")

    for entry in doc.get("throughput", {}).get("sizes", []):
        size = entry["size"]
        names = [k for k in entry if k.startswith("peer")] + ["bare", "java", *CONNECT]
        for name in [n for n in names if n in entry]:
            res = entry[name]
            value = (
                f"{res['msgs_per_s']} msg/s {res['mb_per_s']} MB/s"
                if "msgs_per_s" in res
                else res.get("skipped") or res.get("error", "-")[:26]
            )
            cpu = res.get("cpu_us_per_msg")
            row(f"throughput {size} B: {name}", value, f"{cpu} µs CPU/msg" if cpu else "")
        for name, ratio in entry.get("ratios", {}).items():
            row(f"  {size} B ratio {name}", ratio)
    for r in doc.get("latency", []):
        row(
            f"latency commit {r['commit_interval_ms']} ms @ {r['rate_target']:g} msg/s"
            + (" (doorbell)" if r.get("mode") == "doorbell" else ""),
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
        row(
            f"scale {pnt['subjects']} settled ({pnt.get('mode', 'polling')}): cores / req/s",
            f"{pnt['peer_cpu_cores_while_owning']} / {pnt.get('requests_per_s')}",
        )
    rows += ["", f"{'target':52} {'measured':>26}  target       status"]
    for t in doc["targets"]:
        rows.append(f"{t['name']:52} {t['measured']!s:>26}  {t['target']:12} {t['status']}")
    return "\n".join(rows)


def main(argv: list[str] | None = None, *, root: Path = Path()) -> int:
    """``root``: the checkout, whose docs/bench/ receives the results by default."""
    args = parse_args(argv, root=root)
    doc: dict[str, Any] = {"kind": "quick run" if args.quick else "full run"}
    with recorded(doc, "scripts/bench.py", argv), local_broker("bench-") as broker:
        doc["parameters"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        run(args, doc, broker)
    doc["targets"] = [t.as_dict() for t in evaluate_targets(doc)]
    print(table(doc))
    write_json(args.json, doc)
    plots = write_plots(doc, args.plots)
    print(f"\nwritten: {args.json}, {', '.join(str(p) for p in plots)}")
    return 0
