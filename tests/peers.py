"""Helpers for peer tests: a deployment (control topic + routes + target topics) whose peers
are real ``mdpeer run`` subprocesses (:class:`peer.testing.PeerProcess`), a publisher, and
the exactly-once check over what a read_committed consumer sees.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from peer.control.admin import ensure_control_topic
from peer.dev.sim.server import SimServer
from peer.routes.model import Route
from peer.testing.deployment import Deployment as Deployment  # noqa: PLC0414 re-exported
from peer.testing.verdict import Delivered, judge

#: fast settings for tests: small session and transaction timeouts
FAST = {
    "session_timeout_ms": 6000,
    "transaction_timeout_ms": 10000,
    "commit_interval_ms": 100,
    "on_revoke_budget_ms": 5000,
}


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
    kafka: dict[str, str] | None = None,
) -> Path:
    """A peer config: ``kafka`` is the ``[kafka]`` table (security: ``sasl.password_file``...)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    lines.append("[source]")
    lines += [f"{k} = {toml_value(v)}" for k, v in source.items()]
    for table, props in (("kafka", kafka), ("kafka_producer", kafka_producer)):
        if props:
            lines.append(f"[{table}]")
            lines += [f'"{k}" = {toml_value(v)}' for k, v in props.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


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
    kafka: dict[str, str] | None = None,
    admin_conf: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[Deployment]:
    """``kafka``: the peers' ``[kafka]`` table; ``admin_conf``: how the routes are written
    (both for a secured cluster, whose ``kafka_admin`` logs in as its admin)."""
    group = f"g-{uuid.uuid4().hex[:10]}"
    control = f"{group}.control"
    ensure_control_topic(kafka_admin, control, shards, None, bootstrap=bootstrap)
    config = write_config(
        tmp_path / f"{group}.toml",
        {"bootstrap": bootstrap, "group": group, **FAST, **settings},
        {"servers": servers},
        kafka_producer,
        kafka,
    )
    dep = Deployment(bootstrap, group, control, shards, config, admin_conf=dict(admin_conf or {}))
    dep.write_routes(routes)
    try:
        yield dep
    except BaseException:
        dep.close(failed=True)  # the test failed: its peers' logs are kept (paths on stderr)
        raise
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

    def delivered(self) -> Delivered:
        """What the exactly-once verdict reads of it."""
        return Delivered.from_kafka(
            self.topic, self.partition, self.offset, self.headers.items(), self.value
        )


def read_committed(
    bootstrap: str,
    topics: Iterable[str],
    timeout: float = 4.0,
    login: dict[str, Any] | None = None,
) -> list[Seen]:
    """The committed records of ``topics`` up to their end (read_committed).

    A partition held back by an open transaction reports no end: after ``timeout`` what was
    read is returned, so callers wait on counts with their own deadlines. A topic that does
    not exist yet reads as empty. ``login``: a secured cluster's client properties.
    """
    consumer = Consumer(
        {
            **(login or {}),
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
    """Each (subject, epoch, seq) once, in order per subject, one partition per subject
    (:func:`peer.testing.verdict.judge`, asserted).

    ``expected``: subject -> the (epoch, seq) list that must be seen exactly (no loss); a
    test may publish more than it lists, so other records are not held against the peers.
    Returns what was seen per subject, in offset order.
    """
    ordered = sorted(records, key=lambda r: (r.topic, r.partition, r.offset))
    delivered = [r.delivered() for r in ordered]
    for rec in delivered:
        assert rec.position is not None, f"record without md.* headers: {rec}"
    for v in judge(expected or {}, delivered, exhaustive=False):
        assert v.partitions <= 1, f"{v.subject} spread over {v.partitions} partitions"
        assert v.duplicates == 0, f"{v.subject}: {v.duplicates} duplicates"
        assert v.order_violations == 0, f"{v.subject}: {v.order_violations} out of order"
        missing = v.unreported_positions  # no gaps are reported to it: every missing one
        assert not missing, f"{v.subject}: {len(missing)} missing, first {list(missing[:5])}"
    by_subject: dict[str, list[tuple[int, int]]] = {}
    for seen in ordered:
        by_subject.setdefault(seen.subject, []).append((seen.epoch, seen.seq))
    return by_subject


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
