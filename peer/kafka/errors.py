"""What a Kafka error means for the peer: retry, abort and redo, or stop (DESIGN.md, failure model).

librdkafka tags every transactional error with what the application may do next:

* ``retriable()``: the same call may simply be made again (a leader moved, a coordinator is
  loading). :func:`call_with_retry` retries those, a bounded number of times with jittered
  backoff, for the calls librdkafka documents as retriable (init, send_offsets, commit, abort).
* ``txn_requires_abort()``: the transaction is lost but the producer is fine: the caller
  aborts and re-fetches from its checkpoints (:class:`AbortRequiredError`).
* ``fatal()``: the producer is unusable; with transactions this is nearly always fencing by a
  newer instance of the same ``transactional.id`` (:class:`FencedError`), otherwise
  :class:`FatalKafkaError`. The peer exits non-zero and the orchestrator restarts it.

So the caller needs three rules: a :class:`RouteFaultError` stops the subjects it concerns
(a fault of one route or subject: a missing or refused topic, an oversized message); an
:class:`AbortRequiredError` means "abort, then redo from the checkpoints" (a
:class:`RecordsRefusedError` also names the subjects to stop); any other
:class:`KafkaWriteError` concerns the whole producer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, TypeVar

from confluent_kafka import KafkaError, KafkaException
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from peer.errors import FaultReason, MdpeerError

log = logging.getLogger("peer.writer")

T = TypeVar("T")

#: the producer lost its transactional.id to a newer instance
PRODUCER_FENCED_CODES: Final = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)
#: the consumer group moved on: the group metadata sent with the offsets is stale
GROUP_FENCED_CODES: Final = frozenset(
    {KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.FENCED_INSTANCE_ID}
)


class KafkaWriteError(MdpeerError):
    """Writing to Kafka failed. Carries what is known: operation, subject, topic, error code."""

    def __init__(
        self,
        message: str,
        *,
        op: str | None = None,
        subject: str | None = None,
        topic: str | None = None,
        code: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.op = op
        self.subject = subject
        self.topic = topic
        self.code = code
        context = ", ".join(
            f"{name} {value!r}" if name in ("subject", "topic") else f"{name} {value}"
            for name, value in (("op", op), ("subject", subject), ("topic", topic), ("code", code))
            if value
        )
        super().__init__(f"{message} ({context})" if context else message, hint=hint)


class AbortRequiredError(KafkaWriteError):
    """The open transaction cannot commit; abort it and re-fetch from the checkpoints."""


class GroupFencedError(AbortRequiredError):
    """The group metadata is stale (a rebalance moved the shards): this peer may not commit.

    The transaction is only abortable, never committable; the rebalance callbacks tell the
    peer what it owns now (DESIGN.md, I3).
    """


class RetriesExhaustedError(AbortRequiredError):
    """A retriable error persisted past the retry budget (e.g. the broker is down)."""


class QueueFullError(AbortRequiredError):
    """The producer's local queue did not drain within the bounded wait (I7: never drop)."""


class FatalKafkaError(KafkaWriteError):
    """The producer is unusable; the peer must exit non-zero with this cause."""


class FencedError(FatalKafkaError):
    """A newer instance with the same transactional.id took over: this one must stop."""


class RouteFaultError(KafkaWriteError):
    """A fault of one route or subject: only the subjects it concerns stop, at their checkpoint.

    Raised before anything of the record was produced, so the open transaction is unharmed.
    ``topic_wide``: every subject routed to ``topic`` is concerned (the topic is at fault),
    else only ``subject``.
    """

    reason: FaultReason = FaultReason.RECORD_REFUSED
    topic_wide: bool = False


class TopicMissingError(RouteFaultError):
    """A route names a topic that does not exist and will not be created (topic_creation)."""

    reason = FaultReason.TOPIC_MISSING
    topic_wide = True


class TopicCreatingError(TopicMissingError):
    """The topic is being created (by the cluster on first use, or by mdpeer): ask again soon."""

    reason = FaultReason.TOPIC_CREATING


class TopicUnauthorizedError(RouteFaultError):
    """The cluster does not let this peer describe, create or write the topic (ACLs)."""

    reason = FaultReason.TOPIC_UNAUTHORIZED
    topic_wide = True


