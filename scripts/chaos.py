#!/usr/bin/env python3
"""The exactly-once chaos harness (issue #6; docs/RELIABILITY.md).

    uv run python scripts/chaos.py --duration 3m --seed 20261123          # what CI runs
    uv run python scripts/chaos.py --duration 30m --peers 3 --nodes 3     # the long run
    uv run python scripts/chaos.py --duration 90s --seed S --faults kill,epoch   # narrow down

It drives real processes: a local Kafka (1 or 3 nodes), the reference MigratoryData server
(``mdpeer sim serve``), ``mdpeer init`` + ``mdpeer routes apply``, N ``mdpeer run`` peers and
one publisher per subject whose every message names its subject and counter. Then it runs a
seeded schedule of faults (:mod:`chaoslib.schedule`), stops publishing, waits for the peers to
drain, and judges what a read_committed consumer of every target topic saw
(:mod:`chaoslib.verdict`). The seed is printed first; ``--seed S`` replays the schedule.

Exit code: 0 = exactly once held; 1 = a duplicate, an order violation, a corrupt record or an
unreported loss; 2 = the harness could not run (setup failed, interrupted).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import platform
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from chaoslib import schedule as sch
from chaoslib.deployment import (
    AUDIT_TOPIC,
    GROUP,
    SESSION_TIMEOUT_MS,
    TOPICS,
    StopRequestedError,
    default_run_dir,
    peer_toml,
    routes_toml,
    subjects_of,
)
from chaoslib.procs import Fleet, HarnessError, Publisher, SimProcess, bump_epochs, run_cli
from chaoslib.reader import CommittedReader
from chaoslib.verdict import Gap, SubjectVerdict, gaps_from_log_lines, judge, totals

from peer.dev.procsignals import signals_ignored, signals_raise


def say(line: str) -> None:
    print(f"chaos: {line}", file=sys.stderr, flush=True)


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
        help="all, none or a list: kill,term,zombie,scale,kafka,epoch,5xx,latency (all)",
    )
    p.add_argument("--tail", type=float, default=5.0, help="calm publishing after the faults (5)")
    p.add_argument("--drain-timeout", type=float, default=120.0, help="bound on the drain (120)")
    p.add_argument("--run-dir", type=Path, default=None, help="logs and Kafka data go here")
    p.add_argument("--json", type=Path, default=None, dest="json_path", help="write the report")
    p.add_argument("--dry-run", action="store_true", help="print the schedule and exit")
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


def quietly(fn: Any, *args: Any) -> Any:
    def call() -> None:
        try:
            fn(*args)
        except Exception as exc:
            say(f"cleanup step failed: {type(exc).__name__}: {exc}")

    return call


class Run:
    def __init__(self, args: argparse.Namespace, schedule: sch.Schedule, run_dir: Path) -> None:
        self.a = args
        self.schedule = schedule
        self.run_dir = run_dir
        self.subjects = schedule.plan.subjects
        self.report: dict[str, Any] = {
            "seed": args.seed,
            "command": " ".join(["scripts/chaos.py", *sys.argv[1:]]),
            "run_dir": str(run_dir),
            "machine": f"{platform.node()} {platform.machine()} {_cpus()} cpus, "
            f"Python {platform.python_version()}",
            "shape": {
                "duration_s": args.duration_s,
                "peers": args.peers,
                "max_peers": args.max_peers,
                "kafka_nodes": args.nodes,
                "subjects": args.subjects,
                "rate_per_subject": args.rate,
                "size": args.size,
                "shards": args.shards,
            },
            "faults_planned": schedule.counts(),
            "events": [],
            "warnings": [],
        }
        self.executed: Counter[str] = Counter()
        self.cluster: Any = None
        self.kafka_down: set[int] = set()
        self.t0 = 0.0

    def event(self, line: str) -> None:
        stamp = time.monotonic() - self.t0 if self.t0 else 0.0
        self.report["events"].append(f"t+{stamp:.1f}s {line}")
        say(f"t+{stamp:6.1f}s {line}")

    def supervise(self, fleet: Fleet) -> None:
        for line, expected in fleet.supervise():
            if expected:
                self.event(line)
            else:
                self.warn(line)

    def warn(self, line: str) -> None:
        self.report["warnings"].append(line)
        say(f"WARNING: {line}")

    # -- setup -------------------------------------------------------------------------------

    def start_kafka(self, stack: contextlib.ExitStack) -> str:
        from peer.dev.localkafka import LocalKafka, PortInUseError, free_port_base

        for attempt in range(3):
            try:
                self.cluster = LocalKafka(
                    self.run_dir / f"kafka{attempt}",
                    nodes=self.a.nodes,
                    port=free_port_base(self.a.nodes),
                    fresh=True,
                    tie_to_parent=True,
                    progress=say,
                ).start()
                break
            except PortInUseError:
                if attempt == 2:
                    raise
        stack.callback(quietly(self.cluster.stop, 10.0))
        bootstrap: str = self.cluster.bootstrap
        say(f"Kafka ({self.a.nodes} node(s)) at {bootstrap}")
        return bootstrap

    def setup_topics(self, bootstrap: str, sim: SimProcess) -> Path:
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.cimpl import NewTopic

        rf = 3 if self.a.nodes == 3 else 1
        config = self.run_dir / "peer.toml"
        config.write_text(peer_toml(bootstrap, sim.port))
        routes = self.run_dir / "routes.toml"
        routes.write_text(routes_toml(self.subjects))
        admin_log = self.run_dir / "admin.log"
        common = ["--bootstrap", bootstrap, "--group", GROUP]
        run_cli(
            ["init", *common, "--shards", str(self.a.shards), "--replication-factor", str(rf)],
            admin_log,
        )
        logger = logging.getLogger("chaos.clients")
        admin_conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": logger}
        admin = AdminClient(admin_conf)
        conf = {"min.insync.replicas": "2"} if rf == 3 else {}
        futures = admin.create_topics(
            [
                NewTopic(t, num_partitions=3, replication_factor=rf, config=conf)
                for t in (*TOPICS, AUDIT_TOPIC)
            ],
            operation_timeout=30,
        )
        for fut in futures.values():
            fut.result(30)
        deadline = time.monotonic() + 30
        for topic in (*TOPICS, AUDIT_TOPIC):
            while True:
                meta = admin.list_topics(topic=topic, timeout=5).topics.get(topic)
                if (
                    meta is not None
                    and meta.error is None
                    and meta.partitions
                    and all(p.leader >= 0 for p in meta.partitions.values())
                ):
                    break
                if time.monotonic() > deadline:
                    raise HarnessError(f"topic {topic} has no leaders after 30s")
                time.sleep(0.2)
        run_cli(["routes", "apply", str(routes), *common], admin_log)
        return config

    def _clients_log(self) -> None:
        logger = logging.getLogger("chaos.clients")
        logger.propagate = False
        handler = logging.FileHandler(self.run_dir / "clients.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

    # -- the run -----------------------------------------------------------------------------

    def run(self, stack: contextlib.ExitStack) -> list[SubjectVerdict]:
        self._clients_log()
        bootstrap = self.start_kafka(stack)
        sim = SimProcess(self.run_dir, self.a.seed)
        say(f"reference server at {sim.start()} (log {sim.log})")
        stack.callback(quietly(sim.stop))
        config = self.setup_topics(bootstrap, sim)

        reader = CommittedReader(
            bootstrap, TOPICS, AUDIT_TOPIC, logger=logging.getLogger("chaos.clients")
        )
        reader.start()
        stack.callback(quietly(reader.stop))

        fleet = Fleet(self.run_dir, config)
        stack.callback(quietly(fleet.stop_all))
        for slot in range(1, self.a.peers + 1):
            fleet.start(slot)
        say(f"started {self.a.peers} peers (logs {self.run_dir}/peer-N.log)")

        pubs = {s: Publisher(sim, s, self.a.rate, self.a.size) for s in self.subjects}

        def stop_publishers() -> None:
            for pub in pubs.values():
                pub.stop()

        stop_pubs = quietly(stop_publishers)
        stack.callback(stop_pubs)
        for pub in pubs.values():
            pub.start()
        say(f"publishing {self.a.rate:g} msg/s on each of {len(pubs)} subjects")

        warm = time.monotonic() + 120
        while len(reader.latest()) < len(self.subjects):
            if time.monotonic() > warm:
                raise HarnessError("warm-up: not every subject became visible within 120s")
            self.supervise(fleet)
            time.sleep(0.5)
        say(f"every subject flows; fault schedule of {self.schedule.end():.0f}s starts")

        self.t0 = time.monotonic()
        self.execute(fleet, sim, pubs)
        self.restore(fleet, sim)
        self.event(f"faults over; {self.a.tail:g}s of calm publishing")
        time.sleep(self.a.tail)
        stop_pubs()
        for pub in pubs.values():
            pub.join(15)
        ledgers = {s: p.ledger() for s, p in pubs.items()}
        for pub in pubs.values():
            with pub.lock:
                pub.check_position()
            if pub.errors:
                self.warn(f"publisher {pub.subject}: {pub.errors[:3]}")
        self.report["published"] = sum(lg.count for lg in ledgers.values())
        self.report["publish_retries"] = sum(p.rejected for p in pubs.values())

        started = time.monotonic()
        deadline = started + self.a.drain_timeout
        drained = False
        while time.monotonic() < deadline:
            seen = reader.latest()
            if all(seen.get(s, 0) >= lg.count for s, lg in ledgers.items()):
                drained = True
                break
            self.supervise(fleet)
            time.sleep(0.5)
        self.report["drained"] = drained
        self.report["drain_s"] = round(time.monotonic() - started, 1)
        self.event(("drained" if drained else "NOT drained") + f" in {self.report['drain_s']}s")
        # late records would be duplicates: give them a moment, then stop the peers cleanly
        time.sleep(2.0)
        fleet.stop_all()
        self.report["peer_exits"] = {
            p.peer_id: [f"{why}: {code}" for code, why in p.exits] for p in fleet.slots.values()
        }
        for line in fleet.crashes:
            self.warn(line)
        for peer in fleet.slots.values():
            for code, why in peer.exits:
                if why.startswith("SIGTERM") and code != 0:
                    self.warn(f"{peer.peer_id} exited {code} after {why} (expected 0)")
        reader.stop()
        final = CommittedReader(
            bootstrap, TOPICS, AUDIT_TOPIC, logger=logging.getLogger("chaos.clients")
        )
        stack.callback(quietly(final.stop))
        if not final.read_to_end(timeout=60.0):
            self.warn("the checker did not reach the end of every partition within 60s")
        final.stop()
        records, audit_gaps, errors = final.snapshot()
        for err in errors[:10]:
            self.warn(f"reader: {err}")
        log_gaps: list[Gap] = []
        for log in sorted(self.run_dir.glob("peer-*.log")):
            with log.open(errors="replace") as lines:
                log_gaps += gaps_from_log_lines(lines)
        self.report["gaps_reported"] = {"audit": len(audit_gaps), "log": len(log_gaps)}
        kinds = Counter(g.kind for g in [*audit_gaps, *log_gaps])
        self.report["gap_kinds"] = dict(kinds)
        # the server here never expires its cache: only an epoch bump may open a gap
        odd = {k: n for k, n in kinds.items() if k != "epoch_change"}
        if odd:
            self.warn(f"gaps other than epoch changes were reported: {odd}")
        return judge(records, ledgers, [*audit_gaps, *log_gaps], self.a.size)

    def execute(self, fleet: Fleet, sim: SimProcess, pubs: dict[str, Publisher]) -> None:
        for action in self.schedule.actions:
            while (wait := self.t0 + action.at - time.monotonic()) > 0:
                self.supervise(fleet)
                time.sleep(min(wait, 0.25))
            try:
                self.act(action, fleet, sim, pubs)
            except Exception as exc:  # a fault not injected is the harness's problem: go on
                self.warn(f"action {action.describe()} failed: {type(exc).__name__}: {exc}")

    def act(self, a: sch.Action, fleet: Fleet, sim: SimProcess, pubs: dict[str, Publisher]) -> None:
        op = sch.Op
        what = a.label()
        if a.op in (op.SIGKILL, op.SIGTERM, op.SIGSTOP, op.SIGCONT, op.RETIRE):
            sig = {
                op.SIGKILL: signal.SIGKILL,
                op.SIGSTOP: signal.SIGSTOP,
                op.SIGCONT: signal.SIGCONT,
            }.get(a.op, signal.SIGTERM)
            fleet.signal(int(a.target), sig)
        elif a.op is op.START:
            fleet.start(int(a.target))
        elif a.op is op.KAFKA_KILL:
            self.cluster.kill(int(a.target))
            self.kafka_down.add(int(a.target))
        elif a.op is op.KAFKA_RESTART:
            self.cluster.restart(int(a.target), wait=False)
            self.kafka_down.discard(int(a.target))
        elif a.op is op.EPOCH:
            targets = list(pubs.values()) if a.target == "*" else [pubs[a.target]]
            epochs = bump_epochs(sim, targets)
            what += f" -> epoch {max(epochs.values())}"
        elif a.op is op.FAULTS:
            sim.set_fault(a.target, a.value)
        self.executed[a.op.value] += 1
        self.event(what)

    def restore(self, fleet: Fleet, sim: SimProcess) -> None:
        """Whatever the schedule left broken is mended before the drain."""
        sim.set_fault("fail_rate", 0.0)
        sim.set_fault("latency_ms", 0.0)
        for node in sorted(self.kafka_down):
            self.cluster.restart(node, wait=False)
        self.kafka_down.clear()
        if self.a.nodes > 1:
            self.cluster.wait_ready(120)
        for slot in sorted(sch.running_after(self.a.peers, self.schedule.actions)):
            peer = fleet.slots.get(slot)
            if peer is not None and peer.paused:
                fleet.signal(slot, signal.SIGCONT)
            if peer is None or not peer.alive():
                fleet.start(slot)


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def print_table(verdicts: list[SubjectVerdict]) -> None:
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
            v.subject,
            v.expected,
            v.delivered,
            v.duplicates,
            v.missing,
            v.missing_reported,
            v.missing_unreported,
            v.missing_avoidable,
            v.order_violations,
            v.partitions,
            v.corrupt,
            v.unexpected,
            "ok" if v.ok else "FAILED",
        )
        for v in verdicts
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
            why = "lost to an epoch bump" if bumped else "AVOIDABLE: the server still had them"
            print(f"  {v.subject}: counters {first}..{last} missing ({tag}; {why})")


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
    verdicts: list[SubjectVerdict] | None = None
    stack = contextlib.ExitStack()
    try:
        with signals_raise(StopRequestedError):
            try:
                verdicts = run.run(stack)
            finally:
                with signals_ignored():
                    say("stopping everything the harness started")
                    stack.close()
    except (KeyboardInterrupt, StopRequestedError) as exc:
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
    return out


def _write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
