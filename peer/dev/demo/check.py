"""The demo's witness: a read_committed consumer of the target topics.

It counts what a downstream application would see per topic and checks, per subject, the
promise of the peers (DESIGN I4/I5) with the exactly-once verdict (:mod:`peer.testing.verdict`):
each published (epoch, seq) exactly once, in seq order, all in one partition. It reads the
``md.subject``/``md.epoch``/``md.seq`` headers the peers put on every record.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from peer.testing.reader import POLL_S, CommittedThreadReader
from peer.testing.verdict import Delivered, SubjectVerdict, judge


class CommittedCounter(CommittedThreadReader):
    """Consumes ``topics`` from the beginning with ``read_committed`` in a background thread
    (manual assignment: :class:`peer.testing.reader.CommittedThreadReader`)."""

    def __init__(
        self,
        bootstrap: str,
        topics: Iterable[str],
        header_prefix: str = "md.",
        logger: logging.Logger | None = None,
    ) -> None:
        self.topics = tuple(topics)
        self._prefix = header_prefix
        super().__init__(
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
        self._per_topic: Counter[str] = Counter()
        self._delivered: list[Delivered] = []
        #: subject -> the (epoch, seq) of its records, in arrival order
        self._subjects: dict[str, list[tuple[int, int]]] = defaultdict(list)

    def start(self, timeout: float = 10.0) -> None:
        self._assign(self.topics, timeout)
        self._start_thread("demo-check")

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(POLL_S)
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
            if rec.subject is not None and pos is not None:  # the verdict judges the others
                self._subjects[rec.subject].append(pos)

    # -- reading ---------------------------------------------------------------------------

    def per_topic(self) -> dict[str, int]:
        with self._lock:
            return {t: self._per_topic.get(t, 0) for t in self.topics}

    def per_subject(self) -> dict[str, int]:
        with self._lock:
            return {s: len(positions) for s, positions in self._subjects.items()}

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
