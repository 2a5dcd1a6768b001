"""Read control partitions from the beginning to their end and rebuild each shard's state.

This is lifecycle step 2 of DESIGN.md (on_assign: rebuild routes + checkpoints before
fetching) and the read side of the admin commands (``routes list``, ``checkpoints list``,
``status``).

The reader is a plain consumer that never joins a group: ``assign`` (not ``subscribe``), no
offset commits, so reading never disturbs the peers' group and needs no group ACL beyond
Describe on the deployment's group, whose id it borrows (librdkafka looks that group's
coordinator up even for ``assign``), and Read on the control topic. It reads with
``isolation.level=read_committed``: checkpoints of aborted transactions must never be
applied, or a subject would resume after data that never became visible (I2, I4).

Where "the end" is. For a read_committed consumer the end is the partition's *last stable
offset* (LSO), not the high watermark: the high watermark also counts records of open
transactions, which this consumer will not be given until they commit or abort, and a peer's
transaction stays open up to ``transaction.timeout.ms`` if the peer died. librdkafka reports
the LSO through ``PARTITION_EOF`` when the fetch position reaches it (aborted records and
transaction markers before it are skipped, the position still advances past them); the
offset it carries is where a group consumer resumes. One race remains: a transaction that
was just committed is acknowledged before the coordinator has written its markers, so for a
few milliseconds its records are below the high watermark but above the LSO. The reader
therefore aims at the high watermark seen when it began and gives the LSO ``settle`` seconds
to reach it; only then does it accept the LSO as the end (a transaction really is open).
That is right for a look (the admin commands), never for an owner: the open transaction may
be a paused peer's (a zombie) that has already sent its offsets and can still commit until
the coordinator aborts it; an owner that started from the checkpoints before it would write
the same messages again. So the peer's rebuild passes ``settle=None``: the read ends only
when the LSO has passed the high watermark it aimed at (the transaction committed or
aborted), whatever that takes within the deadline.
A deadline bounds the whole read: :class:`ControlReadTimeoutError`, never a hang.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from peer.control import (
    BlockRecord,
    CheckpointRecord,
    CommandRecord,
    ControlRecordError,
    MisplacedRecordError,
    PeerRecord,
    ShardState,
    UnsupportedVersionError,
    decode,
)
from peer.errors import MdpeerError
from peer.kafka.clients import reader_config, with_callbacks
from peer.kafka.errors import NotAuthorizedError, kafka_error_of, not_authorized
from peer.kafka.refusals import Login, list_topics
from peer.routes.model import Route, RouteTable

log = logging.getLogger(__name__)

#: how long a command may wait for Kafka before it says Kafka is unreachable
DEFAULT_TIMEOUT: Final = 10.0


class KafkaUnavailableError(MdpeerError):
    """Kafka did not answer within the time allowed. Names the bootstrap servers."""

    def __init__(self, bootstrap: str, timeout: float, detail: str = "") -> None:
        self.bootstrap = bootstrap
        self.timeout = timeout
        super().__init__(
            f"Kafka at {bootstrap!r} did not answer within {round(timeout, 1):g}s"
            + (f" ({detail})" if detail else ""),
            hint="check --bootstrap / MDPEER_BOOTSTRAP, that the brokers run and are reachable "
            "from here, and the security settings (kafka.* properties)",
        )


def kafka_unavailable(bootstrap: str | None, timeout: float, exc: KafkaException) -> MdpeerError:
    """The :class:`KafkaUnavailableError` a client's exception stands for."""
    err = kafka_error_of(exc)
    detail = err.str() if err is not None else str(exc)
    return KafkaUnavailableError(bootstrap or "the bootstrap servers", timeout, detail)


