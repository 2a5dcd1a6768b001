"""``mdpeer demo``: a whole deployment on this machine, watched by a read_committed consumer.

Order of start: local Kafka → reference server → control topic, target topics, routes →
peers (``mdpeer run`` subprocesses) → checker → publisher. Everything started is pushed on
one :class:`contextlib.ExitStack`, so every exit path (end of the run, an exception,
Ctrl-C, SIGTERM) stops it in reverse order. The JVMs and the peers are also tied to this
process (``setpriv --pdeathsig``), so even a SIGKILL of the demo leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from peer.dev.demo.check import CommittedCounter
from peer.dev.demo.summary import DemoResult
from peer.dev.demo.view import DemoStatus, PeerRow, View
from peer.dev.procsignals import StopSignal, fresh_run_dir, signals_ignored, signals_raise
from peer.errors import MdpeerError
from peer.testing import PeerProcess, WaitTimeoutError, alive, create_topics

GROUP: Final = "demo"
#: the vendor connector's quick-start routes: subject, topic, key
ROUTES: Final = (("/server/status1", "topic1", None), ("/server/status2", "topic2", "mykey"))
#: run directories kept under the cache (older ones are removed at start)
KEEP_RUNS: Final = 3
#: a peer SIGTERMed gets this long to commit and leave before it is killed
PEER_STOP_GRACE_S: Final = 20.0
#: stopping everything is bounded step by step (peers 35 s, Kafka 20 s, ...); past this budget
#: the demo prints every thread's stack and exits 1
STOP_BUDGET_S: Final = 100.0


class DemoError(MdpeerError):
    """The demo could not run (a step failed); the message names the step."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    #: seconds of publishing; None = until Ctrl-C
    duration: float | None = None
    kill_one: bool = False
    #: messages per second on each of the two subjects
    rate: float = 50.0
    peers: int = 3
    shards: int = 6
    partitions: int = 3
    session_timeout_ms: int = 6000
    transaction_timeout_ms: int = 10000
    #: bound on waiting, after publishing stopped, for the consumer to see everything
    catch_up_timeout: float = 90.0
    #: bound on waiting for the peers to own every shard
    ready_timeout: float = 90.0
    run_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.duration is not None and not self.duration > 0:
            raise DemoError(f"duration={self.duration!r}: must be > 0 seconds")
        if not self.rate > 0:
            raise DemoError(f"rate={self.rate!r}: must be > 0 messages per second")
        if not 1 <= self.peers <= 9:
            raise DemoError(f"peers={self.peers!r}: must be 1..9")
        if self.kill_one and self.peers < 2:
            raise DemoError("kill_one: needs at least 2 peers (one must survive)")
        if not 1 <= self.shards <= 1000:
            raise DemoError(f"shards={self.shards!r}: must be 1..1000")
        if not 1 <= self.partitions <= 100:
            raise DemoError(f"partitions={self.partitions!r}: must be 1..100")

    def kill_after(self) -> float:
        """Seconds of publishing before ``--kill-one`` strikes."""
        return self.duration / 3 if self.duration is not None else 10.0


def progress(line: str) -> None:
    print(f"demo: {line}", file=sys.stderr, flush=True)


# --- the demo ---------------------------------------------------------------------------------


def default_run_dir() -> Path:
    from peer.dev.localkafka import cache_dir

    return fresh_run_dir(cache_dir() / "demo", KEEP_RUNS)