class OversizeError(RouteFaultError):
    """A message is larger than the producer accepts and its route says ``on_oversize=fail``."""

    reason = FaultReason.OVERSIZE

    def __init__(
        self, subject: str, epoch: int, seq: int, size: int, limit: int, *, topic: str
    ) -> None:
        self.epoch = epoch
        self.seq = seq
        self.size = size
        self.limit = limit
        super().__init__(
            f"message {epoch}:{seq} is {size} bytes as a record, over the limit of {limit}",
            op="write",
            subject=subject,
            topic=topic,
            code="MSG_SIZE_TOO_LARGE",
            hint="raise message.max.bytes (producer and topic), or set the route's "
            "on_oversize to 'skip' or 'dead-letter'",
        )


class TopicLimitError(RouteFaultError):
    """A topic refused records as too large although they fit its known size limit.

    The broker refuses a whole batch (several records, maybe of several subjects), so what is
    at fault is the topic's limit against the producer's batches: every subject of the topic
    stops until an operator raises the limit (or lowers ``batch.size``).
    """

    reason = FaultReason.RECORD_TOO_LARGE
    topic_wide = True


class RecordsRefusedError(AbortRequiredError):
    """The cluster refused records of some subjects: the transaction must be aborted, those
    subjects stop (``faults``) and every other one is redone from its checkpoint."""

    def __init__(self, message: str, faults: list[RouteFaultError], **kw: str | None) -> None:
        self.faults = faults
        super().__init__(message, **kw)


#: the resource type each authorization error names, and what a peer needs on it
_DENIED: Final = {
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: ("TransactionalId", "Write"),
    KafkaError.GROUP_AUTHORIZATION_FAILED: ("Group", "Read"),
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: ("Cluster", "IdempotentWrite"),
    KafkaError.TOPIC_AUTHORIZATION_FAILED: ("Topic", "Write"),
}
#: the cluster refuses an operation for want of an ACL
AUTHORIZATION_CODES: Final = frozenset(_DENIED)


class NotAuthorizedError(FatalKafkaError):
    """The cluster refuses this principal an operation for want of an ACL.

    Never retried and never a reason to replace the producer: only an operator can grant it.
    The message names the ACL, the principal and the command that grants it
    (docs/SECURITY.md). ``name`` and ``principal`` may be filled in later, by whoever knows
    them (:meth:`named`): a Kafka error names neither the transactional id nor the group.
    """

    def __init__(
        self,
        operation: str,
        resource_type: str,
        name: str | None = None,
        *,
        principal: str | None = None,
        group: str | None = None,
        role: str = "peer",
        code: str | None = None,
    ) -> None:
        self.operation = operation
        self.resource_type = resource_type
        self.name = name
        self.principal = principal
        self.group = group
        self.role = role
        who = principal or "User:<principal>"
        what = f"{operation} on {resource_type}" + (f" {name!r}" if name else "")
        grant = f"mdpeer acls --group {group or '<group>'} --principal {who}" + (
            f" --role {role}" if role != "peer" else ""
        )
        super().__init__(
            f"not authorized: {what} for {who} (grant it: {grant} --apply)",
            hint="ACLs are granted by an admin of the cluster; docs/SECURITY.md lists what "
            "each role needs",
        )
        self.code = code

    def named(
        self,
        *,
        name: str | None = None,
        principal: str | None = None,
        group: str | None = None,
        role: str | None = None,
    ) -> NotAuthorizedError:
        """This error with what it did not know filled in (what it knew is kept)."""
        return NotAuthorizedError(
            self.operation,
            self.resource_type,
            self.name or name,
            principal=self.principal or principal,
            group=self.group or group,
            role=role or self.role,
            code=self.code,
        )


def not_authorized(
    err: KafkaError | None, operation: str | None = None, name: str | None = None
) -> NotAuthorizedError | None:
    """The :class:`NotAuthorizedError` ``err`` stands for (None: it is no authorization error).

    ``operation`` replaces the default one of the resource type (e.g. Read for a fetch)."""
    if err is None or err.code() not in _DENIED:
        return None
    resource, default = _DENIED[err.code()]
    name = "kafka-cluster" if resource == "Cluster" else name
    return NotAuthorizedError(operation or default, resource, name, code=err.name())