class ControlTopicMissingError(MdpeerError):
    """The control topic does not exist (the deployment was not initialised)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(
            f"control topic {topic!r} does not exist",
            hint="run `mdpeer init` for this group first (or check --group / control_topic)",
        )


class ControlReadTimeoutError(MdpeerError):
    """A control partition was not read to its end before the deadline."""

    def __init__(
        self,
        topic: str,
        pending: Mapping[int, int | None],
        timeout: float,
        *,
        open_transaction: bool = False,
    ) -> None:
        self.topic = topic
        self.pending = dict(pending)
        self.open_transaction = open_transaction
        where = ", ".join(
            f"{p} (at offset {'start' if o is None else o})" for p, o in sorted(pending.items())
        )
        super().__init__(
            f"control topic {topic!r}: partitions {where} not read to their end within "
            f"{timeout:g}s" + (" (a transaction there stayed open)" if open_transaction else ""),
            hint=(
                "a paused or slow peer holds a transaction open until the broker aborts it "
                "(transaction.timeout.ms); this peer exits rather than risk writing twice"
                if open_transaction
                else "Kafka is slow or unreachable; retry, or raise the timeout"
            ),
        )


@dataclass(slots=True)
class ShardStateWithEnd:
    """A shard rebuilt from its partition, and the offset its read ended at.

    ``end_offset`` is the next offset to consume (the LSO reached): the runner resumes its
    group consumer there, so no record is applied twice or skipped.
    """

    state: ShardState
    end_offset: int
    #: records that could not be applied (bad or misplaced); logged, kept for status output
    problems: list[ControlRecordError] = field(default_factory=list)


def _bootstrap(conf: Mapping[str, Any]) -> str:
    return str(conf.get("bootstrap.servers") or conf.get("metadata.broker.list") or "?")


def topic_partitions(consumer: Consumer, topic: str, bootstrap: str, timeout: float) -> int:
    """The partition count (shard count P) of ``topic``, from the cluster's metadata."""
    try:
        md = list_topics(consumer, max(timeout, 0.1), topic)
    except KafkaException as exc:
        raise kafka_unavailable(bootstrap, timeout, exc) from None
    meta = md.topics.get(topic)
    if meta is None or (
        meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    ):
        raise ControlTopicMissingError(topic)
    denied = not_authorized(meta.error, "Read", topic)  # Read implies the Describe asked here
    if denied is not None:
        raise denied
    if meta.error is not None:
        raise MdpeerError(f"control topic {topic!r}: {meta.error.str()}")
    return len(meta.partitions)


#: longest single watermark request (they are repeated until the read's deadline)
_WATERMARK_WAIT_S: Final = 2.0

#: how long a partition may take to make stable what its high watermark already counts
DEFAULT_SETTLE: Final = 2.0


@dataclass(slots=True)
class _Progress:
    """Where the read of one partition stands."""

    #: the high watermark when the read began: everything below it is committed, aborted or
    #: in an open transaction
    target: int
    #: the latest PARTITION_EOF (the LSO reached), and when the first one came
    eof: int | None = None
    first_eof_at: float | None = None
    #: offset of the last record read (for the timeout message)
    last: int | None = None


def _high_watermarks(
    conf: Mapping[str, Any], topic: str, partitions: list[int], bootstrap: str, deadline: float
) -> dict[int, int]:
    # A read_uncommitted handle: for a read_committed one librdkafka reports the LSO instead.
    probe = Consumer(with_callbacks({**conf, "isolation.level": "read_uncommitted"}, "reader"))
    started = time.monotonic()
    try:
        out = {}
        for p in partitions:
            # A broker that just died fails the request at once (_DESTROY_BROKER, _TRANSPORT,
            # not the leader): ask again, in short waits, until the deadline (RELIABILITY.md,
            # finding 4).
            while True:
                wait = min(max(deadline - time.monotonic(), 0.1), _WATERMARK_WAIT_S)
                try:
                    _, high = probe.get_watermark_offsets(
                        TopicPartition(topic, p), timeout=wait, cached=False
                    )
                    break
                except KafkaException as exc:
                    if time.monotonic() + 0.1 >= deadline:
                        waited = time.monotonic() - started
                        raise KafkaUnavailableError(bootstrap, waited, str(exc.args[0])) from None
                    time.sleep(0.1)
            out[p] = int(high)
        return out
    finally:
        probe.close()


