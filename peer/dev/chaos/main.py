"""The exactly-once chaos harness's command line (issue #6; docs/RELIABILITY.md).

    uv run python scripts/chaos.py --duration 3m --seed 20261123          # what CI runs
    uv run python scripts/chaos.py --duration 30m --peers 3 --nodes 3     # the long run
    uv run python scripts/chaos.py --duration 90s --seed S --faults kill,epoch   # narrow down

It drives real processes: a local Kafka (1 or 3 nodes), the reference MigratoryData server
(``mdpeer sim serve``), ``mdpeer init`` + ``mdpeer routes apply``, N ``mdpeer run`` peers and
one publisher per subject whose every message names its subject and counter. Then it runs a
seeded schedule of faults (:mod:`peer.dev.chaos.schedule`), stops publishing, waits for the
peers to drain, and judges what a read_committed consumer of every target topic saw
(:mod:`peer.dev.chaos.verdict`). The seed is printed first; ``--seed S`` replays the schedule.

Exit code: 0 = exactly once held; 1 = a duplicate, an order violation, a corrupt record or an
unreported loss; 2 = the harness could not run (setup failed, interrupted).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

from peer.dev.chaos import schedule as sch
from peer.dev.chaos.deployment import (
    SESSION_TIMEOUT_MS,
    default_run_dir,
    subjects_of,
)
from peer.dev.chaos.run import Run, say
from peer.dev.chaos.verdict import ChaosVerdict, totals
from peer.dev.procsignals import StopSignal, signals_ignored, signals_raise


def options(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", default="3m", help="fault schedule length: 90s, 3m, 1h (3m)")
    p.add_argument("--seed", type=int, default=None, help="replay this schedule (default: random)")
    p.add_argument("--peers", type=int, default=3, help="peers at the start (3)")
    p.add_argument("--max-peers", type=int, default=None, help="scale-up limit (peers + 1)")
    p.add_argument("--nodes", type=int, choices=(1, 3), default=1, help="Kafka nodes (1)")
    p.add_argument("--subjects", type=int, default=12, help="subjects published (12)")
    p.add_argument("--rate", type=float, default=5.0, help="msgs/s per subject (5)")
    p.add_argument("--size", type=int, default=100, help="message bytes (100)")
    p.add_argument("--shards", type=int, default=12, help="control topic partitions (12)")
    p.add_argument(
        "--faults",
        default="all",
        help="all, none or a list: kill,term,zombie,scale,kafka,epoch,5xx,latency,server_kill "
        "(all)",
    )
    p.add_argument("--tail", type=float, default=5.0, help="calm publishing after the faults (5)")
    p.add_argument("--drain-timeout", type=float, default=120.0, help="bound on the drain (120)")
    p.add_argument("--run-dir", type=Path, default=None, help="logs and Kafka data go here")
    p.add_argument("--json", type=Path, default=None, dest="json_path", help="write the report")
    p.add_argument("--dry-run", action="store_true", help="print the schedule and exit")
    p.add_argument(
        "--doorbell",
        action="store_true",
        help="doorbell mode: peers use the stand-in client (tests/standin), the server drops "
        "half of the doorbells",
    )
    args = p.parse_args(argv)
    try:
        args.duration_s = sch.parse_duration(args.duration)
        args.fault_kinds = sch.parse_faults(args.faults)
    except sch.ScheduleError as exc:
        p.error(str(exc))
    args.max_peers = args.max_peers or args.peers + 1
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 2**31)
    if not 1 <= args.subjects <= 1000 or not 0 < args.rate <= 1000 or args.size < 30:
        p.error("need 1 <= --subjects <= 1000, 0 < --rate <= 1000, --size >= 30")
    return args


def print_table(verdicts: list[ChaosVerdict]) -> None:
    head = (
        "subject",
        "expected",
        "delivered",
        "dup",
        "missing",
        "reported",
        "UNREPORTED",
        "AVOIDABLE",
        "order",
        "parts",
        "corrupt",
        "unexp",
        "",
    )
    rows = [
        (
            c.subject,
            c.expected,
            c.delivered,
            c.duplicates,
            c.missing,
            c.missing_reported,
            c.missing_unreported,
            v.missing_avoidable,
            c.order_violations,
            c.partitions,
            c.corrupt,
            c.unexpected,
            "ok" if v.ok else "FAILED",
        )
        for v in verdicts
        for c in [v.common]
    ]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for v in verdicts:
        for first, last, reported, bumped in v.missing_ranges:
            tag = "reported gap" if reported else "UNREPORTED LOSS"
            why = (
                "lost to an epoch bump or server restart"
                if bumped
                else "AVOIDABLE: the server still had them"
            )
            print(f"  {v.common.subject}: counters {first}..{last} missing ({tag}; {why})")


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    print(f"chaos: seed {args.seed}", flush=True)
    # `kill -USR1 <pid>` prints every thread's stack: a hung run can be diagnosed, not guessed
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        plan = sch.Plan(
            duration=args.duration_s,
            peers=args.peers,
            max_peers=args.max_peers,
            kafka_nodes=tuple(range(1, args.nodes + 1)),
            subjects=subjects_of(args.subjects),
            session_timeout_s=SESSION_TIMEOUT_MS / 1000,
            faults=args.fault_kinds,
        )
    except sch.ScheduleError as exc:
        say(f"error: {exc}")
        return 2
    schedule = sch.build(args.seed, plan)
    counts = ", ".join(f"{k} {n}" for k, n in schedule.counts().items() if n)
    say(f"schedule: {len(schedule.episodes)} fault episodes ({counts or 'none'})")
    if args.dry_run:
        for ep in schedule.episodes:
            print(ep.describe())
        return 0
    run_dir = args.run_dir or default_run_dir(args.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "schedule.txt").write_text("\n".join(a.describe() for a in schedule.actions) + "\n")
    say(f"run dir {run_dir}")
    run = Run(args, schedule, run_dir)
    started = time.monotonic()
    verdicts: list[ChaosVerdict] | None = None
    stack = contextlib.ExitStack()
    try:
        with signals_raise():
            try:
                verdicts = run.run(stack)
            finally:
                with signals_ignored():
                    say("stopping everything the harness started")
                    stack.close()
    except (KeyboardInterrupt, StopSignal) as exc:
        run.report["error"] = f"interrupted: {str(exc) or 'Ctrl-C'}"
    except Exception as exc:
        run.report["error"] = f"{type(exc).__name__}: {exc}"
    run.report["wall_s"] = round(time.monotonic() - started, 1)
    run.report["faults_executed"] = dict(run.executed)
    if verdicts is None:
        say(f"FAILED to run: {run.report['error']} (seed {args.seed}, logs {run_dir})")
        _write_json(args.json_path, run.report)
        return 2
    total = totals(verdicts)
    ok = all(v.ok for v in verdicts) and run.report.get("drained", False)
    run.report.update({"subjects": [v.as_json() for v in verdicts], "totals": total, "ok": ok})
    print_table(verdicts)
    print("totals: " + ", ".join(f"{k} {v}" for k, v in total.items()))
    print("faults executed: " + ", ".join(f"{k} {v}" for k, v in sorted(run.executed.items())))
    print(
        f"gaps reported: {run.report['gaps_reported']}; wall {run.report['wall_s']}s; "
        f"{len(run.report['warnings'])} warning(s)"
    )
    verdict = "EXACTLY ONCE HELD" if ok else "EXACTLY ONCE VIOLATED"
    print(
        f"chaos: {verdict} (seed {args.seed}; replay: uv run python scripts/chaos.py "
        f"{' '.join(_replay_args(args))}; logs {run_dir})",
        flush=True,
    )
    _write_json(args.json_path, run.report)
    return 0 if ok else 1


def _replay_args(args: argparse.Namespace) -> list[str]:
    out = ["--duration", args.duration, "--seed", str(args.seed)]
    for name, default in (
        ("peers", 3),
        ("nodes", 1),
        ("subjects", 12),
        ("rate", 5.0),
        ("faults", "all"),
        ("shards", 12),
        ("size", 100),
    ):
        value = getattr(args, name)
        if value != default:
            out += [f"--{name}", str(value)]
    if args.max_peers != args.peers + 1:
        out += ["--max-peers", str(args.max_peers)]
    if args.doorbell:
        out.append("--doorbell")
    return out


def _write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