class WriterStateError(MdpeerError):
    """The writer was used out of order (e.g. write without begin): a bug in the caller."""


def kafka_error_of(exc: KafkaException) -> KafkaError | None:
    arg = exc.args[0] if exc.args else None
    return arg if isinstance(arg, KafkaError) else None


def classify(
    exc: KafkaException,
    *,
    op: str,
    subject: str | None = None,
    topic: str | None = None,
) -> KafkaWriteError:
    """The :class:`KafkaWriteError` a non-retried KafkaException stands for."""
    err = kafka_error_of(exc)
    if err is None:
        return FatalKafkaError(str(exc), op=op, subject=subject, topic=topic)
    code, name, text = err.code(), err.name(), err.str()
    kw = {"op": op, "subject": subject, "topic": topic, "code": name}
    if code in PRODUCER_FENCED_CODES:
        return FencedError(
            f"fenced by a newer producer with the same transactional.id: {text}",
            hint="another peer runs with the same peer id; each peer needs its own",
            **kw,
        )
    if code in AUTHORIZATION_CODES and code != KafkaError.TOPIC_AUTHORIZATION_FAILED:
        # The producer's own ACLs (transactional id, group, cluster): no retry can help. A
        # topic's is decided where the topic is known (peer.writer.failures).
        denied = not_authorized(err)
        assert denied is not None
        return denied
    if code in GROUP_FENCED_CODES:
        if err.txn_requires_abort() and not err.fatal():
            return GroupFencedError(f"the consumer group moved on: {text}", **kw)
        return FencedError(f"the consumer group fenced this peer: {text}", **kw)
    if err.fatal():
        return FatalKafkaError(f"fatal producer error: {text}", **kw)
    if err.txn_requires_abort():
        return AbortRequiredError(f"the transaction must be aborted: {text}", **kw)
    if err.retriable():
        return RetriesExhaustedError(f"still failing after retries: {text}", **kw)
    # Anything else (a local state error, a bad argument) means the writer cannot go on
    # safely; a restart rebuilds everything from the checkpoints.
    return FatalKafkaError(f"unexpected Kafka error: {text}", **kw)


def is_retriable(exc: BaseException) -> bool:
    """A KafkaException that the same call may simply repeat."""
    if not isinstance(exc, KafkaException):
        return False
    err = kafka_error_of(exc)
    return err is not None and err.retriable() and not err.fatal() and not err.txn_requires_abort()


def call_with_retry(
    fn: Callable[[], T],
    *,
    op: str,
    attempts: int,
    budget: float,
    backoff_max: float = 1.0,
) -> T:
    """Call ``fn``; retry retriable Kafka errors (bounded); classify whatever remains."""

    def before_sleep(state: object) -> None:
        outcome = getattr(state, "outcome", None)
        cause = outcome.exception() if outcome is not None else None
        log.warning(
            "retrying %s after a retriable error", op, extra={"op": op, "cause": str(cause)}
        )

    retrying = Retrying(
        retry=retry_if_exception(is_retriable),
        stop=stop_after_attempt(attempts) | stop_after_delay(budget),
        wait=wait_random_exponential(multiplier=0.05, max=backoff_max),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(fn)
    except KafkaException as exc:
        raise classify(exc, op=op) from exc
    except RetryError as exc:  # pragma: no cover - reraise=True re-raises the last error
        raise RetriesExhaustedError(str(exc), op=op) from exc


__all__ = [
    "AUTHORIZATION_CODES",
    "GROUP_FENCED_CODES",
    "PRODUCER_FENCED_CODES",
    "AbortRequiredError",
    "FatalKafkaError",
    "FencedError",
    "GroupFencedError",
    "KafkaWriteError",
    "NotAuthorizedError",
    "OversizeError",
    "QueueFullError",
    "RecordsRefusedError",
    "RetriesExhaustedError",
    "RouteFaultError",
    "TopicCreatingError",
    "TopicLimitError",
    "TopicMissingError",
    "TopicUnauthorizedError",
    "WriterStateError",
    "call_with_retry",
    "classify",
    "is_retriable",
    "kafka_error_of",
    "not_authorized",
]
