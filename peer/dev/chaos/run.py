"""One chaos run: set up Kafka, the reference server, the deployment and the peers; publish;
run the fault schedule; drain; judge (docs/RELIABILITY.md). :mod:`peer.dev.chaos.main` is
the command line around it."""

from __future__ import annotations

import argparse
import contextlib
import logging
import platform
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from peer.dev.chaos import schedule as sch
from peer.dev.chaos.deployment import (
    AUDIT_TOPIC,
    GROUP,
    NOTIFY_DROP_RATE,
    TOPICS,
    peer_toml,
    routes_toml,
)
from peer.dev.chaos.procs import Fleet, HarnessError, Publisher, bump_epochs, run_cli, start_sim
from peer.dev.chaos.reader import CommittedReader
from peer.dev.chaos.verdict import ChaosVerdict, gaps_from_log_lines, judge_run
from peer.testing import STANDIN_DIR, SimProcess, WaitTimeoutError, create_topics, wait_until
from peer.testing.verdict import Gap


def say(line: str) -> None:
    print(f"chaos: {line}", file=sys.stderr, flush=True)


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
        #: the reference server now (a restart replaces it) and the faults set on it
        self.sim: SimProcess | None = None
        self.sim_faults: dict[str, float] = {}
        #: doorbell mode: the fraction of doorbells the server drops (they may only delay)
        self.notify_drop = NOTIFY_DROP_RATE if args.doorbell else 0.0
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
        from peer.dev.localkafka import start_on_free_ports

        self.cluster = start_on_free_ports(
            self.run_dir / "kafka", self.a.nodes, fresh=True, progress=say
        )
        stack.callback(quietly(self.cluster.stop, 10.0))
        bootstrap: str = self.cluster.bootstrap
        say(f"Kafka ({self.a.nodes} node(s)) at {bootstrap}")
        return bootstrap

    def setup_topics(self, bootstrap: str, sim: SimProcess) -> Path:
        from confluent_kafka.admin import AdminClient

        rf = 3 if self.a.nodes == 3 else 1
        config = self.run_dir / "peer.toml"
        config.write_text(peer_toml(bootstrap, sim.port, doorbell=self.a.doorbell))
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
        try:
            create_topics(admin, [*TOPICS, AUDIT_TOPIC], 3, replication_factor=rf, config=conf)
        except WaitTimeoutError as exc:
            raise HarnessError(str(exc)) from exc
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

    def run(self, stack: contextlib.ExitStack) -> list[ChaosVerdict]:
        self._clients_log()
        bootstrap = self.start_kafka(stack)
        sim = self.sim = start_sim(self.run_dir, self.a.seed, notify_drop=self.notify_drop)
        say(f"reference server at {sim.url} (log {sim.log})")
        stack.callback(quietly(lambda: self._sim().close()))
        stack.callback(quietly(lambda: self._sim().stop()))
        config = self.setup_topics(bootstrap, sim)

        reader = CommittedReader(
            bootstrap, TOPICS, AUDIT_TOPIC, logger=logging.getLogger("chaos.clients")
        )
        reader.start()
        stack.callback(quietly(reader.stop))

        env = {"PYTHONPATH": str(STANDIN_DIR)} if self.a.doorbell else None
        fleet = Fleet(self.run_dir, config, env)
        stack.callback(quietly(fleet.close))
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

        def flowing() -> bool:
            self.supervise(fleet)  # a peer that dies while starting is restarted meanwhile
            return len(reader.latest()) >= len(self.subjects)

        try:
            wait_until(flowing, 120, "every subject visible in Kafka", step=0.5)
        except WaitTimeoutError as exc:
            raise HarnessError(f"warm-up: {exc}") from exc
        say(f"every subject flows; fault schedule of {self.schedule.end():.0f}s starts")

        self.t0 = time.monotonic()
        self.execute(fleet, pubs)
        self.restore(fleet)
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
        return judge_run(records, ledgers, [*audit_gaps, *log_gaps], self.a.size)

    def _sim(self) -> SimProcess:
        assert self.sim is not None
        return self.sim

    def execute(self, fleet: Fleet, pubs: dict[str, Publisher]) -> None:
        for action in self.schedule.actions:
            while (wait := self.t0 + action.at - time.monotonic()) > 0:
                self.supervise(fleet)
                time.sleep(min(wait, 0.25))
            try:
                self.act(action, fleet, pubs)
            except ServerRestartError:
                raise  # without a server there is nothing left to judge
            except Exception as exc:  # a fault not injected is the harness's problem: go on
                self.warn(f"action {action.describe()} failed: {type(exc).__name__}: {exc}")

    def act(self, a: sch.Action, fleet: Fleet, pubs: dict[str, Publisher]) -> None:
        sim = self._sim()
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
            self.sim_faults[a.target] = a.value
        elif a.op is op.SERVER_RESTART:
            what += f" -> epoch {self.restart_server(a.value, pubs)} for every subject"
        self.executed[a.op.value] += 1
        self.event(what)

    def restart_server(self, down: float, pubs: dict[str, Publisher]) -> int:
        """SIGKILL the reference server, wait ``down`` s, start a new one on the same port.

        Its store was in memory: the new one starts every subject in a new epoch, above every
        epoch the old one handed out, as a cluster restart does; what the peers had not
        fetched is lost to it and must be reported as an epoch-change gap (the verdict
        excuses only such a reported tail of an ended epoch). The publishers are held still
        throughout, so no publish is in flight when the server dies, and each ledger starts
        the new epoch where it stopped. Returns that epoch.
        """
        with contextlib.ExitStack() as held:
            for pub in pubs.values():
                held.enter_context(pub.lock)
                pub.check_position()
            first = max(pub.epoch for pub in pubs.values()) + 1
            old = self._sim()
            old.kill()
            old.close()
            time.sleep(down)
            deadline = time.monotonic() + 30
            while True:
                try:
                    self.sim = start_sim(
                        self.run_dir,
                        self.a.seed,
                        port=old.port,
                        first_epoch=first,
                        notify_drop=self.notify_drop,
                    )
                    break
                except HarnessError as exc:  # the port may linger a moment
                    if time.monotonic() > deadline:
                        raise ServerRestartError(
                            f"the reference server did not restart: {exc}"
                        ) from exc
                    time.sleep(0.5)
            for name, value in self.sim_faults.items():
                if value:
                    self.sim.set_fault(name, value)
            for pub in pubs.values():
                pub.sim = self.sim
                pub.bumped(first)
        return first

    def restore(self, fleet: Fleet) -> None:
        """Whatever the schedule left broken is mended before the drain."""
        sim = self._sim()
        for name in ("fail_rate", "latency_ms"):
            sim.set_fault(name, 0.0)
            self.sim_faults[name] = 0.0
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


class ServerRestartError(HarnessError):
    """The reference server could not be started again after its kill."""


def _cpus() -> int:
    import os

    return os.cpu_count() or 0
