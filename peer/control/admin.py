"""Kafka operations of the admin commands: create/describe the control topic (and, from
:mod:`peer.control.writes`, write routes and commands to it).

The control topic (DESIGN.md) is compacted and has one partition per shard. Its settings:

* ``cleanup.policy=compact`` (and only that: ``compact,delete`` would let retention delete a
  route nobody changed). Refused otherwise, since a deleted route or checkpoint is lost data.
* ``segment.ms=600000`` (10 min), ``segment.bytes=16 MiB``: the active segment is never
  compacted, so small segments let the cleaner reach the checkpoints the peers write every
  ``commit_interval`` and keep the partition (and so the on_assign rebuild) short.
* ``min.cleanable.dirty.ratio=0.1`` and ``max.compaction.lag.ms=3600000``: compact often,
  and at the latest an hour after a record was superseded.
* ``min.compaction.lag.ms=60000``: the last minute of records stays in full, which costs
  little and lets an operator read recent history when investigating.
* ``delete.retention.ms=86400000`` (24 h): a tombstone (a removed route) stays that long, so
  any reader that began before it was written still sees it; a rebuild takes seconds.
* ``min.insync.replicas=2`` when the replication factor is 3 or more.

The partition count is the shard count and never changes: ``shard(subject) = murmur2 mod P``,
so another P would move almost every subject to another partition, away from its route and
checkpoint records. :func:`ensure_control_topic` refuses that with
:class:`ShardCountMismatchError`.

The writes of route and command records (one transaction each, ``<group>-admin``) live in
:mod:`peer.control.writes`; they are imported here too, where the commands look for them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.cimpl import NewTopic

from peer.control.reader import (
    DEFAULT_TIMEOUT,
    ControlTopicMissingError,
    KafkaUnavailableError,
    kafka_unavailable,
)
from peer.control.writes import (
    ControlWriteError,
    RouteChange,
    RouteRemoval,
    admin_producer,
    admin_transactional_id,
    route_records,
    write_command,
    write_routes,
)
from peer.errors import ConfigError, MdpeerError
from peer.kafka.clients import with_callbacks
from peer.kafka.errors import (
    AUTHORIZATION_CODES,
    NotAuthorizedError,
    kafka_error_of,
    not_authorized,
)
from peer.kafka.refusals import list_topics
from peer.routes.model import validate_topic

log = logging.getLogger(__name__)

#: topic configuration of a new control topic (see the module docstring for why)
CONTROL_TOPIC_CONFIG: Final[Mapping[str, str]] = {
    "cleanup.policy": "compact",
    "segment.ms": "600000",
    "segment.bytes": str(16 * 1024 * 1024),
    "min.cleanable.dirty.ratio": "0.1",
    "max.compaction.lag.ms": "3600000",
    "min.compaction.lag.ms": "60000",
    "delete.retention.ms": "86400000",
}
MAX_SHARDS: Final = 10_000


class ShardCountMismatchError(MdpeerError):
    """The control topic exists with another partition (shard) count than asked."""

    def __init__(self, topic: str, existing: int, wanted: int) -> None:
        self.topic = topic
        self.existing = existing
        self.wanted = wanted
        super().__init__(
            f"control topic {topic!r} has {existing} shards (partitions), not {wanted}: the "
            "shard count of a deployment cannot change, because shard = murmur2(subject) mod "
            "shards would move almost every subject away from its routes and checkpoints",
            hint=f"keep --shards {existing}; to change it, create a new group (new control "
            "topic) with the new count, apply the same routes there, and switch the peers to "
            "it (subjects restart by their start policy, or reset their checkpoints)",
        )


class ControlTopicConfigError(MdpeerError):
    """The control topic exists but is unfit (e.g. not compacted)."""


@dataclass(frozen=True, slots=True)
class ControlTopicInfo:
    topic: str
    created: bool
    partitions: int
    replication_factor: int = 0
    #: the topic's cleanup.policy and the compaction settings above, as the broker reports
    config: Mapping[str, str] = field(default_factory=dict, compare=False)


def admin_client(conf: Mapping[str, Any]) -> AdminClient:
    """An AdminClient on ``conf`` (bootstrap.servers + security properties), logging through
    Python logging instead of stderr."""
    return AdminClient(with_callbacks(conf, "admin"))


def _topic_meta(admin: AdminClient, topic: str, bootstrap: str | None, timeout: float) -> Any:
    try:
        # All topics, not list_topics(topic=...): a per-topic lookup may auto-create it.
        meta = list_topics(admin, timeout).topics.get(topic)
        if meta is None:  # or not visible: a topic one may not describe is left out
            admin.describe_topics(TopicCollection([topic]), request_timeout=timeout)[topic].result(
                timeout
            )
    except KafkaException as exc:
        err = kafka_error_of(exc)
        if err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        raise not_authorized(err, "Describe", topic) or kafka_unavailable(
            bootstrap, timeout, exc
        ) from None
    except TimeoutError as exc:  # the future's wait ended before the request's timeout
        raise KafkaUnavailableError(
            bootstrap or "the bootstrap servers", timeout, str(exc) or "no answer"
        ) from None
    return meta


def _topic_config(
    admin: AdminClient, topic: str, bootstrap: str | None, timeout: float
) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(
            timeout
        )
    except KafkaException as exc:
        denied = not_authorized(kafka_error_of(exc), "DescribeConfigs", topic)
        raise denied or kafka_unavailable(bootstrap, timeout, exc) from None
    wanted = set(CONTROL_TOPIC_CONFIG) | {"min.insync.replicas"}
    return {k: str(e.value) for k, e in entries.items() if k in wanted}


def describe_control_topic(
    admin: AdminClient,
    topic: str,
    *,
    bootstrap: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> ControlTopicInfo:
    """The control topic as it is; :class:`ControlTopicMissingError` if it does not exist,
    :class:`ControlTopicConfigError` if it is not compacted."""
    meta = _topic_meta(admin, topic, bootstrap, timeout)
    if meta is None:
        raise ControlTopicMissingError(topic)
    if meta.error is not None:
        raise ControlTopicConfigError(f"control topic {topic!r}: {meta.error.str()}")
    config = _topic_config(admin, topic, bootstrap, timeout)
    policy = config.get("cleanup.policy", "")
    if policy != "compact":
        raise ControlTopicConfigError(
            f"control topic {topic!r} has cleanup.policy={policy!r}, not 'compact': retention "
            "would delete routes and checkpoints nobody changed",
            hint=f"set it: kafka-configs --alter --entity-type topics --entity-name {topic} "
            "--add-config cleanup.policy=compact (or use another group)",
        )
    partitions = meta.partitions
    replicas = len(partitions[0].replicas) if partitions else 0
    return ControlTopicInfo(
        topic, created=False, partitions=len(partitions), replication_factor=replicas, config=config
    )


def ensure_control_topic(
    admin: AdminClient,
    topic: str,
    shards: int,
    replication_factor: int | None = None,
    *,
    bootstrap: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> ControlTopicInfo:
    """Create the control topic with ``shards`` partitions, or check the existing one.

    Idempotent: an existing compacted topic with the same partition count is fine
    (``created=False``). Another count raises :class:`ShardCountMismatchError`; a topic that
    is not compacted, :class:`ControlTopicConfigError`. ``replication_factor`` None: the
    broker's default. Kafka not answering: :class:`KafkaUnavailableError` within ``timeout``.
    """
    validate_topic(topic, "control_topic")
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ConfigError("shards", shards, f"expected an integer from 1 to {MAX_SHARDS}")
    if replication_factor is not None and (
        isinstance(replication_factor, bool)
        or not isinstance(replication_factor, int)
        or not 1 <= replication_factor <= 32
    ):
        raise ConfigError("replication_factor", replication_factor, "expected 1 to 32")
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(deadline - time.monotonic(), 0.1)

    meta = _topic_meta(admin, topic, bootstrap, left())
    created = False
    if meta is None:
        config = dict(CONTROL_TOPIC_CONFIG)
        if replication_factor is not None and replication_factor >= 3:
            config["min.insync.replicas"] = "2"
        spec = NewTopic(
            topic,
            num_partitions=shards,
            replication_factor=-1 if replication_factor is None else replication_factor,
            config=config,
        )
        try:
            admin.create_topics([spec], operation_timeout=left(), request_timeout=left())[
                topic
            ].result(left())
            created = True
        except KafkaException as exc:
            err = kafka_error_of(exc)
            code = err.code() if err is not None else None
            if code == KafkaError.TOPIC_ALREADY_EXISTS:
                pass  # another init won the race: check what it made below
            elif code in AUTHORIZATION_CODES:  # the topic's Create is the least to grant
                raise NotAuthorizedError("Create", "Topic", topic, role="admin") from None
            elif code in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT):
                raise kafka_unavailable(bootstrap, timeout, exc) from None
            else:
                detail = err.str() if isinstance(err, KafkaError) else str(exc)
                raise ControlTopicConfigError(
                    f"control topic {topic!r} could not be created: {detail}"
                ) from None
        _wait_for_leaders(admin, topic, bootstrap, deadline, timeout)
        info = describe_existing_control_topic(
            admin, topic, bootstrap, deadline, timeout, created=created
        )
    else:
        info = describe_control_topic(admin, topic, bootstrap=bootstrap, timeout=left())
    if info.partitions != shards:
        raise ShardCountMismatchError(topic, info.partitions, shards)
    return ControlTopicInfo(topic, created, info.partitions, info.replication_factor, info.config)


def describe_existing_control_topic(
    admin: AdminClient,
    topic: str,
    bootstrap: str | None,
    deadline: float,
    timeout: float,
    *,
    created: bool = False,
) -> ControlTopicInfo:
    """:func:`describe_control_topic` of a topic known to exist (it was just created).

    Brokers learn of a new topic one after the other: the broker a request lands on may not
    know it yet (seen on a 3-node cluster: ``mdpeer init`` created the topic, then reported it
    missing). Until ``deadline`` "missing" means "not here yet"; so does a metadata error of
    a topic this process ``created`` (it was made compacted).
    """
    transient: tuple[type[MdpeerError], ...] = (ControlTopicMissingError, KafkaUnavailableError)
    if created:
        transient += (ControlTopicConfigError,)
    while True:
        try:
            return describe_control_topic(
                admin, topic, bootstrap=bootstrap, timeout=max(deadline - time.monotonic(), 0.1)
            )
        except transient as exc:
            if time.monotonic() >= deadline:
                if isinstance(exc, ControlTopicMissingError):
                    raise KafkaUnavailableError(
                        bootstrap or "the bootstrap servers",
                        timeout,
                        f"control topic {topic!r} was created but not every broker knows it yet",
                    ) from None
                raise
        time.sleep(0.1)


def _wait_for_leaders(
    admin: AdminClient, topic: str, bootstrap: str | None, deadline: float, timeout: float
) -> None:
    while True:
        meta = _topic_meta(admin, topic, bootstrap, max(deadline - time.monotonic(), 0.1))
        if (
            meta is not None
            and meta.error is None
            and meta.partitions
            and all(p.leader >= 0 for p in meta.partitions.values())
        ):
            return
        if time.monotonic() >= deadline:
            raise KafkaUnavailableError(
                bootstrap or "the bootstrap servers",
                timeout,
                f"control topic {topic!r} has no leader for every partition yet",
            )
        time.sleep(0.05)


__all__ = [
    "CONTROL_TOPIC_CONFIG",
    "ControlTopicConfigError",
    "ControlTopicInfo",
    "ControlWriteError",
    "RouteChange",
    "RouteRemoval",
    "ShardCountMismatchError",
    "admin_client",
    "admin_producer",
    "admin_transactional_id",
    "describe_control_topic",
    "ensure_control_topic",
    "route_records",
    "write_command",
    "write_routes",
]
