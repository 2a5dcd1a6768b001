"""Fault containment (DESIGN.md I8): a fault of one route or subject stops that subject,
never the peer.

The runner hands every per-subject fault here: a write the writer refused up front
(:class:`~peer.kafka.errors.RouteFaultError`: topic missing, being created or refused, an
oversized message under ``fail``), records the cluster refused at commit
(:class:`~peer.kafka.errors.RecordsRefusedError`, after the abort) and faults the source
reports (:class:`~peer.source.base.SubjectFault`: entitlement denied, ...). The subject is
unsubscribed at its checkpoint (:mod:`peer.runner.quarantine` keeps the books), a note
``block:<subject>`` goes into the next transaction for ``mdpeer status``, and every other
subject keeps flowing in the same transactions.

:meth:`Containment.tick` tries stopped subjects again when their backoff runs out: a topic
at fault is probed once for all its subjects (metadata, or the creation mdpeer started); any
other fault is tried by fetching the subject again from its checkpoint. A route change or a
checkpoint reset of a stopped subject tries it at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from peer.control import BlockRecord, encode_block, encode_block_removal
from peer.errors import FaultReason
from peer.kafka.errors import KafkaWriteError, RecordsRefusedError, RouteFaultError
from peer.runner.quarantine import Quarantine
from peer.runner.shardset import ShardSet
from peer.source.base import Source, SubjectFault, SubjectStart
from peer.writer import TransactionalWriter

log = logging.getLogger("peer.runner")

#: how often stopped subjects are looked at for retries and confirmations
_TICK_S: Final = 0.25


class Containment:
    """Per-subject faults of one peer: stop, report, retry, resume."""

    def __init__(
        self,
        *,
        source: Source,
        owned: Callable[[], ShardSet],
        writer: Callable[[], TransactionalWriter],
        peer_id: str,
        quarantine: Quarantine,
        on_change: Callable[[Quarantine], None] = lambda _q: None,
        context: dict[str, Any] | None = None,
    ) -> None:
        self._source = source
        self._owned = owned
        self._writer = writer
        self._peer_id = peer_id
        self.quarantine = quarantine
        self._on_change = on_change
        self._ctx = context or {}
        #: block notes (or their tombstones) for the next transaction: subject -> (key, value)
        self.notes: dict[str, tuple[bytes, bytes | None]] = {}
        #: subjects whose block note is in the control topic (ours, or a former owner's)
        self._noted: set[str] = set()
        #: a former owner's "since" for subjects it reported stopped
        self._prior_since: dict[str, str] = {}
        self._seen_version = -1
        self._ticked = -_TICK_S

    # --- faults -----------------------------------------------------------------------------

    def stopped(self, subject: str) -> bool:
        return bool(self.quarantine.blocks) and self.quarantine.stopped(subject)

    def route_fault(self, exc: RouteFaultError) -> None:
        """The writer refused a record of ``exc.subject`` up front (nothing was produced)."""
        if exc.subject is None:  # pragma: no cover - the writer always names it
            raise exc
        self._stop(exc.subject, exc.reason, str(exc), exc.topic, exc.topic_wide)

    def refused(self, exc: RecordsRefusedError) -> None:
        """The cluster refused records of these subjects; the caller aborts and redoes."""
        for fault in exc.faults:
            if fault.subject is not None:
                self._stop(fault.subject, fault.reason, str(fault), fault.topic, fault.topic_wide)

    def source_fault(self, fault: SubjectFault) -> None:
        self._stop(fault.subject, fault.error.fault, str(fault.error), None, topic_wide=False)

    def _stop(
        self,
        subject: str,
        reason: FaultReason,
        detail: str,
        topic: str | None,
        topic_wide: bool,
    ) -> None:
        owned = self._owned()
        if subject not in owned.subjects:
            return  # no longer ours
        subjects = [subject]
        if topic_wide and topic is not None:
            # Every subject writing to the topic would meet the same fault: stop them together
            # (one probe, one warning each) instead of one failed write at a time. Scanned
            # once per new fault, never per retry (see tick).
            subjects += sorted(
                s
                for s in owned.subjects
                if s != subject
                and not self.quarantine.stopped(s)
                and (route := owned.route(s)) is not None
                and route.topic == topic
            )
        self._block_all(subjects, reason, detail, topic, topic_wide)

    def _block_all(
        self,
        subjects: list[str],
        reason: FaultReason,
        detail: str,
        topic: str | None,
        topic_wide: bool,
    ) -> None:
        for s in subjects:
            block, news = self.quarantine.block(
                s,
                reason,
                detail,
                topic=topic,
                topic_wide=topic_wide,
                since=self._prior_since.get(s),
            )
            self._source.unsubscribe(s)
            if news and reason is not FaultReason.TOPIC_CREATING:
                key, value = encode_block(
                    s, reason.value, block.since, detail=detail, topic=topic, peer=self._peer_id
                )
                self.notes[s] = (key, value)
                self._noted.add(s)
        self._changed()

    # --- retries ----------------------------------------------------------------------------

    def tick(self) -> None:
        """Try again what is due, and lift what stayed healthy while tried (looked at a few
        times a second: a backoff is at least half a second)."""
        q = self.quarantine
        if not q.blocks:
            return
        now = time.monotonic()
        if now - self._ticked < _TICK_S:
            return
        self._ticked = now
        for subject in q.confirmed():
            self._lift(subject)
        due = q.due()
        if not due:
            self._changed()
            return
        owned = self._owned()
        probed: dict[str, RouteFaultError | KafkaWriteError | None] = {}
        restart: list[SubjectStart] = []
        for subject, block in due:
            track = owned.subjects.get(subject)
            if track is None:
                q.lift(subject)
                continue
            if block.topic_wide and block.topic is not None:
                topic = block.topic
                if topic not in probed:
                    probed[topic] = self._probe(topic, subject)
                failure = probed[topic]
                if isinstance(failure, RouteFaultError):
                    self._block_all([subject], failure.reason, str(failure), topic, topic_wide=True)
                    continue
                if failure is not None:  # Kafka itself did not answer: just later
                    q.block(subject, block.reason, block.detail, topic=topic, topic_wide=True)
                    continue
                self._lift(subject)
            else:
                q.retrying(subject)
            restart.append(SubjectStart(subject, track.last(), track.policy))
        if restart:
            self._source.subscribe_many(restart)
        self._changed()

    def _probe(self, topic: str, subject: str) -> RouteFaultError | KafkaWriteError | None:
        try:
            self._writer().topics.probe(topic, subject)
        except (RouteFaultError, KafkaWriteError) as exc:
            return exc
        self._writer().forget_metadata(topic)
        return None

    def committed(self, subjects: Iterable[str]) -> None:
        """Data of these subjects committed: those being tried again are healthy."""
        if not self.quarantine.blocks:
            return
        for subject in subjects:
            block = self.quarantine.blocks.get(subject)
            if block is not None and block.retrying:
                self._lift(subject)
        self._changed()

    def retry_now(self, subject: str) -> bool:
        """A route change or a reset: a stopped subject is tried again at once. True if it was
        stopped (the caller subscribes it)."""
        if subject not in self.quarantine.blocks:
            return False
        self._lift(subject)
        self._changed()
        return True

    def _lift(self, subject: str) -> None:
        self.quarantine.lift(subject)
        self._prior_since.pop(subject, None)
        if subject in self._noted:
            self._noted.discard(subject)
            self.notes[subject] = encode_block_removal(subject)

    # --- ownership --------------------------------------------------------------------------

    def adopt(self, blocks: Iterable[BlockRecord]) -> None:
        """Shards taken over: a former owner's block notes. Not trusted (the subject is tried
        at once), but remembered: its "since" carries on if the fault is still there, and
        the note is removed once the subject flows."""
        for rec in blocks:
            self._noted.add(rec.subject)
            self._prior_since[rec.subject] = rec.since

    def release(self, subjects: Iterable[str]) -> None:
        """Subjects no longer ours (revoked, lost, route removed): forget their books."""
        gone = list(subjects)
        self.quarantine.forget(gone)
        for subject in gone:
            self.notes.pop(subject, None)
            self._noted.discard(subject)
            self._prior_since.pop(subject, None)
        self._changed()

    def route_removed(self, subject: str) -> None:
        """The route is gone: the subject is not fetched, its block note is removed."""
        noted = subject in self._noted
        self.release([subject])
        if noted:
            self.notes[subject] = encode_block_removal(subject)

    def take_notes(self) -> dict[str, tuple[bytes, bytes | None]]:
        """The block notes for the transaction being committed (kept until it commits)."""
        return dict(self.notes)

    def notes_committed(self, written: Iterable[str]) -> None:
        for subject in written:
            self.notes.pop(subject, None)

    def _changed(self) -> None:
        if self.quarantine.version != self._seen_version:
            self._seen_version = self.quarantine.version
            self._on_change(self.quarantine)


__all__ = ["Containment"]