def read_shards(
    consumer_conf_base: Mapping[str, Any],
    topic: str,
    partitions: Iterable[int] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    settle: float | None = DEFAULT_SETTLE,
) -> dict[int, ShardStateWithEnd]:
    """Rebuild the state of ``partitions`` (default: all) of the control topic.

    Each partition is read from its beginning with read_committed until the read reaches
    the high watermark seen when it began. Right after a transaction commits, its records
    sit below the high watermark but not yet below the LSO (the coordinator writes the
    commit markers just after acknowledging the commit), so a read that stopped at the
    first LSO could miss the newest checkpoints; it waits up to ``settle`` seconds for the
    LSO to catch up. A transaction that stays open (its producer died or is slow) holds
    the LSO back until it times out: after ``settle`` the read ends at the LSO, with every
    committed record before it. With ``settle=None`` (an owner's rebuild) it never does:
    the read waits for the open transaction to end, or raises at the deadline.

    Raises :class:`KafkaUnavailableError` / :class:`ControlTopicMissingError` /
    :class:`ControlReadTimeoutError` within ``timeout`` seconds; a record written by a newer
    mdpeer raises :class:`UnsupportedVersionError` (the shard must not be owned by this one).
    """
    conf = reader_config(consumer_conf_base)
    consumer = Consumer(conf)
    try:
        return _read(consumer, conf, topic, partitions, timeout, settle=settle)
    except NotAuthorizedError as exc:
        # The reader's group is the deployment's (reader_config): name both for the grant.
        group = str(conf["group.id"])
        name = group if exc.resource_type == "Group" else None
        raise exc.named(name=name, principal=Login.of(conf).principal, group=group) from None
    finally:
        consumer.close()


def _read(
    consumer: Consumer,
    conf: Mapping[str, Any],
    topic: str,
    partitions: Iterable[int] | None,
    timeout: float,
    *,
    settle: float | None,
) -> dict[int, ShardStateWithEnd]:
    bootstrap = _bootstrap(conf)
    deadline = time.monotonic() + timeout
    shards = topic_partitions(consumer, topic, bootstrap, timeout)
    wanted = sorted(set(range(shards) if partitions is None else partitions))
    for p in wanted:
        if not 0 <= p < shards:
            raise ValueError(f"partition {p} is not in [0, {shards}) of {topic!r}")
    states = {p: ShardStateWithEnd(ShardState(p, shards), 0) for p in wanted}
    if not wanted:
        return states
    targets = _high_watermarks(conf, topic, wanted, bootstrap, deadline)
    pending = {p: _Progress(targets[p]) for p in wanted}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in wanted])
    while pending:
        now = time.monotonic()
        for p, prog in list(pending.items()):
            if prog.eof is not None and (
                prog.eof >= prog.target
                or (
                    settle is not None
                    and (now - (prog.first_eof_at or now) >= settle or now >= deadline)
                )
            ):
                states[p].end_offset = prog.eof
                del pending[p]
        if not pending:
            break
        if now >= deadline:
            raise ControlReadTimeoutError(
                topic,
                {p: prog.last for p, prog in pending.items()},
                timeout,
                open_transaction=any(prog.eof is not None for prog in pending.values()),
            )
        for msg in consumer.consume(num_messages=1000, timeout=min(deadline - now, 0.1)):
            _take(msg, topic, pending, states)
    return states


