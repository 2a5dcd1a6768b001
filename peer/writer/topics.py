"""What the writer knows of its topics: partition counts, size limits, and missing topics.

A target, dead-letter or audit topic that does not exist is handled the way the peer's
``topic_creation`` setting says (docs/CONFIG.md):

* ``cluster`` (default): ask the cluster as every Kafka client does. A metadata request that
  names the topic lets brokers with ``auto.create.topics.enable`` (Apache Kafka's default)
  create it with their defaults. The first answer says "unknown" either way, so the topic is
  reported as being created and asked again; if it still does not exist after
  :data:`CREATE_GRACE_S`, the cluster refuses to create it and the topic is missing.
* ``create``: mdpeer creates it with ``topic_partitions`` and ``topic_replication_factor``
  (-1: the broker's defaults), as Kafka Connect's topic creation does.
* ``never``: the topic is missing until an operator creates it.

Nothing here waits for a topic to appear: a topic not ready yet raises
:class:`~peer.kafka.errors.TopicCreatingError` at once, so the caller stops only the subjects
of that topic and asks again later (:meth:`TopicCatalog.probe`), while every other subject
keeps flowing in the open transaction. The control topic is only ever looked up, never
created (:meth:`TopicCatalog.partitions` with ``create=False``).

On a cluster with ACLs, a topic this peer may not describe is left out of the metadata as if
it did not exist, and one it may describe but not write would be refused only when the
transaction takes it up, failing the whole transaction (and with it every other subject, and
often the abort too). So before a topic is first written, the cluster is asked what this
principal may do with it (``describe_topics`` with its authorized operations): without Write
(or Describe) its subjects stop as ``topic_unauthorized`` up front (docs/SECURITY.md).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from peer.errors import ConfigError
from peer.kafka.errors import (
    KafkaWriteError,
    TopicCreatingError,
    TopicMissingError,
    TopicUnauthorizedError,
    classify,
    kafka_error_of,
)

log = logging.getLogger("peer.writer")

E = TypeVar("E", bound=KafkaWriteError)

#: how long a topic the cluster was asked for may take to appear before it counts as refused
CREATE_GRACE_S: Final = 10.0
#: how long one metadata or admin request may block the peer's loop
_LOOKUP_TIMEOUT_S: Final = 10.0

_UNAUTHORIZED: Final = frozenset(
    {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED}
)


class TopicCreation(enum.Enum):
    """What a peer does about a topic that does not exist (the ``topic_creation`` setting)."""

    CLUSTER = "cluster"
    CREATE = "create"
    NEVER = "never"


@dataclass(frozen=True, slots=True)
class TopicPolicy:
    """``topic_creation`` and, for ``create``, the new topic's shape (-1: broker default)."""

    creation: TopicCreation = TopicCreation.CLUSTER
    partitions: int = -1
    replication_factor: int = -1

    def __post_init__(self) -> None:
        if not isinstance(self.creation, TopicCreation):
            raise ConfigError("topic_creation", self.creation, "expected cluster, create or never")
        if self.partitions == 0 or self.partitions < -1:
            raise ConfigError("topic_partitions", self.partitions, "expected -1 or at least 1")
        if self.replication_factor == 0 or self.replication_factor < -1:
            raise ConfigError(
                "topic_replication_factor", self.replication_factor, "expected -1 or at least 1"
            )

    def describe(self) -> str:
        """What happens to a missing topic, in words (for logs and admin commands)."""
        if self.creation is TopicCreation.CLUSTER:
            return "asked of the cluster (created where auto.create.topics.enable is on)"
        if self.creation is TopicCreation.NEVER:
            return "not created: its routes stop until it exists"
        shape = (
            "the broker's default partitions"
            if self.partitions < 0
            else f"{self.partitions} partition(s)"
        ) + (
            ", its default replication factor"
            if self.replication_factor < 0
            else f", replication factor {self.replication_factor}"
        )
        return f"created by mdpeer with {shape}"


