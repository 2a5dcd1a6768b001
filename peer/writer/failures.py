"""What a refused produce or a failed commit means: one subject's fault, or the producer's.

librdkafka reports a record the cluster refused through its delivery callback, and a
transaction holding one can then only be aborted. Whether that concerns one route (its topic
is missing, refused, or limits record size) or the whole producer (fenced, a broken
transaction, brokers away) decides whether only the subjects at fault stop or every subject
is redone: :func:`commit_error` makes that call from the delivery failures the writer saw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer

from peer.errors import FaultReason
from peer.kafka.errors import (
    GROUP_FENCED_CODES,
    PRODUCER_FENCED_CODES,
    AbortRequiredError,
    KafkaWriteError,
    NotAuthorizedError,
    RecordsRefusedError,
    RouteFaultError,
    TopicLimitError,
    TopicMissingError,
    TopicUnauthorizedError,
    classify,
    kafka_error_of,
)

E = TypeVar("E", bound=KafkaWriteError)

#: delivery reports of records a failed transaction purged from the queue
PURGED: Final = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
#: the topic itself is at fault: every subject routed to it stops
_TOPIC_CODES: Final = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    }
)
_TOO_LARGE: Final = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
#: broker answers that concern the producer, its transaction or the cluster, never one record
_PROCESS_CODES: Final = (
    PRODUCER_FENCED_CODES
    | GROUP_FENCED_CODES
    | frozenset(
        {
            KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
            KafkaError.DUPLICATE_SEQUENCE_NUMBER,
            KafkaError.UNKNOWN_PRODUCER_ID,
            KafkaError.INVALID_TXN_STATE,
            KafkaError.INVALID_PRODUCER_ID_MAPPING,
            KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            KafkaError.CLUSTER_AUTHORIZATION_FAILED,
            KafkaError.CONCURRENT_TRANSACTIONS,
        }
    )
)


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """A record the cluster did not take, as its delivery report told."""

    topic: str
    subject: str
    #: bytes of the record's value
    size: int
    code: int
    name: str
    text: str
    retriable: bool = False
    fatal: bool = False

    @classmethod
    def of(cls, err: KafkaError, topic: str, subject: str, size: int) -> DeliveryFailure:
        return cls(
            topic, subject, size, err.code(), err.name(), err.str(), err.retriable(), err.fatal()
        )

    def error(self, cls: type[E], message: str, *, hint: str | None = None) -> E:
        """``cls`` for this failure in a failed commit, naming its subject, topic and code."""
        return cls(
            message,
            op="commit_transaction",
            subject=self.subject,
            topic=self.topic,
            code=self.name,
            hint=hint,
        )

    def concerns_one_route(self) -> bool:
        """Refused for what this record or its topic is, not for the transaction's state."""
        if self.code in _TOPIC_CODES or self.code in _TOO_LARGE:
            return True
        # A local error (negative code) is the client's own state; a retriable one passes.
        return (
            self.code >= 0
            and self.code not in _PROCESS_CODES
            and not self.retriable
            and not self.fatal
        )


def produce_error(
    exc: KafkaException, subject: str, topic: str, producer: Producer | None = None
) -> KafkaWriteError:
    """What a ``produce`` refused in an open transaction means.

    librdkafka refuses to produce (``_STATE``) once the transaction has failed: that is an
    abort, not a crash (RELIABILITY.md, finding 5).

    A producer that hit a fatal error refuses with a bare ``_FATAL``; the cause (e.g. fenced
    by a newer instance) is raised by its next ``poll``: that is what gets classified
    (RELIABILITY.md, finding 9).
    """
    err = kafka_error_of(exc)
    if err is not None and err.code() == KafkaError._FATAL and producer is not None:
        try:
            producer.poll(0)
        except KafkaException as cause:
            return classify(cause, op="produce", subject=subject, topic=topic)
    cls: type[KafkaWriteError]
    if err is not None and err.code() == KafkaError._STATE:
        cls, why = AbortRequiredError, "the producer refused a record, its transaction has failed"
    elif err is not None and err.code() in (
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
    ):
        # The topic was deleted, or lost partitions, since it was looked up.
        cls, why = TopicMissingError, f"topic {topic!r} of subject {subject!r} is gone or changed"
    else:
        return classify(exc, op="produce", subject=subject, topic=topic)
    return cls(f"{why}: {err.str()}", op="produce", subject=subject, topic=topic, code=err.name())


