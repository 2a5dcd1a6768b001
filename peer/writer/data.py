"""Data records in the open transaction, a batch of one subject's messages at a time.

What a subject's records share (topic, partition, key, header names, size limit, delivery
callback) is a :class:`~peer.writer.records.RecordTemplate`, looked up once per batch; per
message only the headers that differ (seq, type, closure, retained) and the size are built
before ``produce``. The batch stops at the first message its route cannot take (a
:class:`~peer.kafka.errors.RouteFaultError`: nothing of that message is produced), and says
how far it got, so the caller's checkpoint covers exactly what was handled.

Oversize messages follow the route's ``on_oversize`` (skip, dead-letter, fail), message by
message, as before batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from peer.kafka.errors import OversizeError, RouteFaultError, WriterStateError, kafka_error_of
from peer.model import Message
from peer.routes.model import Oversize, Route
from peer.writer.failures import produce_error
from peer.writer.outbox import Outbox
from peer.writer.records import (
    BatchResult,
    RecordTemplate,
    WriteOutcome,
    WriterStats,
    dead_letter_record,
    java_partition,
    partition_basis,
)
from peer.writer.topics import TopicCatalog

log = logging.getLogger("peer.writer")


@dataclass(slots=True)
class OpenTxn:
    """The open transaction's counts."""

    started: float
    records: int = 0
    skipped: int = 0
    dead_lettered: int = 0


class RecordWriter:
    """Produces data records through an :class:`Outbox`; the writer's, one thread only."""

    def __init__(
        self,
        out: Outbox,
        topics: TopicCatalog,
        *,
        header_prefix: str,
        message_max_bytes: int,
        stats: WriterStats,
        context: Callable[..., dict[str, Any]],
    ) -> None:
        self._out = out
        self.topics = topics
        self.header_prefix = header_prefix
        self.message_max_bytes = message_max_bytes
        self.stats = stats
        self._extra = context
        self._templates: dict[str, RecordTemplate] = {}

    def forget(self) -> None:
        """Templates carry partitions and size limits: look them up afresh."""
        self._templates.clear()

    def partition_for(self, route: Route, timeout: float | None = None) -> int:
        """The partition of ``route``'s records: by key, or by subject when keyless (I5).

        A topic that is missing, being created or refused raises a
        :class:`~peer.kafka.errors.RouteFaultError` (see :mod:`peer.writer.topics`).
        """
        count = self.topics.partitions(route.topic, route.subject, timeout=timeout)
        return java_partition(partition_basis(route), count)

    def limit_of(self, topic: str) -> int:
        """The record size limit for ``topic``: the producer's, or the topic's own if lower
        and known (learned after the topic refused a batch)."""
        known = self.topics.limit(topic)
        return self.message_max_bytes if known is None else min(known, self.message_max_bytes)

    def write_batch(self, txn: OpenTxn, messages: Sequence[Message], route: Route) -> BatchResult:
        """Produce ``messages`` (``route``'s subject's, in order) in the open transaction."""
        result = BatchResult()
        if not messages:
            return result
        try:
            template = self._templates.get(route.subject)
            if template is None or template.route is not route:
                template = self._template(messages[0], route)
            self._produce(txn, messages, template, result)
        except RouteFaultError as exc:
            result.fault = exc
        return result

    def _produce(
        self, txn: OpenTxn, messages: Sequence[Message], template: RecordTemplate, out: BatchResult
    ) -> None:
        route = template.route
        topic, partition, key = route.topic, template.partition, template.key
        report, limit, headers_and_size = template.report, template.limit, template.headers_and_size
        outbox = self._out
        produce = outbox.producer.produce
        # The queue bound (I7) is asked once per stretch of records that fits under it.
        check_at = done = 0
        try:
            for done, message in enumerate(messages):  # how far it got, if it raises
                headers, size = headers_and_size(message)
                if size <= limit:
                    if done >= check_at:
                        check_at = done + outbox.room()
                    try:
                        try:
                            produce(
                                topic,
                                message.content,
                                key,
                                partition=partition,
                                headers=headers,  # type: ignore[arg-type]  # stubs: wider values
                                on_delivery=report,
                            )
                        except BufferError:  # the local queue is full: serve it and wait
                            outbox.produce(
                                topic, partition, key, message.content, headers, report=report
                            )
                        continue
                    except KafkaException as exc:
                        err = kafka_error_of(exc)
                        if err is None or err.code() != KafkaError.MSG_SIZE_TOO_LARGE:
                            raise produce_error(exc, route.subject, topic, outbox.producer) from exc
                        # librdkafka counts the record differently than record_size: same policy
                if self._oversize(message, route, txn, size, limit) is WriteOutcome.SKIPPED:
                    out.skipped += 1
                else:
                    out.dead_lettered += 1
            done = len(messages)
        finally:
            out.done = done
            txn.records += out.written
            self.stats.written += out.written

    def _template(self, message: Message, route: Route) -> RecordTemplate:
        if message.subject != route.subject:
            raise WriterStateError(
                f"write(): message of {message.subject!r} given the route of {route.subject!r}"
            )
        template = RecordTemplate(
            route,
            self.partition_for(route),
            self.header_prefix,
            self._out.reporter(route.topic, message.subject),
            self.limit_of(route.topic),
        )
        self._templates[message.subject] = template
        return template

    def _oversize(
        self, message: Message, route: Route, txn: OpenTxn, size: int, limit: int
    ) -> WriteOutcome:
        extra = self._extra(
            subject=message.subject,
            topic=route.topic,
            position=str(message.position),
            size=size,
            limit=limit,
        )
        if route.on_oversize is Oversize.FAIL:
            raise OversizeError(
                message.subject, message.epoch, message.seq, size, limit, topic=route.topic
            )
        if route.on_oversize is Oversize.SKIP:
            log.warning("oversize message skipped", extra=extra)
            txn.skipped += 1
            self.stats.skipped_oversize += 1
            return WriteOutcome.SKIPPED
        self._dead_letter(message, route, size)
        log.warning("oversize message dead-lettered", extra=extra)
        txn.records += 1
        txn.dead_lettered += 1
        self.stats.dead_lettered += 1
        return WriteOutcome.DEAD_LETTERED

    def _dead_letter(self, message: Message, route: Route, size: int) -> None:
        """Produce the truncated copy (:func:`dead_letter_record`) to the dead-letter topic."""
        dlq = route.dead_letter_topic
        assert dlq is not None  # Route guarantees it for Oversize.DEAD_LETTER
        limit = self.limit_of(dlq)
        key, value, headers = dead_letter_record(message, route, size, limit, self.header_prefix)
        count = self.topics.partitions(dlq, message.subject)
        try:
            self._out.produce(
                dlq,
                java_partition(partition_basis(route), count),
                key,
                value,
                headers,
                report=self._out.reporter(dlq, message.subject),
            )
        except KafkaException as exc:
            raise produce_error(exc, message.subject, dlq, self._out.producer) from exc


__all__ = ["OpenTxn", "RecordWriter"]
