"""Shard ownership: what the peer does when the group gives, takes or loses shards.

librdkafka calls these from inside ``consume`` on the peer's loop thread (DESIGN.md,
lifecycle steps 2 and 4):

* assigned: commit what is open (the rebuild may outlast a transaction), wait until the
  previous owner's offsets are stable, rebuild the shards from the control topic
  (``settle=None``: never past a transaction still open there), then subscribe their
  subjects strictly after their checkpoints;
* revoked: stop their subjects and commit within the revoke budget (we still own them);
* lost: stop their subjects and abort, never commit (someone else may own them already).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from peer.config.settings import PeerSettings
from peer.control.reader import read_shards
from peer.errors import PeerFatalError
from peer.kafka.errors import kafka_error_of
from peer.ops.health import Health
from peer.ops.metrics import PeerMetrics
from peer.runner.committer import Committer
from peer.runner.containment import Containment
from peer.runner.shardset import OwnedShard, ShardSet
from peer.source.base import Source, SubjectStart

log = logging.getLogger("peer.runner")

#: seconds a rebuild may wait beyond twice the transaction timeout (broker abort checks: 10 s)
_REBUILD_MARGIN_S: Final = 30.0

#: a pending-offsets wait is asked in slices this long, so SIGTERM is acted on meanwhile
PENDING_SLICE_S: Final = 1.0


class PendingOffsetsError(Exception):
    """The previous owner's offsets did not become stable in time: starting the shards could
    write their subjects twice."""


def await_pending_offsets(
    consumer: Consumer,
    topic: str,
    shards: list[int],
    timeout: float,
    stop: threading.Event,
) -> bool:
    """Wait until no transaction that sent offsets for ``shards`` is still open (KIP-447).

    The previous owner may have sent its offsets (accepted: its generation was current) and
    then stalled before its checkpoints reached the control topic. The rebuild's wait for
    open transactions cannot see such a transaction, as it has no record there yet; the group
    coordinator can: a read_committed offset fetch answers "unstable" while it is pending,
    and librdkafka asks again until it ends. Any later offsets of the old owner carry an old
    generation and are refused (RELIABILITY.md, finding 7).

    Asked in slices of a second, so a stop meanwhile is acted on: False when stopping.
    """
    tps = [TopicPartition(topic, p) for p in shards]
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        left = deadline - time.monotonic()
        try:
            answer = consumer.committed(tps, timeout=max(min(left, PENDING_SLICE_S), 0.1))
            failed = [tp for tp in answer if tp.error is not None]
            if not failed:
                return True
            # A partition's own error (e.g. still unstable) is asked again like the call's.
            raise KafkaException(failed[0].error)
        except KafkaException as exc:
            err = kafka_error_of(exc)
            timed_out = err is not None and err.code() == KafkaError._TIMED_OUT
            transient = timed_out or (err is not None and err.retriable())
            if not transient or left <= PENDING_SLICE_S:
                raise PendingOffsetsError(
                    f"shards {shards}: the offsets of their previous owner did not become "
                    f"stable within {timeout:.0f} s ({exc}); not starting them, to write "
                    "nothing twice"
                ) from exc
            if not timed_out:
                time.sleep(0.1)  # a retriable error answered at once: do not spin
    return False


class Rebalancer:
    """The rebalance callbacks of one peer (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: PeerSettings,
        consumer_conf: Mapping[str, Any],
        owned: ShardSet,
        committer: Committer,
        source: Source,
        containment: Containment,
        health: Health,
        metrics: PeerMetrics,
        stop: threading.Event,
        track: Callable[[int, str], SubjectStart],
        changed: Callable[[], None],
        context: dict[str, Any],
    ) -> None:
        self.settings = settings
        self._consumer_conf = consumer_conf
        self._owned = owned
        self._committer = committer
        self._source = source
        self._containment = containment
        self._health = health
        self._metrics = metrics
        self._stop = stop
        self._track = track
        self._changed = changed
        self._ctx = context

    def _eager(self) -> bool:
        return (
            self.settings.group_protocol == "classic"
            and self.settings.assignment_strategy != "cooperative-sticky"
        )

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        owned = self._owned
        new = sorted(tp.partition for tp in partitions if tp.partition not in owned.shards)
        self._metrics.rebalances.labels("assign").inc()
        self._health.joined()
        if not new or self._stop.is_set():  # stopping: the group is being left, take nothing on
            self._take_nothing_new(consumer)
            return
        # The rebuild may take up to transaction.timeout.ms: no transaction may age meanwhile.
        self._committer.commit_or_recover(consumer, "assign")
        self._health.assigned(new)
        # Strict: never start from checkpoints while a transaction on these shards is open;
        # it may be a zombie's that can still commit (controlreader). The broker aborts it
        # after transaction.timeout.ms (+ its abort-check interval): allow that twice over.
        wait = 2 * self.settings.transaction_timeout_ms / 1000 + _REBUILD_MARGIN_S
        started = time.monotonic()
        topic = self.settings.control_topic
        try:
            ready = await_pending_offsets(consumer, topic, new, wait, self._stop)
        except PendingOffsetsError as exc:
            raise PeerFatalError(str(exc)) from exc
        if not ready:
            self._take_nothing_new(consumer)
            return
        states = read_shards(self._consumer_conf, topic, new, timeout=wait, settle=None)
        added: list[TopicPartition] = []
        for p in new:
            built = states[p]
            for problem in built.problems:
                log.warning(
                    "control record not applied: %s", problem, extra={**self._ctx, "shard": p}
                )
            owned.shards[p] = OwnedShard(built.state, built.end_offset)
            self._containment.adopt(built.state.blocks.values())
            added.append(TopicPartition(topic, p, built.end_offset))
        if self._eager():
            consumer.assign(self._committer.assignment())
        else:
            consumer.incremental_assign(added)
        # One call for every subject: the source's loop thread starts its work only then,
        # instead of taking the GIL from this loop shard by shard.
        self._source.subscribe_many(
            [
                self._track(p, subject)
                for p in new
                for subject in sorted(owned.shards[p].state.routes)
            ]
        )
        # observed before /readyz lists the shards: who sees them there sees this too
        took = time.monotonic() - started
        self._metrics.rebuild.observe(took)
        for p in new:
            self._health.rebuilt(p)
        self._changed()
        log.info(
            "shards assigned",
            extra={
                **self._ctx,
                "shards": new,
                "owned": sorted(owned.shards),
                "subjects": len(owned.subjects),
                "rebuild_s": round(took, 3),
            },
        )

    def _take_nothing_new(self, consumer: Consumer) -> None:
        if self._eager():
            consumer.assign(self._committer.assignment())
        else:
            consumer.incremental_assign([])

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = self._stop_fetching(partitions, "revoke")
        # Offsets still include the revoked partitions: their owner is still us.
        budget = self.settings.on_revoke_budget_ms / 1000
        self._committer.commit_or_recover(consumer, "revoke", budget, set(gone))
        self._release(consumer, partitions, gone)
        log.info("shards revoked", extra={**self._ctx, "shards": gone})

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = self._stop_fetching(partitions, "lost")
        # Never commit: someone else may own these shards already.
        self._committer.abort_and_redo(exclude=set(gone), cause="lost")
        self._release(consumer, partitions, gone)
        log.warning("shards lost", extra={**self._ctx, "shards": gone})

    def _stop_fetching(self, partitions: list[TopicPartition], event: str) -> list[int]:
        owned = self._owned
        gone = sorted(tp.partition for tp in partitions if tp.partition in owned.shards)
        self._metrics.rebalances.labels(event).inc()
        for p in gone:
            for subject in owned.subjects_of(p):
                self._source.unsubscribe(subject)
        return gone

    def _release(
        self, consumer: Consumer, partitions: list[TopicPartition], gone: list[int]
    ) -> None:
        """Revoked or lost: forget the shards, their subjects and their stopped subjects."""
        for p in gone:
            self._containment.release(self._owned.subjects_of(p))
            self._owned.forget(p)
        self._changed()
        if self._eager():
            consumer.unassign()
        else:
            # Only what this peer assigned: a stopping peer took nothing of its last
            # assignment (_take_nothing_new), and librdkafka refuses to unassign those.
            mine = set(gone)
            consumer.incremental_unassign([tp for tp in partitions if tp.partition in mine])
        self._health.revoked(gone)


__all__ = [
    "PENDING_SLICE_S",
    "PendingOffsetsError",
    "Rebalancer",
    "await_pending_offsets",
]
