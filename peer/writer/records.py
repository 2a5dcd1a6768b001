"""The Kafka record of a MigratoryData message: headers, partition, size, dead-letter copy."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from confluent_kafka import KafkaError

from peer.control.shards import murmur2, to_positive
from peer.kafka.errors import RouteFaultError
from peer.model import Message
from peer.routes.model import Route

#: librdkafka's default ``message.max.bytes``
DEFAULT_MESSAGE_MAX_BYTES: Final = 1_000_000
#: bytes of a v2 record besides key, value and header bytes (length, attributes, deltas,
#: varints), rounded up so the up-front check errs on the safe side
RECORD_OVERHEAD: Final = 64
#: per header: the varints of its key and value lengths
HEADER_OVERHEAD: Final = 10

Headers = list[tuple[str, bytes]]
#: a produce ``on_delivery`` callback: (error or None, the confluent-kafka message)
DeliveryReport = Callable[[KafkaError | None, object], None]


class WriteOutcome(enum.Enum):
    """What :meth:`TransactionalWriter.write` did with a message."""

    WRITTEN = "written"
    SKIPPED = "skipped"  # oversize, route says skip: counted; the caller still checkpoints it
    DEAD_LETTERED = "dead-lettered"  # oversize: a truncated copy went to the dead-letter topic


@dataclass(slots=True)
class BatchResult:
    """What :meth:`TransactionalWriter.write_batch` did with a batch's messages."""

    #: messages handled (written, skipped or dead-lettered), from the first on
    done: int = 0
    #: of those, oversize ones the route's policy skipped or dead-lettered
    skipped: int = 0
    dead_lettered: int = 0
    #: why it stopped at ``messages[done]``, of which nothing was produced (None: it did not)
    fault: RouteFaultError | None = None

    @property
    def written(self) -> int:
        """Messages written as data records."""
        return self.done - self.skipped - self.dead_lettered


@dataclass(frozen=True, slots=True)
class CommitStats:
    """What one committed transaction held."""

    records: int  # data records (dead-letter records included)
    checkpoints: int
    skipped: int
    dead_lettered: int
    offsets: int
    duration_s: float  # from begin() to the end of the commit


@dataclass(slots=True)
class WriterStats:
    """Running totals, for metrics."""

    written: int = 0
    skipped_oversize: int = 0
    dead_lettered: int = 0
    checkpoints: int = 0
    commits: int = 0
    aborts: int = 0
    delivery_failures: int = 0
    #: times write() had to wait for the local queue to drain (backpressure)
    queue_waits: int = 0


def record_size(value: bytes, key: bytes | None, headers: Headers) -> int:
    """An upper bound of the size librdkafka checks against ``message.max.bytes``."""
    size = RECORD_OVERHEAD + len(value) + (len(key) if key is not None else 0)
    for name, hvalue in headers:
        size += HEADER_OVERHEAD + len(name.encode("utf-8")) + len(hvalue)
    return size


def java_partition(data: bytes, partitions: int) -> int:
    """The partition Kafka's Java default partitioner gives a record keyed ``data``."""
    return to_positive(murmur2(data)) % partitions


def message_headers(message: Message, prefix: str) -> Headers:
    """subject, epoch, seq, type, closure (if any), retained, qos (if known); UTF-8 values."""
    headers: Headers = [
        (f"{prefix}subject", message.subject.encode("utf-8")),
        (f"{prefix}epoch", str(message.epoch).encode()),
        (f"{prefix}seq", str(message.seq).encode()),
        (f"{prefix}type", message.message_type.encode("utf-8")),
    ]
    if message.closure is not None:
        headers.append((f"{prefix}closure", message.closure.encode("utf-8")))
    headers.append((f"{prefix}retained", b"true" if message.retained else b"false"))
    if message.qos is not None:
        headers.append((f"{prefix}qos", message.qos.encode("utf-8")))
    return headers


