"""The demo's witness: a read_committed consumer of the target topics.

It counts what a downstream application would see per topic and checks, per subject, the
promise of the peers (DESIGN I4/I5) with the exactly-once verdict (:mod:`peer.testing.verdict`):
each published (epoch, seq) exactly once, in seq order, all in one partition. It reads the
``md.subject``/``md.epoch``/``md.seq`` headers the peers put on every record.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from peer.testing.verdict import Delivered, SubjectVerdict, judge

#: how long one poll blocks; also bounds how long ``stop`` waits for the thread
_POLL_S = 0.2


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
        self._delivered: list[Delivered] = []
        #: subject -> the (epoch, seq) of its records, in arrival order
        self._subjects: dict[str, list[tuple[int, int]]] = defaultdict(list)
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
        rec = Delivered.from_kafka(
            str(msg.topic()),
            int(msg.partition()),
            int(msg.offset()),
            msg.headers(),
            None,  # the generator's bytes: nothing to compare them with
            prefix=self._prefix,
        )
        with self._lock:
            self._per_topic[rec.topic] += 1
            self._delivered.append(rec)
            pos = rec.position
            if rec.subject is None or pos is None:
                self._no_headers += 1
                return
            self._subjects[rec.subject].append(pos)

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
            return {s: len(positions) for s, positions in self._subjects.items()}

    def records_without_headers(self) -> int:
        with self._lock:
            return self._no_headers

    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    def distinct(self, subject: str) -> int:
        with self._lock:
            return len(set(self._subjects.get(subject, ())))

    def check(self, published: Mapping[str, tuple[int, int]]) -> list[SubjectVerdict]:
        """Verdicts against ``published``: subject → (epoch, head seq).

        The demo never changes an epoch and its server keeps every message, so a subject's
        messages are seqs 1..head of it, every one expected, and no peer reports a gap.
        """
        expected = {
            s: [(epoch, seq) for seq in range(1, head + 1)]
            for s, (epoch, head) in published.items()
        }
        with self._lock:
            delivered = list(self._delivered)
        return judge(expected, delivered)
