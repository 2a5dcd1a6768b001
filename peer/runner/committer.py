"""The peer's transactions: what goes into a commit, and what happens when one fails.

A commit carries, in one Kafka transaction (DESIGN.md, I2 and I3): the data records written
since the last one, a checkpoint per subject that advanced, the block notes of stopped
subjects (:mod:`peer.runner.containment`), this peer's own note when MigratoryData is out of
reach (:mod:`peer.runner.sourcewatch`), and the control positions of every owned shard with
the group's metadata. A failure is one of three kinds:

* abortable: abort, stop the subjects the cluster refused records of (if any), redo every
  other subject from its last commit;
* a producer that cannot even abort, or failed fatally without being fenced: replace it by
  a new producer of the same transactional.id (its ``init_transactions`` aborts whatever the
  old one left open) and redo; bounded, then the peer exits;
* fenced by a newer instance of this peer id: the peer exits (the caller's business).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from peer.config.settings import PeerSettings
from peer.errors import PeerFatalError
from peer.kafka.errors import (
    AbortRequiredError,
    FencedError,
    KafkaWriteError,
    NotAuthorizedError,
    RecordsRefusedError,
)
from peer.ops.metrics import PeerMetrics, cause_label
from peer.runner.containment import Containment
from peer.runner.shardset import ShardSet
from peer.runner.sourcewatch import SourceWatch
from peer.source.base import Gap, Source, SubjectStart
from peer.writer import TransactionalWriter, java_partition

log = logging.getLogger("peer.runner")

#: after this long without a commit, the group offsets catch up with the consumer's position
#: (past this peer's own checkpoints and transaction markers), so an idle deployment shows
#: no lag in Kafka's consumer-group tools
IDLE_OFFSETS_S: Final = 2.0
#: at most this many producer replacements within REPLACE_WINDOW_S before the peer gives up
REPLACE_MAX: Final = 3
REPLACE_WINDOW_S: Final = 600.0


class Committer:
    """Commits, aborts and redoes for one peer; used from its loop thread only."""

    def __init__(
        self,
        *,
        settings: PeerSettings,
        writer: TransactionalWriter,
        new_producer: Callable[[], Producer],
        owned: ShardSet,
        source: Source,
        containment: Containment,
        watch: SourceWatch,
        metrics: PeerMetrics,
        context: dict[str, Any],
    ) -> None:
        self.settings = settings
        self.writer = writer
        self._new_producer = new_producer
        self._owned = owned
        self._source = source
        self._containment = containment
        self._watch = watch
        self._metrics = metrics
        self._ctx = context
        #: messages per target topic in the open transaction (counted out at commit)
        self.txn_topics: dict[str, int] = {}
        self.last_commit = time.monotonic()
        #: when the last commit started (monotonic): the commit cadence counts from it
        self.last_start = 0.0
        #: control positions sent with the last commit, to know when the idle catch-up is due
        self._sent: dict[int, int] = {}
        self._replaced: list[float] = []

    def assignment(self) -> list[TopicPartition]:
        """The owned shards at their positions: the offsets a commit carries."""
        return [
            TopicPartition(self.settings.control_topic, p, o.position)
            for p, o in sorted(self._owned.shards.items())
        ]

    def ensure_txn(self) -> None:
        if not self.writer.transaction_open:
            self.writer.begin()
            self.txn_topics.clear()

    def audit_gap(self, topic: str, gap: Gap, shard: int) -> None:
        """The gap's audit record, in the open transaction (I6); a
        :class:`~peer.kafka.errors.RouteFaultError` when the audit topic is at fault."""
        self.ensure_txn()
        value = {
            "event": "gap",
            "peer": self.settings.peer_id,
            "shard": shard,
            "subject": gap.subject,
            "kind": gap.kind.value,
            "after": str(gap.after) if gap.after else None,
            "resumed_at": str(gap.resumed_at),
            "missing": gap.missing,
        }
        subject = gap.subject
        self.writer.audit(topic, subject.encode(), json.dumps(value).encode(), subject)

    def has_work(self) -> bool:
        """Something to commit although no transaction is open."""
        return bool(self._owned.dirty() or self._containment.notes or self._watch.note)

    # --- commit -----------------------------------------------------------------------------

    def commit_or_recover(
        self,
        consumer: Consumer,
        why: str,
        timeout: float | None = None,
        exclude: set[int] | None = None,
        *,
        offsets_only: bool = False,
    ) -> None:
        """:meth:`commit`; an abortable failure is recovered from (:meth:`recover`)."""
        try:
            self.commit(consumer, why, timeout, offsets_only=offsets_only)
        except AbortRequiredError as exc:
            log.warning("commit (%s) failed, aborted: %s", why, exc, extra=self._ctx)
            self.recover(exc, exclude)

    def commit(
        self,
        consumer: Consumer,
        why: str,
        timeout: float | None = None,
        *,
        offsets_only: bool = False,
    ) -> None:
        """Commit the open transaction (opening one for pending checkpoints and notes)."""
        writer, owned = self.writer, self._owned
        dirty = owned.dirty()
        notes = self._containment.take_notes()
        peer_note = self._watch.note
        if not (writer.transaction_open or dirty or notes or peer_note or offsets_only):
            return
        if not owned.shards:
            # No offsets means no group check (I3): nothing may commit. Drop it.
            if writer.transaction_open:
                writer.abort(timeout)
            owned.aborted_all()
            return
        self.ensure_txn()
        for subject, track in dirty.items():
            pos = track.last()
            if pos is not None:
                writer.checkpoint(subject, pos, track.cmd)
        for subject, (key, value) in notes.items():
            writer.control_record(key, value, subject)
        if peer_note is not None:
            key = peer_note[0]
            where = java_partition(key, writer.control_partitions)
            writer.control_record(key, peer_note[1], "", partition=where)
        offsets = self.assignment()
        started = self.last_start = time.monotonic()
        stats = writer.commit(offsets, consumer.consumer_group_metadata(), timeout)
        m = self._metrics
        m.commit_latency.observe(time.monotonic() - started)
        m.commits.labels("committed").inc()
        m.batch_size.observe(stats.records)
        for topic, n in self.txn_topics.items():
            m.messages_out.labels(topic).inc(n)
        self.txn_topics.clear()
        self._sent = {tp.partition: tp.offset for tp in offsets}
        advanced = [s for s, t in dirty.items() if t.pending is not None]
        owned.committed_all()
        self._containment.notes_committed(notes)
        self._containment.committed(advanced)
        if peer_note is not None:
            self._watch.note_committed()
        # subjects whose route went away are forgotten once their data is committed
        for subject in [s for s in owned.subjects if owned.route(s) is None]:
            del owned.subjects[subject]
        self.last_commit = time.monotonic()
        if why not in ("interval", "idle-offsets"):
            log.info(
                "committed",
                extra={**self._ctx, "why": why, "records": stats.records, "ckpts": len(dirty)},
            )

    def idle_offsets(self, consumer: Consumer) -> None:
        """Idle: let the group offsets reach the consumer's position (past our own checkpoint
        records and transaction markers), so Kafka's lag tools show 0 for an idle peer."""
        if time.monotonic() - self.last_commit < IDLE_OFFSETS_S:
            return
        self.last_commit = time.monotonic()  # asked at most once per idle period
        owned = self._owned.shards
        try:
            positions = consumer.position(
                [TopicPartition(self.settings.control_topic, p) for p in owned]
            )
        except KafkaException as exc:
            log.debug("consumer positions: %s", exc, extra=self._ctx)
            return
        behind = False
        for tp in positions:
            shard = owned.get(tp.partition)
            if shard is None:
                continue
            if tp.offset is not None and tp.offset > shard.position:
                shard.position = tp.offset  # everything before it was consumed and applied
            behind = behind or self._sent.get(tp.partition) != shard.position
        if behind:
            self.commit_or_recover(consumer, "idle-offsets", offsets_only=True)

    # --- failures ---------------------------------------------------------------------------

    def recover(self, exc: AbortRequiredError, exclude: set[int] | None = None) -> None:
        """After an abortable failure: stop the subjects it names (if any), abort, redo."""
        if isinstance(exc, RecordsRefusedError):
            self._containment.refused(exc)
        self.abort_and_redo(exclude, cause=exc)

    def abort_and_redo(
        self, exclude: set[int] | None = None, *, cause: BaseException | str = "other"
    ) -> None:
        """Abort; every subject (but stopped ones and those of ``exclude`` shards) restarts
        from its commit. A producer that cannot abort is replaced."""
        if self.writer.transaction_open:
            self._metrics.commits.labels("aborted").inc()
            self._metrics.aborts.labels(cause_label(cause)).inc()
            try:
                self.writer.abort()
            except (FencedError, NotAuthorizedError):
                raise
            except KafkaWriteError as exc:
                self.replace_producer(exc, exclude)
                return
        self.redo(exclude)

    def redo(self, exclude: set[int] | None = None) -> None:
        """Every subject (but stopped ones and those of ``exclude``) from its last commit."""
        self.txn_topics.clear()
        owned = self._owned
        owned.aborted_all()
        starts: list[SubjectStart] = []
        for subject, track in list(owned.subjects.items()):
            if exclude and track.shard in exclude:
                continue
            if owned.route(subject) is None:  # removed meanwhile: nothing left to commit
                del owned.subjects[subject]
                continue
            if self._containment.stopped(subject):
                continue
            starts.append(SubjectStart(subject, track.committed, track.policy))
        self._source.subscribe_many(starts)

    def replace_producer(self, cause: KafkaWriteError, exclude: set[int] | None = None) -> None:
        """Go on with a new producer of the same transactional.id, then redo. Bounded: when
        that keeps happening the peer exits (:class:`PeerFatalError`)."""
        now = time.monotonic()
        self._replaced = [t for t in self._replaced if now - t < REPLACE_WINDOW_S]
        if len(self._replaced) >= REPLACE_MAX:
            raise PeerFatalError(
                f"the producer failed {REPLACE_MAX} times within {REPLACE_WINDOW_S:.0f} s "
                f"although replaced each time; last: {cause}"
            ) from cause
        self._replaced.append(now)
        self._metrics.producer_replacements.inc()
        log.warning(
            "replacing the transactional producer: %s",
            cause,
            extra={**self._ctx, "error": type(cause).__name__, "replacements": len(self._replaced)},
        )
        self.writer.replace_producer(self._new_producer())
        self.redo(exclude)


__all__ = ["IDLE_OFFSETS_S", "Committer"]
