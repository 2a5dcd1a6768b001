"""What a downstream application sees: a read_committed consumer of whole topics.

Manual assignment from offset 0 and no group offsets, so it never joins or disturbs the
peers' group. The chaos checker and the demo's counter are such readers; they differ only in
what they keep of a record and in how they poll.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

#: how long one poll blocks; also bounds how long ``stop`` waits for the thread
POLL_S = 0.2


class CommittedThreadReader:
    """A consumer (``conf``: its librdkafka properties) and, once started, the background
    thread that reads it; subclasses read in :meth:`_run` until ``_stop`` is set."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self._consumer = Consumer(conf)
        self._lock = threading.Lock()
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _assign(self, topics: Iterable[str], timeout: float) -> list[TopicPartition]:
        """Every partition of ``topics`` from offset 0; KafkaException if one is missing."""
        md = self._consumer.list_topics(timeout=timeout)
        tps: list[TopicPartition] = []
        for topic in topics:
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                raise KafkaException(f"topic {topic!r} is not available to the checker")
            tps += [TopicPartition(topic, p, 0) for p in sorted(meta.partitions)]
        self._consumer.assign(tps)
        return tps

    def _start_thread(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the thread and close the consumer (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(POLL_S * 10 + 5)
        self._consumer.close()


__all__ = ["POLL_S", "CommittedThreadReader"]
