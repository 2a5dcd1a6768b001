"""Helpers for peer tests: real ``mdpeer run`` subprocesses, a deployment (control topic +
routes + target topics), and a read_committed checker of exactly-once and per-subject order.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from confluent_kafka import Consumer, TopicPartition

from peer.control.admin import admin_producer, ensure_control_topic, write_routes
from peer.dev.sim.server import SimServer
from peer.routes.model import Route
from tests.fixtures.kafka import mdpeer_command

#: fast settings for tests: small session and transaction timeouts
FAST = {
    "session_timeout_ms": 6000,
    "transaction_timeout_ms": 10000,
    "commit_interval_ms": 100,
    "on_revoke_budget_ms": 5000,
}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(
    path: Path,
    settings: dict[str, Any],
    source: dict[str, Any],
    kafka_producer: dict[str, str] | None = None,
) -> Path:
    lines = [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    lines.append("[source]")
    lines += [f"{k} = {toml_value(v)}" for k, v in source.items()]
    if kafka_producer:
        lines.append("[kafka_producer]")
        lines += [f'"{k}" = {toml_value(v)}' for k, v in kafka_producer.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class PeerProcess:
    """One ``mdpeer run`` subprocess; its stderr (JSON logs) goes to a temp file."""

    def __init__(self, config: Path, peer_id: str, env: dict[str, str] | None = None) -> None:
        self.peer_id = peer_id
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - lives with the process
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MDPEER_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [*mdpeer_command(), "run", "--config", str(config), "--peer-id", peer_id],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=full_env,
        )

    def logs(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"peer {self.peer_id} did not exit within {timeout}s; logs:\n{self.logs()[-3000:]}"
            ) from None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        keep = os.environ.get("MDPEER_TEST_LOG_DIR")  # to read a failed run's peer logs
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            (Path(keep) / f"{self.peer_id}-{self.proc.pid}.log").write_text(self.logs())
        self._log.close()


@dataclass
class Deployment:
    """A control topic with routes, target topics, and a way to start peers on it."""

    bootstrap: str
    group: str
    control: str
    shards: int
    config: Path
    peers: list[PeerProcess] = field(default_factory=list)

    def start_peer(
        self, peer_id: str | None = None, env: dict[str, str] | None = None
    ) -> PeerProcess:
        peer = PeerProcess(self.config, peer_id or f"p-{uuid.uuid4().hex[:6]}", env)
        self.peers.append(peer)
        return peer

    def write_routes(self, routes: Iterable[Route]) -> None:
        producer = admin_producer({"bootstrap.servers": self.bootstrap}, self.group)
        try:
            write_routes(producer, self.control, self.shards, list(routes))
        finally:
            producer.flush(5)

    def close(self) -> None:
        for peer in self.peers:
            peer.close()


@contextlib.contextmanager
def deployment(
    bootstrap: str,
    kafka_admin: Any,
    tmp_path: Path,
    servers: str,
    routes: Iterable[Route],
    *,
    shards: int = 4,
    kafka_producer: dict[str, str] | None = None,
    **settings: Any,
) -> Iterator[Deployment]:
    group = f"g-{uuid.uuid4().hex[:10]}"
    control = f"{group}.control"
    ensure_control_topic(kafka_admin, control, shards, None, bootstrap=bootstrap)
    config = write_config(
        tmp_path / f"{group}.toml",
        {"bootstrap": bootstrap, "group": group, **FAST, **settings},
        {"servers": servers},
        kafka_producer,
    )
    dep = Deployment(bootstrap, group, control, shards, config)
    dep.write_routes(routes)
    try:
        yield dep
    finally:
        dep.close()
        with contextlib.suppress(Exception):
            kafka_admin.delete_topics([control], operation_timeout=10)


class Publisher:
    """Publishes to subjects in a background thread until stopped; remembers (epoch, seq)."""

    def __init__(self, sim: SimServer, subjects: list[str], interval: float = 0.005) -> None:
        self.sim = sim
        self.subjects = subjects
        self.interval = interval
        self.sent: dict[str, list[tuple[int, int]]] = {s: [] for s in subjects}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def publish(self, count: int) -> None:
        for i in range(count):
            for s in self.subjects:
                self.sent[s].append(self.sim.publish(s, f"m{i}"))

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.interval):
            for s in self.subjects:
                self.sent[s].append(self.sim.publish(s, f"bg{i}"))
            i += 1

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """No more messages after this returns."""
        self._stop.set()
        self._thread.join(5)

    def total(self) -> int:
        return sum(len(v) for v in self.sent.values())


# --- reading back -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    @property
    def subject(self) -> str:
        return self.headers["md.subject"].decode()

    @property
    def epoch(self) -> int:
        return int(self.headers["md.epoch"])

    @property
    def seq(self) -> int:
        return int(self.headers["md.seq"])


def read_committed(bootstrap: str, topics: Iterable[str], timeout: float = 4.0) -> list[Seen]:
    """The committed records of ``topics`` up to their end (read_committed).

    A partition held back by an open transaction reports no end: after ``timeout`` what was
    read is returned, so callers wait on counts with their own deadlines. A topic that does
    not exist yet reads as empty.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        tps: list[TopicPartition] = []
        md = consumer.list_topics(timeout=timeout)
        for topic in topics:  # a topic that does not exist (yet) holds nothing
            found = md.topics.get(topic)
            if found is not None and found.error is None:
                tps += [TopicPartition(topic, p, 0) for p in found.partitions]
        consumer.assign(tps)
        pending = {(tp.topic, tp.partition) for tp in tps}
        out: list[Seen] = []
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() >= deadline:
                break
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            t, p = msg.topic(), msg.partition()
            assert t is not None
            assert p is not None
            if msg.error() is not None:
                pending.discard((t, p))
                continue
            offset = msg.offset()
            assert offset is not None
            headers: dict[str, bytes] = {}
            for pair in msg.headers() or []:
                name, raw = pair[0], pair[1]
                headers[str(name)] = raw if isinstance(raw, bytes) else str(raw or "").encode()
            value = msg.value()
            out.append(
                Seen(t, p, offset, msg.key(), value if isinstance(value, bytes) else None, headers)
            )
        return out
    finally:
        consumer.close()