class RecordTemplate:
    """What every record of one route shares, computed once: the hot path per message is then
    a few encodes and one ``produce`` (see :meth:`headers_and_size`)."""

    __slots__ = (
        "_base_size",
        "_closure",
        "_closure_header",
        "_closure_name",
        "_closure_overhead",
        "_closure_size",
        "_epoch",
        "_epoch_header",
        "_epoch_name",
        "_qos_name",
        "_qos_overhead",
        "_retained",
        "_seq_name",
        "_subject_header",
        "_type_name",
        "_types",
        "key",
        "limit",
        "partition",
        "report",
        "route",
    )

    def __init__(
        self,
        route: Route,
        partition: int,
        prefix: str,
        report: DeliveryReport,
        limit: int = DEFAULT_MESSAGE_MAX_BYTES,
    ) -> None:
        self.route = route
        #: the largest record the route's topic takes (the producer's or the topic's limit)
        self.limit = limit
        #: the route's delivery callback (the writer's), shared by its records
        self.report = report
        self.partition = partition
        self.key = route_key(route)
        self._subject_header = (f"{prefix}subject", route.subject.encode("utf-8"))
        self._epoch_name = f"{prefix}epoch"
        self._seq_name = f"{prefix}seq"
        self._type_name = f"{prefix}type"
        self._closure_name = f"{prefix}closure"
        self._qos_name = f"{prefix}qos"
        retained = f"{prefix}retained"
        #: by ``message.retained``: (the header, its value's length)
        self._retained = (((retained, b"false"), 5), ((retained, b"true"), 4))
        #: message type -> (the header, its value's length), for the documented ones
        self._types = {t: ((self._type_name, v), len(v)) for t, v in _TYPES.items()}
        fixed = (self._subject_header[0], self._epoch_name, self._seq_name, self._type_name)
        #: besides the key, the content, and the values of epoch, seq, type and retained
        self._base_size = (
            RECORD_OVERHEAD
            + (len(self.key) if self.key is not None else 0)
            + sum(HEADER_OVERHEAD + len(n.encode("utf-8")) for n in (*fixed, retained))
            + len(self._subject_header[1])
        )
        #: a closure's or qos header's size besides its value
        self._closure_overhead = HEADER_OVERHEAD + len(self._closure_name.encode("utf-8"))
        self._qos_overhead = HEADER_OVERHEAD + len(self._qos_name.encode("utf-8"))
        self._epoch = -1
        self._epoch_header = (self._epoch_name, b"")
        #: the last closure seen, its header and that header's size: a batch's messages
        #: usually share one, so it is encoded once, not per message
        self._closure: str | None = None
        self._closure_header = (self._closure_name, b"")
        self._closure_size = 0

    def headers_and_size(self, message: Message) -> tuple[Headers, int]:
        """``message_headers(message, prefix)`` and ``record_size`` of its record, fast: called
        for every message, so every part that does not change is made once."""
        if message.epoch != self._epoch:  # epochs change rarely: encode once
            self._epoch = message.epoch
            self._epoch_header = (self._epoch_name, b"%d" % message.epoch)
        seq = b"%d" % message.seq
        kind = self._types.get(message.message_type)
        if kind is None:
            value = message.message_type.encode("utf-8")
            kind = ((self._type_name, value), len(value))
        retained = self._retained[message.retained]
        size = (
            self._base_size
            + len(message.content)
            + len(self._epoch_header[1])
            + len(seq)
            + kind[1]
            + retained[1]
        )
        closure = message.closure
        if closure is None:
            headers = [
                self._subject_header,
                self._epoch_header,
                (self._seq_name, seq),
                kind[0],
                retained[0],
            ]
        else:
            if closure != self._closure:
                value = closure.encode("utf-8")
                self._closure, self._closure_header = closure, (self._closure_name, value)
                self._closure_size = self._closure_overhead + len(value)
            headers = [
                self._subject_header,
                self._epoch_header,
                (self._seq_name, seq),
                kind[0],
                self._closure_header,
                retained[0],
            ]
            size += self._closure_size
        if message.qos is not None:
            value = message.qos.encode("utf-8")
            headers.append((self._qos_name, value))
            size += self._qos_overhead + len(value)
        return headers, size


#: the documented message types, encoded once
_TYPES: Final = {t: t.encode() for t in ("SNAPSHOT", "HISTORICAL", "RECOVERED", "UPDATE")}


def route_key(route: Route) -> bytes | None:
    return route.key.encode("utf-8") if route.key is not None else None


def partition_basis(route: Route) -> bytes:
    """What a record's partition is hashed from: the key, or the subject when keyless (I5)."""
    return (route.key if route.key is not None else route.subject).encode("utf-8")


def dead_letter_record(
    message: Message, route: Route, size: int, limit: int, prefix: str
) -> tuple[bytes | None, bytes, Headers]:
    """(key, value, headers) of the dead-letter copy of an oversize ``message``.

    Headers: the message's own (subject, epoch, seq, ...) plus ``reason=oversize``, the
    record ``size``, the ``limit`` and the ``original-topic``, and ``truncated`` with the
    number of content bytes kept. The value keeps as many leading content bytes as fit under
    the limit (so it may end inside a UTF-8 sequence); the key is the route's.
    """
    key = route_key(route)
    headers = message_headers(message, prefix)
    headers += [
        (f"{prefix}reason", b"oversize"),
        (f"{prefix}size", str(size).encode()),
        (f"{prefix}limit", str(limit).encode()),
        (f"{prefix}original-topic", route.topic.encode("utf-8")),
        # the widest value it can take, so the room computed below is never too large
        (f"{prefix}truncated", str(len(message.content)).encode()),
    ]
    room = max(limit - record_size(b"", key, headers), 0)
    value = message.content[:room]
    headers[-1] = (f"{prefix}truncated", str(len(value)).encode())
    return key, value, headers


__all__ = [
    "DEFAULT_MESSAGE_MAX_BYTES",
    "HEADER_OVERHEAD",
    "RECORD_OVERHEAD",
    "BatchResult",
    "CommitStats",
    "DeliveryReport",
    "Headers",
    "RecordTemplate",
    "WriteOutcome",
    "WriterStats",
    "dead_letter_record",
    "java_partition",
    "message_headers",
    "partition_basis",
    "record_size",
    "route_key",
]
