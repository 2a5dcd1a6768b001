"""The demo's witness: a read_committed consumer of the target topics.

It counts what a downstream application would see per topic and checks, per subject, the
promise of the peers (DESIGN I4/I5): each published (epoch, seq) exactly once, in seq order,
all in one partition. It reads the ``md.subject``/``md.epoch``/``md.seq`` headers the peers
put on every record.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

#: how long one poll blocks; also bounds how long ``stop`` waits for the thread
_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class SubjectCheck:
    """The exactly-once verdict of one subject."""

    subject: str
    expected: int
    delivered: int
    duplicates: int
    missing: int
    order_violations: int
    #: (topic, partition) pairs its records were found in; more than one breaks order
    placements: int
    #: records whose (epoch, seq) the server never published (should be 0)
    unexpected: int

    @property
    def ok(self) -> bool:
        return (
            self.duplicates == 0
            and self.missing == 0
            and self.order_violations == 0
            and self.unexpected == 0
            and self.placements <= 1
        )

    def line(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (
            f"exactly-once {self.subject}: expected {self.expected}, delivered "
            f"{self.delivered}, duplicates {self.duplicates}, missing {self.missing}, "
            f"order violations {self.order_violations}, unexpected {self.unexpected}, "
            f"partitions {self.placements}: {verdict}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "expected": self.expected,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "order_violations": self.order_violations,
            "unexpected": self.unexpected,
            "partitions": self.placements,
            "ok": self.ok,
        }


@dataclass
class _SubjectSeen:
    positions: list[tuple[int, int]] = field(default_factory=list)
    placements: set[tuple[str, int]] = field(default_factory=set)
    order_violations: int = 0


def _header(headers: Iterable[tuple[str, Any]] | None, name: str) -> str | None:
    for key, raw in headers or ():
        if key == name:
            if isinstance(raw, bytes):
                return raw.decode("utf-8", "replace")
            return None if raw is None else str(raw)
    return None


class CommittedCounter:
    """Consumes ``topics`` from the beginning with ``read_committed`` in a background thread.

    Uses no consumer group offsets (manual assignment), so it never joins or disturbs the
    peers' group and always starts from offset 0.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Iterable[str],
        header_prefix: str = "md.",
        logger: logging.Logger | None = None,
    ) -> None:
        self.topics = tuple(topics)
        self._prefix = header_prefix
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"mdpeer-demo-check-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "client.id": "mdpeer-demo-check",
                **({} if logger is None else {"logger": logger}),
            }
        )
        self._lock = threading.Lock()
        self._per_topic: Counter[str] = Counter()
        self._subjects: dict[str, _SubjectSeen] = defaultdict(_SubjectSeen)
        self._no_headers = 0
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        md = self._consumer.list_topics(timeout=timeout)
        tps: list[TopicPartition] = []
        for topic in self.topics:
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                raise KafkaException(f"topic {topic!r} is not available to the checker")
            tps += [TopicPartition(topic, p, 0) for p in sorted(meta.partitions)]
        self._consumer.assign(tps)
        self._thread = threading.Thread(target=self._run, name="demo-check", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(_POLL_S)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                with self._lock:
                    self._errors.append(str(err))
                continue
            self._record(msg)

    def _record(self, msg: Any) -> None:
        topic, partition = str(msg.topic()), int(msg.partition())
        headers = msg.headers()
        subject = _header(headers, self._prefix + "subject")
        epoch = _header(headers, self._prefix + "epoch")
        seq = _header(headers, self._prefix + "seq")
        with self._lock:
            self._per_topic[topic] += 1
            if subject is None or epoch is None or seq is None:
                self._no_headers += 1
                return
            seen = self._subjects[subject]
            pos = (int(epoch), int(seq))
            # one partition per subject: offset order is the order a consumer sees
            if seen.positions and pos <= seen.positions[-1]:
                seen.order_violations += 1
            seen.positions.append(pos)
            seen.placements.add((topic, partition))

    def stop(self) -> None:
        """Stop the thread and close the consumer (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_POLL_S * 10 + 5)
        self._consumer.close()

    # -- reading ---------------------------------------------------------------------------

    def per_topic(self) -> dict[str, int]:
        with self._lock:
            return {t: self._per_topic.get(t, 0) for t in self.topics}

    def per_subject(self) -> dict[str, int]:
        with self._lock:
            return {s: len(seen.positions) for s, seen in self._subjects.items()}

    def records_without_headers(self) -> int:
        with self._lock:
            return self._no_headers

    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    def distinct(self, subject: str) -> int:
        with self._lock:
            seen = self._subjects.get(subject)
            return 0 if seen is None else len(set(seen.positions))

    def check(self, published: Mapping[str, tuple[int, int]]) -> list[SubjectCheck]:
        """Verdicts against ``published``: subject → (epoch, head seq).

        The demo never changes an epoch, so a subject's messages are seqs 1..head of it.
        """
        out: list[SubjectCheck] = []
        with self._lock:
            for subject in sorted(set(published) | set(self._subjects)):
                epoch, head = published.get(subject, (0, 0))
                want = {(epoch, s) for s in range(1, head + 1)}
                seen = self._subjects.get(subject, _SubjectSeen())
                counts = Counter(seen.positions)
                got = set(counts)
                out.append(
                    SubjectCheck(
                        subject=subject,
                        expected=len(want),
                        delivered=len(seen.positions),
                        duplicates=sum(n - 1 for n in counts.values()),
                        missing=len(want - got),
                        order_violations=seen.order_violations,
                        placements=len(seen.placements),
                        unexpected=len(got - want),
                    )
                )
        return out