class Demo:
    def __init__(self, options: DemoOptions, view_out: IO[str] | None = None) -> None:
        self.o = options
        self.view_out = view_out
        self.run_dir = options.run_dir or default_run_dir()
        self.result = DemoResult(run_dir=str(self.run_dir))
        self.peers: list[PeerProcess] = []
        #: peer ids the demo SIGKILLed (``--kill-one``)
        self.killed: set[str] = set()
        self.events: list[str] = []
        self._owners: dict[int, str] = {}
        self._started = time.monotonic()
        self._publish_started: float | None = None

    # -- entry -------------------------------------------------------------------------------

    def run(self) -> DemoResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stack = contextlib.ExitStack()
        try:
            with signals_raise():
                try:
                    self._run(stack)
                finally:
                    with signals_ignored():
                        progress("stopping everything the demo started")
                        # each step is bounded; should one still hang, the stacks say where
                        # and the children die with us (they are tied to this process)
                        faulthandler.dump_traceback_later(STOP_BUDGET_S, exit=True)
                        stack.close()
                        faulthandler.cancel_dump_traceback_later()
        except (KeyboardInterrupt, StopSignal) as exc:
            self.result.interrupted = True
            progress(f"interrupted ({exc or 'Ctrl-C'}); everything it started is stopped")
        except MdpeerError as exc:
            self.result.reason = str(exc)
        except Exception as exc:  # a failed step: report it, cleanup already ran
            self.result.reason = f"{type(exc).__name__}: {exc}"
        _close_file_handlers(logging.getLogger("peer.dev.demo.clients"))
        self.result.left_running = sorted(p for p in self.result.pids.values() if alive(p))
        self._record_pids()
        return self.result

    def _clients_logger(self) -> logging.Logger:
        """librdkafka's logs of the demo's own clients go to clients.log in the run dir:
        retries on a new broker and disconnects at shutdown would clutter the view."""
        logger = logging.getLogger("peer.dev.demo.clients")
        logger.propagate = False
        _close_file_handlers(logger)
        if not logger.handlers:
            # a client that outlives the run (held by a traceback) logs nowhere, not on stderr
            logger.addHandler(logging.NullHandler())
        handler = logging.FileHandler(self.run_dir / "clients.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        return logger

    def _record_pids(self) -> None:
        with contextlib.suppress(OSError):
            (self.run_dir / "pids.json").write_text(json.dumps(self.result.pids, indent=2) + "\n")

    def _step(self, what: str) -> None:
        progress(what)

    def _run(self, stack: contextlib.ExitStack) -> None:
        from confluent_kafka.admin import AdminClient

        from peer.control.admin import admin_producer, ensure_control_topic, write_routes

        bootstrap = self._start_kafka(stack)
        clients = self._clients_logger()
        admin_conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": clients}
        admin = AdminClient(admin_conf)
        sim = self._start_sim(stack)

        control = f"{GROUP}.control"
        self._step(f"creating control topic {control} ({self.o.shards} shards)")
        ensure_control_topic(admin, control, self.o.shards, None, bootstrap=bootstrap)
        topics = [topic for _, topic, _ in ROUTES]
        self._step(f"creating topics {', '.join(topics)} ({self.o.partitions} partitions each)")
        _create_topics(admin, topics, self.o.partitions)
        self._step("applying routes: " + ", ".join(f"{s} → {t}" for s, t, _ in ROUTES))
        producer = admin_producer(
            {"bootstrap.servers": bootstrap, "logger": clients},
            GROUP,
        )
        write_routes(producer, control, self.o.shards, _routes())
        producer.flush(10)
        del producer

        config = self._write_config(bootstrap, sim.port)
        stack.callback(self._stop_peers)
        for i in range(1, self.o.peers + 1):
            peer_id = f"demo-{i}"
            # its own session and tied to the demo: see the module's docstring
            peer = PeerProcess(
                config, peer_id, log=self.run_dir / f"{peer_id}.log", grace=PEER_STOP_GRACE_S
            )
            self.peers.append(peer)
            self.result.pids[f"peer {peer.peer_id}"] = peer.pid
            self._step(f"started peer {peer.peer_id} (pid {peer.pid}, log {peer.log})")
        self._record_pids()

        counter = CommittedCounter(bootstrap, topics, logger=clients)
        counter.start()
        stack.callback(counter.stop)

        view = View(self.view_out)
        stack.enter_context(view)
        self._wait_ready(admin, control, view, counter, sim)

        from peer.dev.sim.generator import GeneratorSpec

        subjects = tuple(s for s, _, _ in ROUTES)
        sim.start_generator(GeneratorSpec(subjects=subjects, rate=self.o.rate * len(subjects)))
        stack.callback(_quietly(sim.stop_generator))
        self._publish_started = time.monotonic()
        self.result.joining_moves = self.result.shard_moves
        view.event(
            f"publishing {self.o.rate:g} msg/s on each of {', '.join(subjects)}"
            + (f" for {self.o.duration:g}s" if self.o.duration else " (Ctrl-C stops)")
        )

        try:
            self._publish_loop(admin, control, counter, sim, view)
        except KeyboardInterrupt:
            if self.o.duration is not None:
                raise
            # interactive run: Ctrl-C ends publishing; a second one skips the check
            view.event("Ctrl-C: stopping publishing, then checking (Ctrl-C again to skip)")
        sim.stop_generator()
        view.event("publishing stopped; waiting for the consumer to see every message")

        published = _published(sim)
        deadline = time.monotonic() + self.o.catch_up_timeout
        while True:
            seen = counter.per_subject()
            distinct_ok = all(counter.distinct(s) >= head for s, (_, head) in published.items())
            view.update(self._observe(admin, control, counter, sim, "catching up"))
            if distinct_ok and all(seen.get(s, 0) >= h for s, (_, h) in published.items()):
                self.result.caught_up = True
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        # what arrives late would be a duplicate: give it a moment to show up
        time.sleep(1.0)
        view.update(self._observe(admin, control, counter, sim, "done"), force=True)
        self.result.published = {s: h for s, (_, h) in published.items()}
        self.result.per_topic = counter.per_topic()
        self.result.checks = counter.check(published)

    def _publish_loop(
        self, admin: Any, control: str, counter: CommittedCounter, sim: Any, view: View
    ) -> None:
        killed = False
        while self.o.duration is None or self._publishing_for() < self.o.duration:
            if self.o.kill_one and not killed and self._publishing_for() >= self.o.kill_after():
                self._kill_one(view)
                killed = True
            view.update(self._observe(admin, control, counter, sim, "publishing"))
            time.sleep(0.5)

    def _stop_peers(self) -> None:
        """SIGTERM all at once (each commits and leaves), wait for all within one grace; force
        the stragglers (one deadline for all: N hung peers must not take N graces)."""
        for peer in self.peers:
            peer.terminate()
        deadline = time.monotonic() + PEER_STOP_GRACE_S
        for peer in self.peers:
            code = peer.stop(grace=max(deadline - time.monotonic(), 0.1))
            peer.close()
            self.result.peer_exits[peer.peer_id] = code
            if peer.peer_id not in self.killed and code != 0:
                progress(f"peer {peer.peer_id} exited with code {code}; see {peer.log}")

    def _publishing_for(self) -> float:
        return 0.0 if self._publish_started is None else time.monotonic() - self._publish_started

    # -- steps -------------------------------------------------------------------------------

    def _start_kafka(self, stack: contextlib.ExitStack) -> str:
        from peer.dev.localkafka import start_on_free_ports, stderr_progress

        data = self.run_dir / "kafka"
        self._step(f"starting a local Kafka on free ports (data {data})")
        cluster = start_on_free_ports(
            data, 1, fresh=True, progress=lambda line: stderr_progress(f"demo: {line}")
        )
        stack.callback(_quietly(functools.partial(cluster.stop, grace=10.0)))
        for node, pid in cluster.running_pids().items():
            self.result.pids[f"kafka node {node}"] = pid
        self._step(f"Kafka ready at {cluster.bootstrap}")
        return cluster.bootstrap

    def _start_sim(self, stack: contextlib.ExitStack) -> Any:
        from peer.dev.sim.server import SimConfig, SimServer

        # a big cache: a killed peer's subjects are resumed from it after the failover
        sim = SimServer(SimConfig(port=0, cache_size=1_000_000, cache_expire_s=3600.0))
        url = sim.start()
        stack.callback(_quietly(sim.stop))
        self._step(f"reference MigratoryData server at {url}")
        return sim

    def _write_config(self, bootstrap: str, sim_port: int) -> Path:
        path = self.run_dir / "peer.toml"
        path.write_text(
            "\n".join(
                [
                    "# written by mdpeer demo",
                    f'bootstrap = "{bootstrap}"',
                    f'group = "{GROUP}"',
                    f"session_timeout_ms = {self.o.session_timeout_ms}",
                    f"transaction_timeout_ms = {self.o.transaction_timeout_ms}",
                    "commit_interval_ms = 100",
                    "[source]",
                    f'servers = "127.0.0.1:{sim_port}"',
                ]
            )
            + "\n"
        )
        return path

    def _wait_ready(
        self, admin: Any, control: str, view: View, counter: CommittedCounter, sim: Any
    ) -> None:
        """Until every shard has an owner and every peer answers /readyz (bounded)."""
        deadline = time.monotonic() + self.o.ready_timeout
        while True:
            status = self._observe(admin, control, counter, sim, "peers joining")
            view.update(status)
            dead = [p.peer_id for p in self.peers if not p.alive()]
            if dead:
                raise DemoError(
                    f"peer(s) {', '.join(dead)} exited at start; see the logs in {self.run_dir}"
                )
            if not status.unowned and all(r.state == "ready" for r in status.peers):
                view.event(f"all {self.o.shards} shards owned by {len(self.peers)} peers")
                return
            if time.monotonic() >= deadline:
                raise DemoError(
                    f"the peers did not own every shard within {self.o.ready_timeout:g}s "
                    f"(unowned {list(status.unowned)}); see the logs in {self.run_dir}"
                )
            time.sleep(0.5)

    def _kill_one(self, view: View) -> None:
        victim = next((p for p in self.peers if p.alive()), None)
        if victim is None:
            return
        victim.kill()
        self.killed.add(victim.peer_id)
        self.result.killed = victim.peer_id
        line = (
            f"after {self._publishing_for():.1f}s of publishing: SIGKILL {victim.peer_id} "
            f"(pid {victim.pid}); "
            f"its shards move after the session timeout ({self.o.session_timeout_ms} ms)"
        )
        self.events.append(line)
        view.event(line)

    def _observe(
        self, admin: Any, control: str, counter: CommittedCounter, sim: Any, phase: str
    ) -> DemoStatus:
        from peer.control.group import describe_group

        shards: dict[str, tuple[int, ...]] = {}
        group_state = "?"
        try:
            info = describe_group(admin, GROUP, control, timeout=2.0)
        except MdpeerError:
            info = None
        if info is not None:
            group_state = info.state
            for m in info.members:
                shards[m.peer] = shards.get(m.peer, ()) + m.shards
            for shard, member in info.owners().items():
                before = self._owners.get(shard)
                if before is not None and before != member.peer:
                    self.result.shard_moves += 1
                    self.events.append(f"shard {shard}: {before} → {member.peer}")
                self._owners[shard] = member.peer
        owned = {s for ss in shards.values() for s in ss}
        published = {s: h for s, (_, h) in _published(sim).items()}
        visible = counter.per_topic()
        return DemoStatus(
            elapsed_s=time.monotonic() - self._started,
            phase=phase,
            published=published,
            visible=visible,
            peers=tuple(
                PeerRow(p.peer_id, p.pid, self._state(p), tuple(sorted(shards.get(p.peer_id, ()))))
                for p in self.peers
            ),
            group_state=group_state,
            unowned=tuple(s for s in range(self.o.shards) if s not in owned),
            shard_moves=self.result.shard_moves,
            events=tuple(self.events),
        )

    def _state(self, peer: PeerProcess) -> str:
        if peer.peer_id in self.killed:
            return "killed"
        code = peer.returncode
        if code is not None:
            return f"exited {code}"
        return "ready" if peer.ready() else "starting"  # what its /readyz says


def _routes() -> list[Any]:
    from peer.routes.model import Route

    return [Route(subject, topic, key=key) for subject, topic, key in ROUTES]


def _published(sim: Any) -> dict[str, tuple[int, int]]:
    """subject → (epoch, head seq) on the reference server (0, 0 before the first message)."""
    state: dict[str, Any] = sim.state()
    subjects: dict[str, Any] = state.get("subjects", state)
    out: dict[str, tuple[int, int]] = {}
    for subject, _, _ in ROUTES:
        desc = subjects.get(subject)
        out[subject] = (0, 0) if not desc else (int(desc["epoch"]), int(desc["head_seq"]))
    return out


def _create_topics(admin: Any, topics: list[str], partitions: int, timeout: float = 30.0) -> None:
    try:
        create_topics(admin, topics, partitions, timeout=timeout)
    except WaitTimeoutError as exc:
        raise DemoError(str(exc)) from exc


def _close_file_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            logger.removeHandler(handler)
            handler.close()


def _quietly(fn: Callable[[], object]) -> Callable[[], None]:
    """A cleanup step whose failure must not skip the next ones."""

    def call() -> None:
        try:
            fn()
        except Exception as exc:
            progress(f"cleanup step failed: {type(exc).__name__}: {exc}")

    return call
