"""The transactional writer itself (see :mod:`peer.writer` for what it guarantees)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage

from peer.control import encode_checkpoint
from peer.errors import ConfigError
from peer.kafkaerrors import (
    AbortRequiredError,
    KafkaWriteError,
    OversizeError,
    QueueFullError,
    TopicLimitError,
    TopicMissingError,
    WriterStateError,
    call_with_retry,
    classify,
)
from peer.routes import Oversize, Route
from peer.shards import shard_of
from peer.source.base import Message, Position
from peer.writer.records import (
    DEFAULT_MESSAGE_MAX_BYTES,
    CommitStats,
    DeliveryReport,
    Headers,
    RecordTemplate,
    WriteOutcome,
    WriterStats,
    dead_letter_record,
    java_partition,
    message_headers,
    partition_basis,
)

log = logging.getLogger("peer.writer")

#: how long one poll waits while the local queue drains
_DRAIN_POLL: Final = 0.05
#: delivery reports of records a failed transaction purged from the queue
_PURGED: Final = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


#: how often the main thread wakes while a transactional call runs (see _off_main_thread)
_WAKE_S: Final = 0.2


def _off_main_thread(call: Callable[[float], object], deadline: float) -> None:
    """Run a blocking transactional call (commit, abort, send offsets) in a helper thread
    while the main thread waits in Python.

    Python runs signal handlers only in the main thread, between bytecodes: a call blocked in
    librdkafka for an unreachable broker (``send_offsets_to_transaction`` does not honour
    short timeouts there) kept SIGTERM unanswered for 30 s (found by scripts/chaos.py). The
    call itself is unchanged and still one at a time: the main thread does nothing else
    until it returns, it only stays able to run the handler (which sets the stop flag).
    """
    outcome: list[BaseException | None] = []
    done = threading.Event()

    def run() -> None:
        try:
            call(max(deadline - time.monotonic(), 1.0))
            outcome.append(None)
        except BaseException as exc:  # handed to the main thread as is
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="mdpeer-txn-call", daemon=True).start()
    while not done.wait(_WAKE_S):
        pass
    if outcome and outcome[0] is not None:
        raise outcome[0]


def _produce_error(
    exc: KafkaException, subject: str, topic: str, producer: Producer | None = None
) -> KafkaWriteError:
    """What a failed ``produce`` in an open transaction means.

    librdkafka refuses to produce (``_STATE``) once the transaction has failed: that is an
    abort, not a crash (seen by scripts/chaos.py after a rebalance fenced a commit and the
    redo's first batch met "skipped sequence numbers, requires epoch bump"). If the producer
    is beyond repair, the abort says so and the peer exits then.

    A producer that hit a fatal error refuses with a bare ``_FATAL``; the cause (e.g. fenced
    by a newer instance) is raised by its next ``poll``: that is what gets classified (a CI
    run saw "Local: Fatal error" where the test expected the fencing it came from).
    """
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError) and err.code() == KafkaError._FATAL and producer is not None:
        try:
            producer.poll(0)
        except KafkaException as cause:
            return classify(cause, op="produce", subject=subject, topic=topic)
    if isinstance(err, KafkaError) and err.code() == KafkaError._STATE:
        return AbortRequiredError(
            f"the producer refused a record, its transaction has failed: {err.str()}",
            op="produce",
            subject=subject,
            topic=topic,
            code=err.name(),
        )
    return classify(exc, op="produce", subject=subject, topic=topic)


@dataclass(frozen=True, slots=True)
class _DeliveryFailure:
    topic: str
    subject: str
    #: bytes of the record's value
    size: int
    code: int
    name: str
    text: str


@dataclass(slots=True)
class _Txn:
    started: float
    records: int = 0
    skipped: int = 0
    dead_lettered: int = 0


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
    ) -> None:
        if control_partitions < 1:
            raise ConfigError("control_partitions", control_partitions, "must be at least 1")
        if max_in_flight < 1:
            raise ConfigError("max_in_flight", max_in_flight, "must be at least 1")
        if message_max_bytes < 1000:
            raise ConfigError("message_max_bytes", message_max_bytes, "must be at least 1000")
        if retry_attempts < 1:
            raise ConfigError("retry_attempts", retry_attempts, "must be at least 1")
        self._producer = producer
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
        self._partitions: dict[str, int] = {}
        self._txn: _Txn | None = None
        self._checkpoints: dict[str, tuple[Position, str | None]] = {}
        self._failures: list[_DeliveryFailure] = []
        self._templates: dict[str, RecordTemplate] = {}

    # --- state -------------------------------------------------------------------------------

    @property
    def transaction_open(self) -> bool:
        return self._txn is not None

    @property
    def transaction_records(self) -> int:
        """Data records produced in the open transaction (0 when none is open)."""
        return self._txn.records if self._txn is not None else 0

    def transaction_age(self) -> float:
        """Seconds since begin(), so the caller commits well before transaction.timeout.ms."""
        return time.monotonic() - self._txn.started if self._txn is not None else 0.0

    def in_flight(self) -> int:
        """The producer's queue length, for backpressure (I7).

        librdkafka's out-queue: records not yet acknowledged plus delivery reports not yet
        served; :meth:`write` and :meth:`commit` serve them.
        """
        return len(self._producer)

    def _extra(self, **more: Any) -> dict[str, Any]:
        return {"txn": self.transactional_id, **more}

    # --- lifecycle ---------------------------------------------------------------------------

    def init(self, timeout: float | None = None) -> None:
        """Register the transactional.id (fencing older instances); check the control topic."""
        budget = self.operation_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        call_with_retry(
            lambda: self._producer.init_transactions(budget),
            op="init_transactions",
            attempts=self.retry_attempts,
            budget=budget,
            backoff_max=self.retry_backoff_max,
        )
        count = self._partition_count(self.control_topic, None, max(deadline - time.monotonic(), 1))
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
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise classify(exc, op="begin_transaction") from exc
        self._txn = _Txn(started=time.monotonic())
        self._checkpoints.clear()
        self._failures.clear()

    def _open(self, op: str) -> _Txn:
        if self._txn is None:
            raise WriterStateError(f"{op}(): no transaction is open (call begin() first)")
        return self._txn

    # --- data --------------------------------------------------------------------------------

    def headers_of(self, message: Message) -> Headers:
        return message_headers(message, self.header_prefix)

    def partition_for(self, route: Route, timeout: float | None = None) -> int:
        """The partition of ``route``'s records: by key, or by subject when keyless (I5)."""
        count = self._partition_count(route.topic, route.subject, timeout)
        return java_partition(partition_basis(route), count)

    def write(self, message: Message, route: Route) -> WriteOutcome:
        """Produce ``message`` to ``route``'s topic in the open transaction."""
        txn = self._txn
        if txn is None:
            txn = self._open("write")
        template = self._templates.get(message.subject)
        if template is None or template.route is not route:
            template = self._template(message, route)
        headers, size = template.headers_and_size(message)
        if size > self.message_max_bytes:
            return self._oversize(message, route, txn, size)
        try:
            self._produce(
                route.topic,
                template.partition,
                template.key,
                message.content,
                headers,
                report=template.report,
            )
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                # librdkafka counts the record differently than record_size: same policy.
                return self._oversize(message, route, txn, size)
            raise _produce_error(exc, message.subject, route.topic, self._producer) from exc
        txn.records += 1
        self.stats.written += 1
        return WriteOutcome.WRITTEN

    def _template(self, message: Message, route: Route) -> RecordTemplate:
        if message.subject != route.subject:
            raise WriterStateError(
                f"write(): message of {message.subject!r} given the route of {route.subject!r}"
            )
        template = RecordTemplate(
            route,
            self.partition_for(route),
            self.header_prefix,
            self._reporter(route.topic, message.subject),
        )
        self._templates[message.subject] = template
        return template

    def _oversize(self, message: Message, route: Route, txn: _Txn, size: int) -> WriteOutcome:
        limit = self.message_max_bytes
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
        self._dead_letter(message, route, size, limit)
        log.warning("oversize message dead-lettered", extra=extra)
        txn.records += 1
        txn.dead_lettered += 1
        self.stats.dead_lettered += 1
        return WriteOutcome.DEAD_LETTERED

    def _dead_letter(self, message: Message, route: Route, size: int, limit: int) -> None:
        """Produce the truncated copy (:func:`dead_letter_record`) to the dead-letter topic."""
        dlq = route.dead_letter_topic
        assert dlq is not None  # Route guarantees it for Oversize.DEAD_LETTER
        key, value, headers = dead_letter_record(message, route, size, limit, self.header_prefix)
        count = self._partition_count(dlq, message.subject, None)
        try:
            self._produce(
                dlq,
                java_partition(partition_basis(route), count),
                key,
                value,
                headers,
                report=self._reporter(dlq, message.subject),
            )
        except KafkaException as exc:
            raise _produce_error(exc, message.subject, dlq, self._producer) from exc

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
            if offsets:
                call_with_retry(
                    lambda: _off_main_thread(
                        lambda t: self._producer.send_offsets_to_transaction(
                            list(offsets), group_metadata, t
                        ),
                        deadline,
                    ),
                    op="send_offsets_to_transaction",
                    attempts=self.retry_attempts,
                    budget=budget,
                    backoff_max=self.retry_backoff_max,
                )
            call_with_retry(
                lambda: _off_main_thread(self._producer.commit_transaction, deadline),
                op="commit_transaction",
                attempts=self.retry_attempts,
                budget=budget,
                backoff_max=self.retry_backoff_max,
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
        return stats

    def _commit_failed(self, exc: KafkaWriteError) -> KafkaWriteError:
        """The error to raise for a failed commit: a delivery failure names its record."""
        # Serve the delivery reports not yet seen (a failed transaction purges its queue, so
        # they come at once); bounded, as a fenced producer may never deliver them.
        deadline = time.monotonic() + 1.0
        try:
            self._producer.poll(0)
            while len(self._producer) and time.monotonic() < deadline:
                self._producer.poll(_DRAIN_POLL)
        except KafkaException as fatal:  # the producer's fatal error, surfaced by poll
            log.debug("draining a failed producer: %s", fatal, extra=self._extra())
        # Purged records are a consequence of the failed transaction, not its cause.
        causes = [f for f in self._failures if f.code not in _PURGED]
        log.error(
            "commit failed",
            extra=self._extra(
                error=type(exc).__name__,
                code=exc.code,
                subjects=sorted(self._checkpoints)[:20],
                failed_deliveries=len(self._failures),
                causes=sorted({f.name for f in causes}),
            ),
        )
        if not isinstance(exc, AbortRequiredError):
            return exc  # fatal or fenced: that is the cause, whatever was purged
        too_large = next((f for f in causes if f.code == KafkaError.MSG_SIZE_TOO_LARGE), None)
        if too_large is not None:
            return TopicLimitError(
                f"the broker refused a batch holding a record of {too_large.subject!r} "
                f"({too_large.size} bytes of value) as too large: {too_large.text}",
                op="commit_transaction",
                subject=too_large.subject,
                topic=too_large.topic,
                code=too_large.name,
                hint=f"set the topic's max.message.bytes to at least message.max.bytes "
                f"({self.message_max_bytes}), or lower message.max.bytes to the topic's",
            )
        if type(exc) is not AbortRequiredError or not causes:
            return exc  # e.g. GroupFencedError: more precise than any delivery report
        first = causes[0]
        what = "the checkpoint" if first.topic == self.control_topic else "a record"
        where = f"{what} of {first.subject!r}"
        return AbortRequiredError(
            f"{len(causes)} record(s) were not delivered, first {where}: {first.text}",
            op="commit_transaction",
            subject=first.subject,
            topic=first.topic,
            code=first.name,
        )

    def abort(self, timeout: float | None = None) -> None:
        """Abort the open transaction: nothing of it becomes visible (I2)."""
        if self._txn is None:
            return
        budget = self.operation_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        call_with_retry(
            lambda: _off_main_thread(self._producer.abort_transaction, deadline),
            op="abort_transaction",
            attempts=self.retry_attempts,
            budget=budget,
            backoff_max=self.retry_backoff_max,
        )
        log.info(
            "transaction aborted",
            extra=self._extra(records=self._txn.records, subjects=sorted(self._checkpoints)[:20]),
        )
        self.stats.aborts += 1
        self._txn = None
        self._checkpoints.clear()
        self._failures.clear()

    # --- producing ----------------------------------------------------------------------------

    def _produce_control(self, key: bytes, value: bytes, subject: str) -> None:
        partition = shard_of(subject, self.control_partitions)
        report = self._reporter(self.control_topic, subject)
        try:
            self._produce(self.control_topic, partition, key, value, None, report=report)
        except KafkaException as exc:
            raise _produce_error(exc, subject, self.control_topic, self._producer) from exc

    def _produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes,
        headers: Headers | None,
        *,
        report: DeliveryReport,
    ) -> None:
        """Produce one record; while the local queue is full, serve deliveries and try again
        (bounded by ``queue_full_timeout``)."""
        if len(self._producer) >= self.max_in_flight:
            self._wait_below(self.max_in_flight)
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=partition,
                    headers=headers,  # type: ignore[arg-type]  # the stubs want a wider value type
                    on_delivery=report,
                )
                return
            except BufferError:
                now = time.monotonic()
                deadline = now + self.queue_full_timeout if deadline is None else deadline
                self.stats.queue_waits += 1
                if now >= deadline:
                    raise QueueFullError(
                        f"the producer queue stayed full for {self.queue_full_timeout}s "
                        f"({len(self._producer)} records in flight)",
                        op="produce",
                    ) from None
                self._producer.poll(_DRAIN_POLL)

    def _wait_below(self, limit: int) -> None:
        if len(self._producer) < limit:
            return
        self.stats.queue_waits += 1
        deadline = time.monotonic() + self.queue_full_timeout
        while len(self._producer) >= limit:
            if time.monotonic() >= deadline:
                raise QueueFullError(
                    f"{len(self._producer)} records stayed in flight for "
                    f"{self.queue_full_timeout}s (max_in_flight {limit})",
                    op="produce",
                )
            self._producer.poll(_DRAIN_POLL)

    def _reporter(self, topic: str, subject: str) -> DeliveryReport:
        """The delivery callback of ``subject``'s records to ``topic``, made once per route.

        With ``delivery.report.only.error`` librdkafka calls it only for a failure. One per
        record (naming its seq) cost a closure and its cells per message: 10-15% of the
        peer's CPU, for a detail no one acts on (a failed transaction is redone whole).
        """

        def report(err: KafkaError | None, msg: object) -> None:
            if err is not None:
                value = msg.value() if isinstance(msg, KafkaMessage) else None
                self._delivery_failed(err, topic, subject, size=len(value or b""))

        return report

    def _delivery_failed(self, err: KafkaError, topic: str, subject: str, *, size: int) -> None:
        code = err.code()
        self.stats.delivery_failures += 1
        self._failures.append(_DeliveryFailure(topic, subject, size, code, err.name(), err.str()))
        if len(self._failures) == 1:  # a failed transaction purges all: report the first
            log.error(
                "record not delivered",
                extra=self._extra(subject=subject, topic=topic, code=err.name()),
            )

    # --- metadata -----------------------------------------------------------------------------

    def _partition_count(self, topic: str, subject: str | None, timeout: float | None) -> int:
        """Partitions of ``topic`` (cached). A missing topic is refused, never auto-created.

        The lookup asks for all topics' metadata: a request naming the topic would let a
        broker with ``auto.create.topics.enable`` create it with default settings.
        """
        count = self._partitions.get(topic)
        if count is not None:
            return count
        wait = self.operation_timeout if timeout is None else timeout
        try:
            md = self._producer.list_topics(timeout=wait)
        except KafkaException as exc:
            raise classify(exc, op="list_topics", subject=subject, topic=topic) from exc
        found = md.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            for_subject = f" of subject {subject!r}" if subject else ""
            raise TopicMissingError(
                f"topic {topic!r}{for_subject} does not exist",
                op="metadata",
                subject=subject,
                topic=topic,
                code=found.error.name() if found is not None and found.error else None,
                hint="create it first (mdpeer does not create topics implicitly)",
            )
        count = len(found.partitions)
        self._partitions[topic] = count
        return count

    def forget_metadata(self) -> None:
        """Drop cached partition counts (e.g. after topics were created or expanded)."""
        self._partitions.clear()
        self._templates.clear()


__all__ = ["TransactionalWriter"]