def commit_error(
    exc: KafkaWriteError,
    failures: Iterable[DeliveryFailure],
    *,
    control_topic: str,
    learn_limit: Callable[[str], int | None],
    known_limit: Callable[[str], int | None],
    unauthorized: Callable[[str], bool] | None = None,
) -> KafkaWriteError:
    """The error a failed commit stands for, given the delivery failures seen in it.

    A fatal or fencing error is the cause whatever else failed. An abortable one with records
    refused for what they or their topic are (not the control topic's) becomes a
    :class:`RecordsRefusedError` naming those subjects, so they stop and the others are redone.

    Records refused as too large by their topic: the first time, the topic's own
    ``max.message.bytes`` is learned (``learn_limit``) and the transaction simply redone, so
    that the writer applies the routes' oversize policy to each record up front; refused
    again within a known limit, the topic's batches are at fault and its subjects stop.
    """
    if not isinstance(exc, AbortRequiredError):
        return exc
    seen = list(failures)
    causes = [f for f in seen if f.code not in PURGED]
    faults: dict[tuple[str, str, str], RouteFaultError] = {}
    learned: set[str] = set()  # topics whose limit this failure taught
    for f in causes:
        if f.topic == control_topic or not f.concerns_one_route():
            continue
        if f.code in _TOO_LARGE:
            if f.topic in learned or (
                known_limit(f.topic) is None and learn_limit(f.topic) is not None
            ):
                learned.add(f.topic)
                continue
            fault: RouteFaultError = f.error(
                TopicLimitError,
                f"topic {f.topic!r} refused a batch holding a record of {f.subject!r} "
                f"({f.size} bytes of value) as too large: {f.text}",
                hint="raise the topic's max.message.bytes, or lower the producer's batch.size "
                "and message.max.bytes (kafka_producer) below it",
            )
        elif f.code in _TOPIC_CODES:
            cls = (
                TopicUnauthorizedError
                if f.code == KafkaError.TOPIC_AUTHORIZATION_FAILED
                else TopicMissingError
            )
            fault = f.error(cls, f"topic {f.topic!r} refused a record of {f.subject!r}: {f.text}")
        else:
            fault = f.error(
                RouteFaultError, f"the cluster refused a record of {f.subject!r}: {f.text}"
            )
        scope = f.topic if fault.topic_wide else f.subject
        faults.setdefault((fault.reason.value, f.topic, scope), fault)
    if not faults and exc.code == "TOPIC_AUTHORIZATION_FAILED" and unauthorized is not None:
        # Refused when the transaction took up a partition: the error names no topic, and
        # the records of every topic were purged. Ask which may not be written.
        if unauthorized(control_topic):
            return NotAuthorizedError("Write", "Topic", control_topic, code=exc.code)
        asked = {control_topic}
        for f in seen:  # the purged records too: they name the transaction's topics
            if f.topic in asked:
                continue
            asked.add(f.topic)
            if unauthorized(f.topic):
                faults[(FaultReason.TOPIC_UNAUTHORIZED.value, f.topic, f.topic)] = (
                    TopicUnauthorizedError(
                        f"not authorized: Write on Topic {f.topic!r}",
                        op="commit_transaction",
                        subject=f.subject,
                        topic=f.topic,
                        code=exc.code,
                    )
                )
    if faults:
        listed = list(faults.values())
        first = listed[0]
        return RecordsRefusedError(
            f"the cluster refused records of {len(listed)} route(s), first of "
            f"{first.subject!r} to {first.topic!r} ({first.reason.value})",
            listed,
            op="commit_transaction",
            subject=first.subject,
            topic=first.topic,
            code=first.code,
        )
    if learned:
        return AbortRequiredError(
            "a topic refused records as too large; its limit is now known and the routes' "
            "oversize policy applies on the redo",
            op="commit_transaction",
        )
    if type(exc) is not AbortRequiredError or not causes:
        return exc  # e.g. GroupFencedError: more precise than any delivery report
    first_cause = causes[0]
    what = "the checkpoint" if first_cause.topic == control_topic else "a record"
    return first_cause.error(
        AbortRequiredError,
        f"{len(causes)} record(s) were not delivered, first {what} of "
        f"{first_cause.subject!r}: {first_cause.text}",
    )


__all__ = ["PURGED", "DeliveryFailure", "commit_error", "produce_error"]