class TopicCatalog:
    """Partition counts and size limits of the topics one producer writes, and what to do when
    one is missing. Used from one thread (the peer's loop)."""

    def __init__(
        self,
        producer: Producer,
        *,
        policy: TopicPolicy | None = None,
        admin: AdminClient | None = None,
        timeout: float = _LOOKUP_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        principal: str | None = None,
    ) -> None:
        self._producer = producer
        #: who this peer is to the cluster's ACLs (``User:<name>``), for messages
        self.principal = principal
        self.policy = policy or TopicPolicy()
        self._admin = admin
        self._timeout = timeout
        self._clock = clock
        self._partitions: dict[str, int] = {}
        #: topic -> when mdpeer first asked for it to be created (cluster or create mode)
        self._asked: dict[str, float] = {}
        self._creating: dict[str, Future[Any]] = {}
        #: topic -> its max.message.bytes, once a batch was refused as too large
        self._limits: dict[str, int] = {}

    def set_producer(self, producer: Producer) -> None:
        """After the writer replaced its producer: look topics up through the new one, and
        afresh (the failure may have been a topic refused since it was looked up, e.g. its
        Write ACL removed: that is found out before anything is written to it again)."""
        self._producer = producer
        self._partitions.clear()

    # --- partitions -------------------------------------------------------------------------

    def partitions(
        self,
        topic: str,
        subject: str | None = None,
        *,
        create: bool = True,
        timeout: float | None = None,
    ) -> int:
        """The partition count of ``topic`` (cached once known).

        A topic that does not exist raises :class:`TopicCreatingError` while it is being
        created, :class:`TopicMissingError` when it will not be, and
        :class:`TopicUnauthorizedError` when the cluster refuses this peer the topic.
        ``create=False``: only look (the control topic).
        """
        count = self._partitions.get(topic)
        if count is not None:
            return count
        wait = self._timeout if timeout is None else timeout
        # All topics: a request naming one may create it (only wanted where the policy says).
        found = self._metadata(None, topic, subject, wait).get(topic)
        if found is not None and found.error is None and found.partitions:
            ops = self.operations(topic) if create else None
            if ops is not None and "WRITE" not in ops:
                # Refused only at commit otherwise, where the transaction can just abort.
                raise self._unauthorized(topic, subject, "Write")
            self._found(topic, len(found.partitions))
            return len(found.partitions)
        if self.operations(topic) == frozenset():
            # Left out of the metadata because it may not be described: not missing.
            raise self._unauthorized(topic, subject, "Write" if create else "Describe")
        if not create or self.policy.creation is TopicCreation.NEVER:
            raise self._missing(topic, subject, create=create)
        if self.policy.creation is TopicCreation.CREATE:
            return self._create(topic, subject, wait)
        return self._ask_cluster(topic, subject, wait)

    def operations(self, topic: str) -> frozenset[str] | None:
        """What this peer's principal may do with ``topic`` (``WRITE``, ``DESCRIBE``, ...) as
        the cluster says; empty when it may not even describe it, None when the cluster does
        not tell (no admin client, the topic does not exist, no answer)."""
        if self._admin is None:
            return None
        try:
            described = self._admin.describe_topics(
                TopicCollection([topic]),
                include_authorized_operations=True,
                request_timeout=self._timeout,
            )[topic].result(self._timeout)
        except TimeoutError:
            return None
        except KafkaException as exc:
            err = kafka_error_of(exc)
            if err is not None and err.code() in _UNAUTHORIZED:
                return frozenset()
            return None
        ops = described.authorized_operations
        return None if ops is None else frozenset(op.name for op in ops)

    def unauthorized(self, topic: str) -> bool:
        """Whether the cluster says this peer may not write ``topic`` (asked afresh)."""
        ops = self.operations(topic)
        return ops is not None and "WRITE" not in ops

    def probe(self, topic: str, subject: str | None = None) -> int:
        """:meth:`partitions` with fresh metadata: has a stopped topic's cause gone?"""
        self.forget(topic)
        return self.partitions(topic, subject)

    def forget(self, topic: str | None = None) -> None:
        """Drop what is cached of ``topic`` (all topics: None), e.g. after it was deleted."""
        if topic is None:
            self._partitions.clear()
            self._limits.clear()
        else:
            self._partitions.pop(topic, None)
            self._limits.pop(topic, None)

    def _found(self, topic: str, count: int) -> None:
        self._partitions[topic] = count
        asked = self._asked.pop(topic, None)
        self._creating.pop(topic, None)
        if asked is not None:
            log.info(
                "topic ready",
                extra={
                    "topic": topic,
                    "partitions": count,
                    "waited_s": round(self._clock() - asked, 3),
                },
            )

    def _metadata(
        self, named: str | None, topic: str, subject: str | None, timeout: float
    ) -> dict[str, Any]:
        try:
            md = (
                self._producer.list_topics(timeout=timeout)
                if named is None
                else self._producer.list_topics(topic=named, timeout=timeout)
            )
        except KafkaException as exc:
            raise classify(exc, op="metadata", subject=subject, topic=topic) from exc
        topics: dict[str, Any] = md.topics
        return topics

    def _ask_cluster(self, topic: str, subject: str | None, timeout: float) -> int:
        """``cluster`` mode: a metadata request naming the topic, as any Kafka client makes."""
        found = self._metadata(topic, topic, subject, timeout).get(topic)
        if found is not None and found.error is None and found.partitions:
            self._found(topic, len(found.partitions))
            return len(found.partitions)
        error = found.error if found is not None else None
        if error is not None and error.code() in _UNAUTHORIZED:
            # It does not exist (else it would have been seen): the cluster would create it.
            self._asked.pop(topic, None)
            raise self._unauthorized(topic, subject, "Create")
        now = self._clock()
        first = self._asked.setdefault(topic, now)
        code = error.name() if error is not None else None
        if now - first < CREATE_GRACE_S:
            raise _topic_error(
                TopicCreatingError,
                topic,
                subject,
                "does not exist yet; the cluster was asked for it",
                op="metadata",
                code=code,
            )
        raise _topic_error(
            TopicMissingError,
            topic,
            subject,
            "does not exist and the cluster did not create it "
            f"when asked ({CREATE_GRACE_S:g} s ago)",
            op="metadata",
            code=code,
            hint="the brokers do not create topics on first use (auto.create.topics.enable="
            "false): create it (`mdpeer routes apply ... --create-topics`, or Kafka's "
            'kafka-topics), or set topic_creation = "create"',
        )

    def _create(self, topic: str, subject: str | None, timeout: float) -> int:
        """``create`` mode: ask the admin API once, and look again on the next call."""
        future = self._creating.get(topic)
        if future is None:
            if self._admin is None:
                raise _topic_error(
                    TopicMissingError,
                    topic,
                    subject,
                    "does not exist (no admin client to create it)",
                    op="create_topics",
                )
            spec = NewTopic(
                topic,
                num_partitions=self.policy.partitions,
                replication_factor=self.policy.replication_factor,
            )
            future = self._admin.create_topics([spec], request_timeout=timeout)[topic]
            self._creating[topic] = future
            self._asked.setdefault(topic, self._clock())
            log.info(
                "creating topic",
                extra={
                    "topic": topic,
                    "subject": subject,
                    "partitions": self.policy.partitions,
                    "replication_factor": self.policy.replication_factor,
                },
            )
        if future.done():
            failure = future.exception()
            err = kafka_error_of(failure) if isinstance(failure, KafkaException) else None
            exists = err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS
            if failure is not None and not exists:
                self._creating.pop(topic, None)
                self._asked.pop(topic, None)
                text = err.str() if err is not None else str(failure)
                if err is not None and err.code() in _UNAUTHORIZED:
                    raise self._unauthorized(topic, subject, "Create")
                raise _topic_error(
                    TopicMissingError,
                    topic,
                    subject,
                    f"could not be created: {text}",
                    op="create_topics",
                    code=err.name() if err is not None else None,
                    hint="check topic_partitions / topic_replication_factor against the "
                    "cluster, or create the topic yourself",
                )
        raise _topic_error(
            TopicCreatingError, topic, subject, "is being created", op="create_topics"
        )

    def _missing(self, topic: str, subject: str | None, *, create: bool) -> TopicMissingError:
        hint = (
            "create it first"
            if not create
            else "create it (`mdpeer routes apply ... --create-topics`, or Kafka's "
            'kafka-topics), or set topic_creation = "cluster" or "create"'
        )
        return _topic_error(
            TopicMissingError, topic, subject, "does not exist", op="metadata", hint=hint
        )

    def _unauthorized(
        self, topic: str, subject: str | None, operation: str
    ) -> TopicUnauthorizedError:
        who = self.principal or "this peer's principal"
        return TopicUnauthorizedError(
            f"topic {topic!r}{_of(subject)}: not authorized: {operation} on Topic {topic!r} "
            f"for {who}",
            subject=subject,
            topic=topic,
            code="TOPIC_AUTHORIZATION_FAILED",
            hint=f"grant {who} {operation} on the topic (mdpeer acls, docs/SECURITY.md); "
            "its routes are retried meanwhile",
        )

    # --- size limits ------------------------------------------------------------------------

    def limit(self, topic: str) -> int | None:
        """The topic's own ``max.message.bytes``, once learned (:meth:`learn_limit`)."""
        return self._limits.get(topic)

    def learn_limit(self, topic: str) -> int | None:
        """Ask the cluster for the topic's ``max.message.bytes`` (after a batch was refused as
        too large); None when it cannot tell (no admin client, not allowed, no answer)."""
        if self._admin is None:
            return None
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        try:
            entries = self._admin.describe_configs([resource], request_timeout=self._timeout)[
                resource
            ].result(self._timeout)
            value = int(entries["max.message.bytes"].value)
        # TimeoutError: the future's own wait can end before the request's timeout does
        except (KafkaException, TimeoutError, KeyError, ValueError, TypeError) as exc:
            log.warning(
                "could not learn the topic's max.message.bytes",
                extra={"topic": topic, "error": str(exc)},
            )
            return None
        self._limits[topic] = value
        log.info("topic size limit learned", extra={"topic": topic, "max_message_bytes": value})
        return value


def _of(subject: str | None) -> str:
    return f" of subject {subject!r}" if subject else ""


def _topic_error(
    cls: type[E],
    topic: str,
    subject: str | None,
    what: str,
    *,
    op: str,
    code: str | None = None,
    hint: str | None = None,
) -> E:
    """``cls`` saying that ``topic`` (wanted for ``subject``) ``what``."""
    return cls(
        f"topic {topic!r}{_of(subject)} {what}",
        op=op,
        subject=subject,
        topic=topic,
        code=code,
        hint=hint,
    )


__all__ = ["CREATE_GRACE_S", "TopicCatalog", "TopicCreation", "TopicPolicy"]