def check_exactly_once(
    records: Iterable[Seen], expected: dict[str, list[tuple[int, int]]] | None = None
) -> dict[str, list[tuple[int, int]]]:
    """Each (subject, epoch, seq) once, in order per subject, one partition per subject.

    ``expected``: subject -> the (epoch, seq) list that must be seen exactly (no loss).
    Returns what was seen per subject.
    """
    by_subject: dict[str, list[tuple[int, int]]] = defaultdict(list)
    placement: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for rec in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        by_subject[rec.subject].append((rec.epoch, rec.seq))
        placement[rec.subject].add((rec.topic, rec.partition))
    for subject, seen in by_subject.items():
        assert len(placement[subject]) == 1, f"{subject} spread over {placement[subject]}"
        dups = len(seen) - len(set(seen))
        assert dups == 0, f"{subject}: {dups} duplicates in {seen}"
        assert seen == sorted(seen), f"{subject}: out of order: {seen}"
    if expected is not None:
        for subject, want in expected.items():
            got = by_subject.get(subject, [])
            missing = sorted(set(want) - set(got))
            assert not missing, f"{subject}: {len(missing)} missing, first {missing[:5]}"
    return dict(by_subject)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(port: int, path: str = "/metrics") -> str:
    """The body of ``path`` on a peer's observability port ("" while it does not answer);
    an error status's body too (``/readyz`` answers 503 with why it is not ready)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            body: bytes = resp.read()
            return body.decode()
    except urllib.error.HTTPError as exc:
        error_body: bytes = exc.read()
        return error_body.decode()
    except (OSError, urllib.error.URLError):
        return ""


def metric(text: str, name_and_labels: str) -> float:
    """The value of one sample line (``name{labels}``) of a Prometheus text page, or 0."""
    for line in text.splitlines():
        if line.startswith(name_and_labels + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def read_raw(bootstrap: str, topic: str, timeout: float = 4.0) -> list[bytes]:
    """Committed values of ``topic`` (read_committed), in partition/offset order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        md = consumer.list_topics(timeout=timeout)
        tps = [TopicPartition(topic, p, 0) for p in md.topics[topic].partitions]
        consumer.assign(tps)
        pending = {tp.partition for tp in tps}
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                pending.discard(msg.partition() or 0)
                continue
            value = msg.value()
            if isinstance(value, bytes):
                out.append(value)
        return out
    finally:
        consumer.close()


def owned_shards(logs: str) -> set[int]:
    """The shards a peer owns now, according to its JSON log lines."""
    owned: set[int] = set()
    for line in logs.splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        msg = entry.get("msg")
        if msg == "shards assigned":
            owned = set(entry["owned"])
        elif msg in ("shards revoked", "shards lost"):
            owned -= set(entry["shards"])
    return owned