def _take(
    msg: Message, topic: str, pending: dict[int, _Progress], states: dict[int, ShardStateWithEnd]
) -> None:
    """One message of the read: a record to apply, a partition's end, or an error.

    The error is looked at first: an error of the consumer as a whole (all brokers down, an
    authentication failure) carries no partition or offset.
    """
    err = msg.error()
    part = msg.partition()
    if err is not None and err.code() != KafkaError._PARTITION_EOF:
        if err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN) or (
            err.retriable() and not err.fatal()
        ):
            return  # librdkafka retries; the read's deadline bounds it
        # Fetching needs Read on the topic; the coordinator look-up, Describe on the group.
        denied = not_authorized(
            err,
            "Read" if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED else "Describe",
            topic if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED else None,
        )
        if denied is not None:
            raise denied
        where = f" partition {part}" if part is not None and part >= 0 else ""
        raise MdpeerError(f"control topic {topic!r}{where}: {err.str()}")
    offset = msg.offset()
    if part is None or offset is None:
        return
    progress = pending.get(part)
    if progress is None:
        return  # a record after the end of a finished partition: read by whoever resumes there
    if err is not None:  # the partition's end as a read_committed consumer sees it (the LSO)
        progress.eof = offset
        if progress.first_eof_at is None:
            progress.first_eof_at = time.monotonic()
        return
    _apply(states[part], msg.key(), msg.value(), offset)
    progress.last = offset
    if offset >= progress.target:
        # Everything below the target was read: on a partition that keeps getting commits,
        # librdkafka may never report PARTITION_EOF, so this is the end.
        del pending[part]


def _apply(shard: ShardStateWithEnd, key: bytes | None, value: bytes | None, offset: int) -> None:
    shard.end_offset = offset + 1
    if key is None:
        problem = ControlRecordError(f"<no key>@{offset}", "a control record needs a key")
    else:
        try:
            shard.state.apply(decode(key, value), offset)
            return
        except UnsupportedVersionError:
            raise
        except MisplacedRecordError as exc:
            problem = exc
        except ControlRecordError as exc:
            problem = exc
    log.warning(
        "control record not applied: %s",
        problem,
        extra={"shard": shard.state.partition, "offset": offset},
    )
    shard.problems.append(problem)


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    """Every shard of a control topic, read to its end: what ``routes list``, ``checkpoints
    list`` and ``status`` print."""

    topic: str
    shards: dict[int, ShardStateWithEnd]

    @property
    def partitions(self) -> int:
        return next(iter(self.shards.values())).state.shards if self.shards else 0

    def routes(self) -> RouteTable:
        return RouteTable(r for s in self.shards.values() for r in s.state.routes.values())

    def route_list(self) -> list[Route]:
        return list(self.routes().routes())

    def checkpoints(self) -> dict[str, CheckpointRecord]:
        out = {
            subject: ckpt
            for s in self.shards.values()
            for subject, ckpt in s.state.checkpoints.items()
        }
        return dict(sorted(out.items()))

    def pending_commands(self) -> dict[str, CommandRecord]:
        out = {
            subject: cmd
            for s in self.shards.values()
            for subject, cmd in s.state.pending_commands().items()
        }
        return dict(sorted(out.items()))

    def blocks(self) -> dict[str, BlockRecord]:
        """Subjects their owner reports stopped at their checkpoint (quarantined)."""
        out = {subject: b for s in self.shards.values() for subject, b in s.state.blocks.items()}
        return dict(sorted(out.items()))

    def peers(self) -> dict[str, PeerRecord]:
        """What peers report about themselves (e.g. no MigratoryData server answers them)."""
        return {peer: r for s in self.shards.values() for peer, r in s.state.peers.items()}

    def problems(self) -> list[ControlRecordError]:
        return [p for s in self.shards.values() for p in s.problems]


def read_control_topic(
    consumer_conf_base: Mapping[str, Any],
    topic: str,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    settle: float = DEFAULT_SETTLE,
) -> ControlSnapshot:
    """Read every shard of ``topic`` (for the admin commands)."""
    return ControlSnapshot(
        topic, read_shards(consumer_conf_base, topic, None, timeout, settle=settle)
    )


__all__ = [
    "ControlReadTimeoutError",
    "ControlSnapshot",
    "ControlTopicMissingError",
    "KafkaUnavailableError",
    "ShardStateWithEnd",
    "kafka_unavailable",
    "read_control_topic",
    "read_shards",
    "topic_partitions",
]
