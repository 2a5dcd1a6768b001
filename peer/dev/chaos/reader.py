"""The checker's eyes: a read_committed consumer of the target topics and the audit topic
(:class:`peer.testing.reader.CommittedThreadReader`). One runs for the whole chaos run (so the
drain can tell when every subject's last message is visible); the verdict is made on what a
fresh one reads from offset 0 to the end of every partition once the peers have stopped.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from peer.dev.chaos.content import parse
from peer.testing.reader import POLL_S, CommittedThreadReader
from peer.testing.verdict import Delivered, Gap, gap_from_fields


class CommittedReader(CommittedThreadReader):
    def __init__(
        self,
        bootstrap: str,
        topics: Iterable[str],
        audit_topic: str | None,
        *,
        header_prefix: str = "md.",
        logger: Any = None,
    ) -> None:
        self.topics = tuple(topics)
        self.audit_topic = audit_topic
        self._prefix = header_prefix
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-check-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "client.id": "mdpeer-chaos-check",
            "enable.partition.eof": True,
        }
        if logger is not None:
            conf["logger"] = logger
        super().__init__(conf)
        self._records: list[Delivered] = []
        self._gaps: list[Gap] = []
        #: subject -> highest content counter seen (drain progress)
        self._latest: dict[str, int] = {}
        self._tps: list[TopicPartition] = []

    def _assign_all(self) -> None:
        wanted = [*self.topics, *([self.audit_topic] if self.audit_topic else [])]
        self._tps = self._assign(wanted, 30.0)

    def start(self) -> None:
        """Read in a background thread (progress while the run goes on)."""
        self._assign_all()
        self._start_thread("chaos-reader")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msgs = self._consumer.consume(500, POLL_S)
            except KafkaException as exc:  # the consumer was closed under us, or a fatal error
                with self._lock:
                    self._errors.append(str(exc))
                time.sleep(POLL_S)
                continue
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    # partition EOF and transient broker errors while a node is down
                    if not err.retriable() and err.code() != KafkaError._PARTITION_EOF:
                        with self._lock:
                            self._errors.append(str(err))
                    continue
                self._take(msg)

    def _take(self, msg: Any) -> None:
        topic = str(msg.topic())
        value = msg.value()
        if topic == self.audit_topic:
            try:
                fields = json.loads(value or b"")
            except ValueError:
                fields = None
            gap = gap_from_fields(fields, "audit") if isinstance(fields, dict) else None
            with self._lock:
                if gap is None:
                    self._errors.append(f"unreadable audit record at offset {msg.offset()}")
                else:
                    self._gaps.append(gap)
            return
        rec = Delivered.from_kafka(
            topic,
            int(msg.partition()),
            int(msg.offset()),
            msg.headers(),
            value,
            prefix=self._prefix,
        )
        claimed = parse(value)
        with self._lock:
            self._records.append(rec)
            if claimed is not None:
                subject, counter = claimed
                if counter > self._latest.get(subject, 0):
                    self._latest[subject] = counter

    def latest(self) -> dict[str, int]:
        with self._lock:
            return dict(self._latest)

    def read_to_end(self, timeout: float) -> bool:
        """Read every partition from offset 0 to its end, in this thread (instead of
        :meth:`start`); the end, for read_committed, is the last stable offset, which
        librdkafka signals with a partition-EOF event. False if ``timeout`` ran out first."""
        self._assign_all()
        pending = {(tp.topic, tp.partition) for tp in self._tps}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in self._consumer.consume(500, 0.5):
                err = msg.error()
                if err is None:
                    self._take(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard((str(msg.topic()), int(msg.partition() or 0)))
                elif not err.retriable():
                    with self._lock:
                        self._errors.append(str(err))
        return not pending

    def snapshot(self) -> tuple[list[Delivered], list[Gap], list[str]]:
        with self._lock:
            return list(self._records), list(self._gaps), list(self._errors)
