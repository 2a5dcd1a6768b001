"""The producer's sending side: one record at a time into a bounded queue, never dropped.

:class:`Outbox` is the thin typed wrapper the writer produces through: a full local queue
is served (delivery reports) and tried again, within ``queue_full_timeout``
(:class:`~peer.kafka.errors.QueueFullError` after that: I7, nothing dropped); failed
deliveries are kept for the commit to explain (:mod:`peer.writer.failures`).
:func:`off_main_thread` runs a blocking transactional call so the main thread stays able to
act on signals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import Message as KafkaMessage

from peer.errors import PeerFatalError
from peer.kafka.errors import QueueFullError
from peer.writer.failures import DeliveryFailure
from peer.writer.records import DeliveryReport, Headers, WriterStats

log = logging.getLogger("peer.writer")

#: how long one poll waits while the local queue drains
DRAIN_POLL: Final = 0.05
#: how often the main thread wakes while a transactional call runs (see off_main_thread)
_WAKE_S: Final = 0.2


class CallAbandonedError(PeerFatalError):
    """The peer is stopping and a transactional call did not return within the stop budget:
    the peer leaves without waiting for it (whatever it was doing either completes at the
    broker or is aborted there; a new owner waits for it, KIP-447). Exit 2, not 0: the
    handoff was not clean."""


def off_main_thread(
    call: Callable[[float], object],
    deadline: float,
    abandon: Callable[[], bool] | None = None,
) -> None:
    """Run a blocking transactional call (commit, abort, send offsets) in a helper thread
    while the main thread waits in Python.

    Python runs signal handlers only in the main thread, between bytecodes, and a call
    blocked in librdkafka for an unreachable broker (``send_offsets_to_transaction`` does not
    honour short timeouts there) would keep SIGTERM unanswered (RELIABILITY.md, finding 1).
    The call itself is unchanged and still one at a time: the main thread does nothing else
    until it returns, it only stays able to run the handler (which sets the stop flag).
    ``abandon`` says when to stop waiting anyway: after a stop request, a call to brokers
    that are away may not return for tens of seconds (RELIABILITY.md, finding 11), longer
    than an orchestrator waits before it kills the process.
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
        if abandon is not None and abandon():
            raise CallAbandonedError(
                "stopping: a transactional call to Kafka did not return within the stop "
                "budget (on_revoke_budget_ms); leaving without it"
            )
    if outcome and outcome[0] is not None:
        raise outcome[0]


class Outbox:
    """Produces through one producer (replaceable) and keeps its failed deliveries."""

    def __init__(
        self,
        producer: Producer,
        *,
        stats: WriterStats,
        max_in_flight: int,
        queue_full_timeout: float,
        context: Callable[..., dict[str, Any]],
    ) -> None:
        self.producer = producer
        self.stats = stats
        self.max_in_flight = max_in_flight
        self.queue_full_timeout = queue_full_timeout
        self._extra = context
        #: deliveries that failed since the last clear (a failed transaction's causes)
        self.failures: list[DeliveryFailure] = []

    def __len__(self) -> int:
        return len(self.producer)

    def drain(self, seconds: float) -> None:
        """Serve pending delivery reports for up to ``seconds`` (after a failed commit: a
        failed transaction purges its queue, so they come at once; a fenced producer may
        never deliver them, hence the bound). A producer's fatal error raised by ``poll`` is
        expected there and only logged."""
        deadline = time.monotonic() + seconds
        try:
            self.producer.poll(0)
            while len(self.producer) and time.monotonic() < deadline:
                self.producer.poll(DRAIN_POLL)
        except KafkaException as fatal:
            log.debug("draining a failed producer: %s", fatal, extra=self._extra())

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        *,
        report: DeliveryReport,
    ) -> None:
        """Produce one record; while the local queue is full, serve deliveries and try again
        (bounded by ``queue_full_timeout``)."""
        if len(self.producer) >= self.max_in_flight:
            self.wait_below(self.max_in_flight)
        deadline: float | None = None
        while True:
            try:
                self.producer.produce(
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
                        f"({len(self.producer)} records in flight)",
                        op="produce",
                    ) from None
                self.producer.poll(DRAIN_POLL)

    def room(self) -> int:
        """How many records may be produced before the queue is looked at again: what is left
        below ``max_in_flight``, once (bounded, as :meth:`produce`) there is any."""
        self.wait_below(self.max_in_flight)
        return self.max_in_flight - len(self.producer)

    def wait_below(self, limit: int) -> None:
        if len(self.producer) < limit:
            return
        self.stats.queue_waits += 1
        deadline = time.monotonic() + self.queue_full_timeout
        while len(self.producer) >= limit:
            if time.monotonic() >= deadline:
                raise QueueFullError(
                    f"{len(self.producer)} records stayed in flight for "
                    f"{self.queue_full_timeout}s (max_in_flight {limit})",
                    op="produce",
                )
            self.producer.poll(DRAIN_POLL)

    def reporter(self, topic: str, subject: str) -> DeliveryReport:
        """The delivery callback of ``subject``'s records to ``topic``, made once per route.

        With ``delivery.report.only.error`` librdkafka calls it only for a failure. One per
        record (naming its seq) cost a closure and its cells per message: 10-15% of the
        peer's CPU, for a detail no one acts on (a failed transaction is redone whole).
        """

        def report(err: KafkaError | None, msg: object) -> None:
            if err is not None:
                value = msg.value() if isinstance(msg, KafkaMessage) else None
                self.delivery_failed(err, topic, subject, size=len(value or b""))

        return report

    def delivery_failed(self, err: KafkaError, topic: str, subject: str, *, size: int) -> None:
        self.stats.delivery_failures += 1
        self.failures.append(DeliveryFailure.of(err, topic, subject, size))
        if len(self.failures) == 1:  # a failed transaction purges all: report the first
            log.warning(
                "record not delivered",
                extra=self._extra(subject=subject, topic=topic, code=err.name()),
            )


__all__ = ["DRAIN_POLL", "CallAbandonedError", "Outbox", "off_main_thread"]
