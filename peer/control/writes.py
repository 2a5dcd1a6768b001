"""The admin commands' writes to the control topic: route and command records, each batch in
one Kafka transaction.

Writes are all-or-nothing: every call of :func:`write_routes` / :func:`write_command` is one
Kafka transaction of a producer whose ``transactional.id`` is ``<group>-admin``. Peers read
the control topic with read_committed, so they see all of a ``routes apply`` or none of it,
and a crashed admin command leaves nothing half applied (its transaction aborts). Two admin
commands running at once fence each other: the older one fails with a clear error, nothing
of it applied. (Peer transactional ids are ``<group>-<peer id>``, so no peer may be called
``admin``.) The topic itself is made and checked by :mod:`peer.control.admin`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Producer

from peer.control import Command, encode_command, encode_route, encode_route_removal
from peer.control.reader import DEFAULT_TIMEOUT, KafkaUnavailableError, kafka_unavailable
from peer.control.shards import shard_of
from peer.errors import MdpeerError
from peer.kafka.clients import drain, with_callbacks
from peer.kafka.errors import PRODUCER_FENCED_CODES, kafka_error_of, not_authorized
from peer.routes.model import Route, RouteDiff, validate_subject

log = logging.getLogger(__name__)

_TOPIC_DENIED: Final = frozenset({KafkaError.TOPIC_AUTHORIZATION_FAILED})


class ControlWriteError(MdpeerError):
    """Records for the control topic were not written; nothing of the batch was applied."""


@dataclass(frozen=True, slots=True)
class RouteRemoval:
    """Remove the route of ``subject`` (a tombstone on ``route:<subject>``)."""

    subject: str

    def __post_init__(self) -> None:
        validate_subject(self.subject)


RouteChange = Route | RouteRemoval


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
        denied = not_authorized(kafka_error_of(exc), name=admin_transactional_id(group))
        if denied is not None:
            raise denied.named(group=group, role="admin") from None
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
    purged: list[bool] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            failures.append(f"{msg.key()!r} to partition {msg.partition()}: {err.str()}")
            purged.append(err.code() == KafkaError._PURGE_QUEUE)

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
        remaining = drain(producer, max(deadline - time.monotonic(), 0.1))
        if failures and not remaining and all(purged):
            # The transaction failed and took the records with it; its commit names why
            # (e.g. no Write on the topic).
            producer.commit_transaction(max(deadline - time.monotonic(), 0.1))
        if remaining or failures:
            reason = failures[0] if failures else f"{remaining} records not delivered in time"
            raise ControlWriteError(f"control topic {topic!r}: {reason}; nothing applied")
        producer.commit_transaction(max(deadline - time.monotonic(), 0.1))
    except (KafkaException, ControlWriteError, BufferError) as exc:
        _abort(producer, deadline)
        if isinstance(exc, ControlWriteError):
            raise
        err = kafka_error_of(exc) if isinstance(exc, KafkaException) else None
        denied = not_authorized(err, name=topic if err and err.code() in _TOPIC_DENIED else None)
        if denied is not None:
            raise denied.named(role="admin") from None
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
    "ControlWriteError",
    "RouteChange",
    "RouteRemoval",
    "admin_producer",
    "admin_transactional_id",
    "route_records",
    "write_command",
    "write_routes",
]
