"""Kafka operations of the admin commands: create/describe the control topic, write routes and
commands to it.

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

Writes are all-or-nothing: every call of :func:`write_routes` / :func:`write_command` is one
Kafka transaction of a producer whose ``transactional.id`` is ``<group>-admin``. Peers read
the control topic with read_committed, so they see all of a ``routes apply`` or none of it,
and a crashed admin command leaves nothing half applied (its transaction aborts). Two admin
commands running at once fence each other: the older one fails with a clear error, nothing
of it applied. (Peer transactional ids are ``<group>-<peer id>``, so no peer may be called
``admin``.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.cimpl import NewTopic

from peer.control import Command, encode_command, encode_route, encode_route_removal
from peer.control.reader import (
    DEFAULT_TIMEOUT,
    ControlTopicMissingError,
    KafkaUnavailableError,
    kafka_unavailable,
)
from peer.control.shards import shard_of
from peer.errors import ConfigError, MdpeerError
from peer.kafka.clients import with_callbacks
from peer.kafka.errors import PRODUCER_FENCED_CODES, kafka_error_of
from peer.routes.model import Route, RouteDiff, validate_subject, validate_topic

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


class ControlWriteError(MdpeerError):
    """Records for the control topic were not written; nothing of the batch was applied."""


@dataclass(frozen=True, slots=True)
class ControlTopicInfo:
    topic: str
    created: bool
    partitions: int
    replication_factor: int = 0
    #: the topic's cleanup.policy and the compaction settings above, as the broker reports
    config: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class RouteRemoval:
    """Remove the route of ``subject`` (a tombstone on ``route:<subject>``)."""

    subject: str

    def __post_init__(self) -> None:
        validate_subject(self.subject)


RouteChange = Route | RouteRemoval


def admin_client(conf: Mapping[str, Any]) -> AdminClient:
    """An AdminClient on ``conf`` (bootstrap.servers + security properties), logging through
    Python logging instead of stderr."""
    return AdminClient(with_callbacks(conf, "admin"))


def _topic_meta(admin: AdminClient, topic: str, bootstrap: str | None, timeout: float) -> Any:
    try:
        # All topics, not list_topics(topic=...): a per-topic lookup may auto-create it.
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise kafka_unavailable(bootstrap, timeout, exc) from None
    return md.topics.get(topic)


def _topic_config(
    admin: AdminClient, topic: str, bootstrap: str | None, timeout: float
) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(
            timeout
        )
    except KafkaException as exc:
        raise kafka_unavailable(bootstrap, timeout, exc) from None
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


# --- writing ----------------------------------------------------------------------------------


def admin_transactional_id(group: str) -> str:
    return f"{group}-admin"


def admin_producer(
    conf: Mapping[str, Any], group: str, *, timeout: float = DEFAULT_TIMEOUT
) -> Producer:
    """The admin commands' transactional producer (``transactional.id = <group>-admin``).

    ``init_transactions`` here fences any older admin producer of the group and aborts what
    it left open. :class:`KafkaUnavailableError` if Kafka does not answer within ``timeout``.
    """
    full = with_callbacks(conf, "admin-producer")
    full.update(
        {
            "transactional.id": admin_transactional_id(group),
            "enable.idempotence": True,
            "acks": "all",
            "transaction.timeout.ms": 60_000,
        }
    )
    producer = Producer(full)
    try:
        producer.init_transactions(timeout)
    except KafkaException as exc:
        raise kafka_unavailable(str(conf.get("bootstrap.servers", "")), timeout, exc) from None
    return producer


def route_records(
    changes: RouteDiff | Iterable[RouteChange], partitions: int
) -> list[tuple[int, bytes, bytes | None]]:
    """``(partition, key, value)`` of each change, in order; removals are tombstones."""
    if isinstance(changes, RouteDiff):
        items: list[RouteChange] = [
            *changes.added,
            *(after for _, after in changes.changed),
            *(RouteRemoval(r.subject) for r in changes.removed),
        ]
    else:
        items = list(changes)
    out: list[tuple[int, bytes, bytes | None]] = []
    for item in items:
        if isinstance(item, Route):
            key, value = encode_route(item)
            out.append((shard_of(item.subject, partitions), key, value))
        elif isinstance(item, RouteRemoval):
            key, tomb = encode_route_removal(item.subject)
            out.append((shard_of(item.subject, partitions), key, tomb))
        else:
            raise TypeError(f"expected a Route or RouteRemoval, got {item!r}")
    return out


def write_routes(
    producer: Producer,
    topic: str,
    partitions: int,
    changes: RouteDiff | Iterable[RouteChange],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """Write route records (tombstones for removals) in one transaction; returns how many.

    Each goes to partition ``shard_of(subject, partitions)``. All land or none do
    (:class:`ControlWriteError`, or :class:`KafkaUnavailableError` if Kafka stopped
    answering).
    """
    records = route_records(changes, partitions)
    _write_transaction(producer, topic, records, timeout)
    return len(records)


def write_command(
    producer: Producer,
    topic: str,
    partitions: int,
    subject: str,
    command: Command,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    **meta: Any,
) -> None:
    """Write ``cmd:<subject>`` (applied by the subject's owner, in order) in a transaction."""
    key, value = encode_command(subject, command, **meta)
    _write_transaction(producer, topic, [(shard_of(subject, partitions), key, value)], timeout)


def _write_transaction(
    producer: Producer,
    topic: str,
    records: list[tuple[int, bytes, bytes | None]],
    timeout: float,
) -> None:
    if not records:
        return
    deadline = time.monotonic() + timeout
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            failures.append(f"{msg.key()!r} to partition {msg.partition()}: {err.str()}")

    try:
        producer.begin_transaction()
        for partition, key, value in records:
            while True:
                try:
                    producer.produce(
                        topic, key=key, value=value, partition=partition, on_delivery=on_delivery
                    )
                    break
                except BufferError:
                    # the local queue is full: let deliveries drain it (bounded by deadline)
                    if time.monotonic() >= deadline:
                        raise
                    producer.poll(0.1)
        remaining = producer.flush(max(deadline - time.monotonic(), 0.1))
        if remaining or failures:
            reason = failures[0] if failures else f"{remaining} records not delivered in time"
            raise ControlWriteError(f"control topic {topic!r}: {reason}; nothing applied")
        producer.commit_transaction(max(deadline - time.monotonic(), 0.1))
    except (KafkaException, ControlWriteError, BufferError) as exc:
        _abort(producer, deadline)
        if isinstance(exc, ControlWriteError):
            raise
        err = kafka_error_of(exc) if isinstance(exc, KafkaException) else None
        if err is not None and err.code() in PRODUCER_FENCED_CODES:
            raise ControlWriteError(
                f"control topic {topic!r}: another admin command of this group started "
                "meanwhile and fenced this one; nothing applied",
                hint="run the command again once the other one finished",
            ) from None
        if err is not None and err.code() in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT):
            raise KafkaUnavailableError("the bootstrap servers", timeout, err.str()) from None
        detail = err.str() if err is not None else str(exc) or type(exc).__name__
        raise ControlWriteError(f"control topic {topic!r}: {detail}; nothing applied") from None


def _abort(producer: Producer, deadline: float) -> None:
    try:
        producer.abort_transaction(max(deadline - time.monotonic(), 1.0))
    except KafkaException as exc:
        # Unabortable (fatal or fenced): the transaction times out on the broker and aborts
        # there; read_committed readers never see it either way.
        log.warning("aborting the admin transaction failed: %s", exc)


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
