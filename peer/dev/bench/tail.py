"""The checker: a read_committed consumer of a target topic, in a thread of the script."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence

from confluent_kafka import Consumer, TopicPartition

from peer.testing.verdict import Delivered, Pos, SubjectVerdict, judge


class Tail:
    """Reads one topic from the beginning with ``isolation.level=read_committed``.

    Per record: arrival time (monotonic and wall), (subject, epoch, seq) for progress and
    duplicates, where it was (for the exactly-once verdict, :meth:`check`), and, while
    ``latency_from`` (wall time) is set, arrival minus ``md.closure`` (the generator's
    publish time in ms) as a latency sample.
    """

    def __init__(self, bootstrap: str, topic: str, keep: bool = True) -> None:
        self.keep = keep
        self.count = 0
        self.bytes = 0
        self.first_mono: float | None = None
        self.last_mono: float | None = None
        self.seen: set[tuple[str, int, int]] = set()
        self.duplicates = 0
        self.latencies_ms: list[float] = []
        self.latency_from: float | None = None
        self.arrivals: dict[str, list[float]] = {}  # subject -> monotonic arrival times
        self._lock = threading.Lock()
        self._delivered: list[Delivered] = []
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-tail-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
            }
        )
        md = self._consumer.list_topics(topic, timeout=10)
        parts = md.topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # Stamped when the first record is handed over: consume(n, timeout) would wait
            # out its whole timeout unless n records come, and stamp them that much late.
            first = self._consumer.poll(0.05)
            if first is None:
                continue
            mono, wall = time.monotonic(), time.time()
            msgs = [first, *self._consumer.consume(4999, 0)]  # what came with it
            batch: list[Delivered] = []
            for msg in msgs:
                if msg.error() is not None:
                    continue
                headers: dict[str, bytes] = {}
                for pair in msg.headers() or []:
                    name, raw = pair[0], pair[1]
                    headers[str(name)] = raw if isinstance(raw, bytes) else str(raw or "").encode()
                rec = Delivered.from_kafka(
                    str(msg.topic()),
                    int(msg.partition() or 0),
                    int(msg.offset() or 0),
                    list(headers.items()),
                    None,  # the generator's bytes are not checked: they name no position
                )
                batch.append(rec)
                subject = rec.subject or ""
                key = (subject, rec.epoch or 0, rec.seq or 0)
                if key in self.seen:
                    self.duplicates += 1
                else:
                    self.seen.add(key)
                if self.keep:
                    self.arrivals.setdefault(subject, []).append(mono)
                closure = headers.get("md.closure")
                if self.latency_from is not None and wall >= self.latency_from and closure:
                    self.latencies_ms.append(wall * 1000 - int(closure))
                self.count += 1
                self.bytes += len(msg.value() or b"")
            with self._lock:  # once a batch: the reader keeps up with a peer at full speed
                self._delivered.extend(batch)
            if self.first_mono is None:
                self.first_mono = mono
            self.last_mono = mono

    def first_after(self, subject: str, t: float) -> float | None:
        """When the first record of ``subject`` arriving after monotonic ``t`` arrived."""
        for arrival in self.arrivals.get(subject, []):
            if arrival > t:
                return arrival
        return None

    def check(
        self, expected: Mapping[str, Sequence[Pos]], *, exhaustive: bool = True
    ) -> list[SubjectVerdict]:
        """The exactly-once verdict over every record read so far (no gaps are expected:
        the benchmarks' servers keep every message they are asked for)."""
        with self._lock:
            delivered = list(self._delivered)
        return judge(expected, delivered, exhaustive=exhaustive)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()

    def __enter__(self) -> Tail:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
