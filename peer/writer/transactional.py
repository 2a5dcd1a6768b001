"""The transactional writer itself (see :mod:`peer.writer` for what it guarantees)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer, TopicPartition

from peer.control import encode_checkpoint
from peer.control.shards import shard_of
from peer.errors import ConfigError
from peer.kafka.clients import drain
from peer.kafka.errors import (
    KafkaWriteError,
    RecordsRefusedError,
    WriterStateError,
    call_with_retry,
    classify,
)
from peer.model import Message, Position
from peer.routes.model import Route
from peer.writer.data import OpenTxn, RecordWriter
from peer.writer.failures import commit_error, produce_error
from peer.writer.outbox import CallAbandonedError, Outbox, off_main_thread
from peer.writer.records import (
    DEFAULT_MESSAGE_MAX_BYTES,
    BatchResult,
    CommitStats,
    WriteOutcome,
    WriterStats,
    java_partition,
)
from peer.writer.topics import TopicCatalog

log = logging.getLogger("peer.writer")


class TransactionalWriter:
    """Drives one transactional producer; used from one thread (the peer's main loop)."""

    def __init__(
        self,
        producer: Producer,
        *,
        control_topic: str,
        control_partitions: int,
        header_prefix: str = "md.",
        max_in_flight: int = 50_000,
        message_max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES,
        transactional_id: str = "",
        operation_timeout: float = 30.0,
        queue_full_timeout: float = 30.0,
        retry_attempts: int = 5,
        retry_backoff_max: float = 1.0,
        topics: TopicCatalog | None = None,
        abandon: Callable[[], bool] | None = None,
    ) -> None:
        if control_partitions < 1:
            raise ConfigError("control_partitions", control_partitions, "must be at least 1")
        if max_in_flight < 1:
            raise ConfigError("max_in_flight", max_in_flight, "must be at least 1")
        if message_max_bytes < 1000:
            raise ConfigError("message_max_bytes", message_max_bytes, "must be at least 1000")
        if retry_attempts < 1:
            raise ConfigError("retry_attempts", retry_attempts, "must be at least 1")
        self.control_topic = control_topic
        self.control_partitions = control_partitions
        self.header_prefix = header_prefix
        self.max_in_flight = max_in_flight
        self.message_max_bytes = message_max_bytes
        self.transactional_id = transactional_id
        self.operation_timeout = operation_timeout
        self.queue_full_timeout = queue_full_timeout
        self.retry_attempts = retry_attempts
        self.retry_backoff_max = retry_backoff_max
        self.stats = WriterStats()
        #: when to stop waiting for a blocked transactional call (the peer is stopping)
        self.abandon = abandon
        #: a call was left running in librdkafka: no other transactional call may start
        self.abandoned = False
        self._out = Outbox(
            producer,
            stats=self.stats,
            max_in_flight=max_in_flight,
            queue_full_timeout=queue_full_timeout,
            context=self._extra,
        )
        #: partition counts, size limits and missing topics (the topic_creation policy)
        self.topics = topics or TopicCatalog(producer)
        self._txn: OpenTxn | None = None
        self._checkpoints: dict[str, tuple[Position, str | None]] = {}
        #: other control records of the open transaction (block notes), key -> value
        self._control: dict[bytes, tuple[bytes | None, str, int]] = {}
        self._records = RecordWriter(
            self._out,
            self.topics,
            header_prefix=header_prefix,
            message_max_bytes=message_max_bytes,
            stats=self.stats,
            context=self._extra,
        )

    # --- state -------------------------------------------------------------------------------

    @property
    def transaction_open(self) -> bool:
        return self._txn is not None

    @property
    def transaction_records(self) -> int:
        """Data records produced in the open transaction (0 when none is open)."""
        return self._txn.records if self._txn is not None else 0

    @property
    def transaction_opened(self) -> float | None:
        """When the open transaction began (``time.monotonic()``), None when none is open."""
        return self._txn.started if self._txn is not None else None

    def transaction_age(self) -> float:
        """Seconds since begin(), so the caller commits well before transaction.timeout.ms."""
        return time.monotonic() - self._txn.started if self._txn is not None else 0.0

    def in_flight(self) -> int:
        """The producer's queue length, for backpressure (I7).

        librdkafka's out-queue: records not yet acknowledged plus delivery reports not yet
        served; :meth:`write` and :meth:`commit` serve them.
        """
        return len(self._out.producer)

    def _extra(self, **more: Any) -> dict[str, Any]:
        return {"txn": self.transactional_id, **more}

    # --- lifecycle ---------------------------------------------------------------------------

    def init(self, timeout: float | None = None) -> None:
        """Register the transactional.id (fencing older instances); check the control topic."""
        budget = self.operation_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        call_with_retry(
            lambda: self._out.producer.init_transactions(budget),
            op="init_transactions",
            attempts=self.retry_attempts,
            budget=budget,
            backoff_max=self.retry_backoff_max,
        )
        count = self.topics.partitions(
            self.control_topic, create=False, timeout=max(deadline - time.monotonic(), 1)
        )
        if count != self.control_partitions:
            raise ConfigError(
                "control_partitions",
                self.control_partitions,
                f"the control topic {self.control_topic!r} has {count} partitions",
            )
        log.info("transactional producer ready", extra=self._extra())

    def begin(self) -> None:
        if self._txn is not None:
            raise WriterStateError("begin(): a transaction is already open")
        try:
            self._out.producer.begin_transaction()
        except KafkaException as exc:
            raise classify(exc, op="begin_transaction") from exc
        self._txn = OpenTxn(started=time.monotonic())
        self._checkpoints.clear()
        self._control.clear()
        self._out.failures.clear()

    def _open(self, op: str) -> OpenTxn:
        if self._txn is None:
            raise WriterStateError(f"{op}(): no transaction is open (call begin() first)")
        return self._txn

    # --- data --------------------------------------------------------------------------------

    def limit_of(self, topic: str) -> int:
        """The record size limit for ``topic``: the producer's, or the topic's own if lower
        and known (learned after the topic refused a batch)."""
        return self._records.limit_of(topic)

    def write_batch(self, messages: Sequence[Message], route: Route) -> BatchResult:
        """Produce ``messages`` (of ``route``'s subject, in seq order) in the open transaction.

        It stops before the first message the route cannot take (topic missing or refused,
        oversize under ``fail``): ``fault`` says why, ``done`` how many were handled before
        it (:mod:`peer.writer.data`). Other failures raise, as for :meth:`write`.
        """
        txn = self._txn
        if txn is None:
            txn = self._open("write")
        return self._records.write_batch(txn, messages, route)

    def write(self, message: Message, route: Route) -> WriteOutcome:
        """Produce ``message`` to ``route``'s topic in the open transaction; a fault of its
        route raises (:class:`~peer.kafka.errors.RouteFaultError`)."""
        result = self.write_batch([message], route)
        if result.fault is not None:
            raise result.fault
        if result.written:
            return WriteOutcome.WRITTEN
        return WriteOutcome.SKIPPED if result.skipped else WriteOutcome.DEAD_LETTERED

    # --- checkpoints and commit ---------------------------------------------------------------

    def checkpoint(self, subject: str, position: Position, cmd_id: str | None = None) -> None:
        """Record ``subject``'s position in the open transaction; produced at commit (last wins).

        A command id given earlier in the same transaction is kept when a later call for the
        subject has none, so an acknowledged reset command is never "un-acknowledged".
        """
        self._open("checkpoint")
        before = self._checkpoints.get(subject)
        if cmd_id is None and before is not None:
            cmd_id = before[1]
        self._checkpoints[subject] = (position, cmd_id)

    def control_record(
        self, key: bytes, value: bytes | None, subject: str, *, partition: int | None = None
    ) -> None:
        """Another control record for the open transaction (a block note, a peer's report, or
        their tombstones), produced at commit: to ``subject``'s shard, or to ``partition``
        for a record of no subject. The last value per key wins."""
        self._open("control_record")
        if partition is None:
            partition = shard_of(subject, self.control_partitions)
        self._control[key] = (value, subject, partition)

    def audit(self, topic: str, key: bytes | None, value: bytes, subject: str) -> None:
        """An audit record (e.g. a gap report) in the open transaction, like any data record:
        the same queue bounds, delivery report and missing-topic handling."""
        self._open("audit")
        count = self.topics.partitions(topic, subject)
        basis = key if key is not None else subject.encode("utf-8")
        try:
            self._out.produce(
                topic,
                java_partition(basis, count),
                key,
                value,
                None,
                report=self._out.reporter(topic, subject),
            )
        except KafkaException as exc:
            raise produce_error(exc, subject, topic, self._out.producer) from exc

    def commit(
        self,
        offsets: Sequence[TopicPartition],
        group_metadata: object,
        timeout: float | None = None,
    ) -> CommitStats:
        """Produce the checkpoints, send ``offsets`` with ``group_metadata``, commit.

        ``offsets`` are the control-topic positions (next offset to read) of the owned
        partitions; librdkafka ignores an empty list, so a peer must pass its positions for
        the group metadata to be checked (I3).
        """
        txn = self._open("commit")
        budget = self.operation_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        try:
            for subject, (position, cmd) in self._checkpoints.items():
                key, value = encode_checkpoint(subject, position.epoch, position.seq, cmd=cmd)
                self._produce_control(key, value, subject)
            for ckey, (cvalue, csubject, cpart) in self._control.items():
                self._produce_control(ckey, cvalue, csubject, cpart)
            if offsets:
                producer = self._out.producer
                self._call(
                    "send_offsets_to_transaction",
                    lambda t: producer.send_offsets_to_transaction(
                        list(offsets), group_metadata, t
                    ),
                    deadline,
                    budget,
                )
            self._call(
                "commit_transaction", self._out.producer.commit_transaction, deadline, budget
            )
        except KafkaWriteError as exc:
            raise self._commit_failed(exc) from exc
        stats = CommitStats(
            records=txn.records,
            checkpoints=len(self._checkpoints),
            skipped=txn.skipped,
            dead_lettered=txn.dead_lettered,
            offsets=len(offsets),
            duration_s=time.monotonic() - txn.started,
        )
        self.stats.commits += 1
        self.stats.checkpoints += stats.checkpoints
        log.debug(
            "transaction committed",
            extra=self._extra(
                records=stats.records,
                checkpoints=stats.checkpoints,
                subjects=sorted(self._checkpoints)[:20],
                duration_s=round(stats.duration_s, 4),
            ),
        )
        self._txn = None
        self._checkpoints.clear()
        self._control.clear()
        return stats

    def _commit_failed(self, exc: KafkaWriteError) -> KafkaWriteError:
        """The error to raise for a failed commit (:func:`~peer.writer.failures.commit_error`)."""
        self._out.drain(1.0)  # the delivery reports not yet seen name what was refused
        error = commit_error(
            exc,
            self._out.failures,
            control_topic=self.control_topic,
            learn_limit=self._learn_limit,
            known_limit=self.topics.limit,
            unauthorized=self.topics.unauthorized,
        )
        log.log(
            logging.WARNING if isinstance(error, RecordsRefusedError) else logging.ERROR,
            "commit failed",
            extra=self._extra(
                error=type(error).__name__,
                code=error.code,
                subjects=sorted(self._checkpoints)[:20],
                failed_deliveries=len(self._out.failures),
                causes=sorted({f.name for f in self._out.failures}),
            ),
        )
        return error

    def _learn_limit(self, topic: str) -> int | None:
        limit = self.topics.learn_limit(topic)
        if limit is not None:
            self._records.forget()  # templates carry the size limit of their topic
        return limit

    def abort(self, timeout: float | None = None) -> None:
        """Abort the open transaction: nothing of it becomes visible (I2)."""
        if self._txn is None:
            return
        budget = self.operation_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        self._call("abort_transaction", self._out.producer.abort_transaction, deadline, budget)
        log.info(
            "transaction aborted",
            extra=self._extra(records=self._txn.records, subjects=sorted(self._checkpoints)[:20]),
        )
        self.stats.aborts += 1
        self._txn = None
        self._checkpoints.clear()
        self._control.clear()
        self._out.failures.clear()

    def _call(
        self, op: str, call: Callable[[float], object], deadline: float, budget: float
    ) -> None:
        """A transactional call: off the main thread, retried while retriable, and left
        running once the peer stops waiting (then no other may start: :attr:`abandoned`)."""
        if self.abandoned:
            raise CallAbandonedError(
                f"stopping: {op} not started, an earlier call is still running in the client"
            )
        try:
            call_with_retry(
                lambda: off_main_thread(call, deadline, self.abandon),
                op=op,
                attempts=self.retry_attempts,
                budget=budget,
                backoff_max=self.retry_backoff_max,
            )
        except CallAbandonedError:
            self.abandoned = True
            raise

    # --- producing ----------------------------------------------------------------------------

    def _produce_control(
        self, key: bytes, value: bytes | None, subject: str, partition: int | None = None
    ) -> None:
        if partition is None:
            partition = shard_of(subject, self.control_partitions)
        report = self._out.reporter(self.control_topic, subject)
        try:
            self._out.produce(self.control_topic, partition, key, value, None, report=report)
        except KafkaException as exc:
            raise produce_error(exc, subject, self.control_topic, self._out.producer) from exc

    # --- metadata -----------------------------------------------------------------------------

    def flush(self, timeout: float) -> None:
        """Serve what the producer still has queued (after the last commit, at shutdown)."""
        drain(self._out.producer, timeout)

    def forget_metadata(self, topic: str | None = None) -> None:
        """Drop what is cached of ``topic`` (all: None), e.g. after it was deleted or created."""
        self.topics.forget(topic)
        self._records.forget()

    def replace_producer(self, producer: Producer, timeout: float | None = None) -> None:
        """Go on with a new producer of the same transactional.id (the old one could not
        abort, or failed fatally without being fenced): its ``init_transactions`` aborts
        whatever the old one left open. The caller redoes every subject from its checkpoint.
        """
        try:
            self._out.producer.purge()  # nothing of the old one may be delivered any more
        except KafkaException as exc:
            log.debug("purging the replaced producer: %s", exc, extra=self._extra())
        self._out.producer = producer
        self.topics.set_producer(producer)
        self._txn = None
        self._checkpoints.clear()
        self._control.clear()
        self._out.failures.clear()
        self._records.forget()  # their delivery callbacks are fine; their topics re-checked
        self.init(timeout)


__all__ = ["TransactionalWriter"]
