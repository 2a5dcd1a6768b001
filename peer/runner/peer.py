"""The peer: group membership, rebalance callbacks, the main loop and shutdown (DESIGN.md).

One thread drives everything: the group consumer's rebalance callbacks run inside
``consumer.consume`` called from the loop, so the shard set, the source subscriptions and
the open transaction are never touched concurrently.

Exactly-once rests on three habits here:

* a subject is subscribed only after its shard was rebuilt from the control topic, strictly
  after its checkpoint (I1, I4);
* every commit carries the control positions of every owned partition and the current group
  metadata, so a peer that lost its shards cannot commit (I3). With nothing owned no
  transaction is opened;
* after an abort every subject restarts from what was committed, never from what was only
  written (the source discards what it buffered on re-subscribe).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Final

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from peer.config import PeerSettings, consumer_config, producer_config
from peer.control import Change, ControlRecordError, decode
from peer.controlreader import ControlTopicMissingError, KafkaUnavailableError, read_shards
from peer.errors import MdpeerError
from peer.kafkaerrors import AbortRequiredError, KafkaWriteError
from peer.observability import Health, PeerMetrics
from peer.runner.shardset import OwnedShard, ShardSet, SubjectTrack
from peer.source.base import Event, Gap, Source, SubjectStart
from peer.writer import DEFAULT_MESSAGE_MAX_BYTES, TransactionalWriter, WriteOutcome

log = logging.getLogger("peer.runner")

#: exit codes of ``mdpeer run``
EXIT_OK: Final = 0
EXIT_CONFIG: Final = 1
EXIT_FATAL: Final = 2

#: how long the loop waits for source events when idle
_IDLE_POLL_S: Final = 0.02
#: events taken from the source per loop turn at most
_EVENTS_PER_TURN: Final = 2000
#: how often the checkpoint-lag gauges are refreshed
_LAG_EVERY_S: Final = 1.0
#: extra seconds the shard rebuild waits beyond transaction.timeout.ms (see controlreader)
#: seconds a rebuild may wait beyond twice the transaction timeout (broker abort checks: 10 s)
_REBUILD_MARGIN_S: Final = 30.0
#: a pending-offsets wait is asked in slices this long, so SIGTERM is acted on meanwhile
_PENDING_SLICE_S: Final = 1.0


class PeerFatalError(Exception):
    """Raised inside the loop when the peer must stop with a non-zero exit (cause attached)."""


class Peer:
    """One ``mdpeer run`` process. Build with settings and a started-or-not source; ``run()``."""

    def __init__(
        self,
        settings: PeerSettings,
        source: Source,
        *,
        metrics: PeerMetrics | None = None,
        health: Health | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.metrics = metrics or PeerMetrics()
        self.health = health or Health()
        self.owned = ShardSet()
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._paused = False
        self._txn_topics: dict[str, int] = {}
        self._turn_in: dict[str, int] = {}
        self._last_commit = time.monotonic()
        self._ctx = {"peer": settings.peer_id, "txn": settings.transactional_id}
        self._consumer_conf = consumer_config(settings)
        self._producer: Producer | None = None
        self._writer: TransactionalWriter | None = None
        self._consumer: Consumer | None = None
        self._shards = 0
        self._lag_at = 0.0
        self._lag_shards: set[int] = set()

    # --- lifecycle ----------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Signal handler: finish the turn, commit, leave the group (SIGTERM / SIGINT)."""
        if not self._stop.is_set():
            log.info("stop requested", extra={**self._ctx, "signal": signum})
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> int:
        """Join, work until stopped; returns the exit code (0 only after a clean handoff)."""
        s = self.settings
        self.metrics.info.labels(s.group, s.peer_id).set(1)
        conf = producer_config(s)
        self._producer = Producer({**conf, "logger": logging.getLogger("peer.kafka")})
        self._shards = self._control_partitions(self._producer)
        self._writer = TransactionalWriter(
            self._producer,
            control_topic=s.control_topic,
            control_partitions=self._shards,
            header_prefix=s.header_prefix,
            max_in_flight=s.max_in_flight,
            # the writer's size check must use the producer's own limit
            message_max_bytes=int(conf.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES)),
            transactional_id=s.transactional_id,
        )
        self._writer.init()  # fences an older instance of this peer id
        self.source.start()
        self._consumer = Consumer(
            {**self._consumer_conf, "logger": logging.getLogger("peer.kafka")}
        )
        self._consumer.subscribe(
            [s.control_topic],
            on_assign=self._guard(self._on_assign),
            on_revoke=self._guard(self._on_revoke),
            on_lost=self._guard(self._on_lost),
        )
        log.info("peer started", extra={**self._ctx, "group": s.group, "shards": self._shards})
        try:
            self._loop()
        except (PeerFatalError, MdpeerError, KafkaException) as exc:
            cause = exc.__cause__ if isinstance(exc, PeerFatalError) and exc.__cause__ else exc
            self.metrics.errors.labels(type(cause).__name__).inc()
            log.error(
                "peer stops: %s",
                cause,
                extra={**self._ctx, "error": type(cause).__name__},
            )
            self._close_hard()
            return EXIT_FATAL
        return self._shutdown()

    def _control_partitions(self, producer: Producer) -> int:
        try:
            md = producer.list_topics(timeout=30)
        except KafkaException as exc:
            raise KafkaUnavailableError(self.settings.bootstrap, 30, str(exc)) from None
        topic = md.topics.get(self.settings.control_topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise ControlTopicMissingError(self.settings.control_topic)
        return len(topic.partitions)

    def _guard(self, fn: Callable[[Consumer, list[TopicPartition]], None]) -> Callable[..., None]:
        """Rebalance callbacks must not raise into librdkafka: keep the error for the loop."""

        def call(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            if self._fatal is not None:
                return
            try:
                fn(consumer, partitions)
            except BaseException as exc:  # re-raised by the loop right after consume()
                self._fatal = exc

        return call

    # --- rebalance ----------------------------------------------------------------------------

    def _eager(self) -> bool:
        return (
            self.settings.group_protocol == "classic"
            and self.settings.assignment_strategy != "cooperative-sticky"
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        new = sorted(tp.partition for tp in partitions if tp.partition not in self.owned.shards)
        self.metrics.rebalances.labels("assign").inc()
        self.health.joined()
        if not new or self._stop.is_set():  # stopping: the group is being left, take nothing on
            self._take_nothing_new(consumer)
            return
        # The rebuild may take up to transaction.timeout.ms: no transaction may age meanwhile.
        try:
            self._commit_now("assign")
        except AbortRequiredError as exc:
            log.warning("commit before rebuild failed, aborted: %s", exc, extra=self._ctx)
            self._abort_and_redo()
        self.health.assigned(new)
        # Strict: never start from checkpoints while a transaction on these shards is open;
        # it may be a zombie's that can still commit (controlreader). The broker aborts it
        # after transaction.timeout.ms (+ its abort-check interval): allow that twice over.
        txn_timeout = self.settings.transaction_timeout_ms / 1000
        started = time.monotonic()
        if not self._await_pending_offsets(consumer, new, 2 * txn_timeout + _REBUILD_MARGIN_S):
            self._take_nothing_new(consumer)
            return
        states = read_shards(
            self._consumer_conf,
            self.settings.control_topic,
            new,
            timeout=2 * txn_timeout + _REBUILD_MARGIN_S,
            settle=None,
        )
        added: list[TopicPartition] = []
        for p in new:
            built = states[p]
            for problem in built.problems:
                log.warning(
                    "control record not applied: %s", problem, extra={**self._ctx, "shard": p}
                )
            self.owned.shards[p] = OwnedShard(built.state, built.end_offset)
            added.append(TopicPartition(self.settings.control_topic, p, built.end_offset))
        if self._eager():
            consumer.assign(self._assignment())
        else:
            consumer.incremental_assign(added)
        # One call for every subject: the source's loop thread starts its work only then,
        # instead of taking the GIL from this loop shard by shard.
        self.source.subscribe_many(
            [
                self._track(p, subject)
                for p in new
                for subject in sorted(self.owned.shards[p].state.routes)
            ]
        )
        for p in new:
            self.health.rebuilt(p)
        self._gauges()
        log.info(
            "shards assigned",
            extra={
                **self._ctx,
                "shards": new,
                "owned": sorted(self.owned.shards),
                "subjects": len(self.owned.subjects),
                "rebuild_s": round(time.monotonic() - started, 3),
            },
        )

    def _take_nothing_new(self, consumer: Consumer) -> None:
        if self._eager():
            consumer.assign(self._assignment())
        else:
            consumer.incremental_assign([])

    def _await_pending_offsets(self, consumer: Consumer, shards: list[int], timeout: float) -> bool:
        """Wait until no transaction that sent offsets for ``shards`` is still open (KIP-447).

        The previous owner may have sent its offsets (accepted: its generation was current)
        and then stalled before its checkpoints reached the control topic. The rebuild's
        wait for open transactions cannot see such a transaction, as it has no record there
        yet; the group coordinator can: a read_committed offset fetch answers "unstable"
        while it is pending, and librdkafka asks again until it ends. Any later offsets of
        the old owner carry an old generation and are refused. (Found by the chaos harness:
        a SIGSTOPped owner committed after its successor's rebuild, 7 duplicates.)

        Asked in slices of a second, so a SIGTERM meanwhile is acted on: False when stopping.
        """
        tps = [TopicPartition(self.settings.control_topic, p) for p in shards]
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            try:
                consumer.committed(tps, timeout=max(min(left, _PENDING_SLICE_S), 0.1))
                return True
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                timed_out = isinstance(err, KafkaError) and err.code() == KafkaError._TIMED_OUT
                transient = timed_out or (isinstance(err, KafkaError) and err.retriable())
                if not transient or left <= _PENDING_SLICE_S:
                    raise PeerFatalError(
                        f"shards {shards}: the offsets of their previous owner did not become "
                        f"stable within {timeout:.0f} s ({exc}); not starting them, to write "
                        "nothing twice"
                    ) from exc
                if not timed_out:
                    time.sleep(0.1)  # a retriable error answered at once: do not spin
        return False

    def _assignment(self) -> list[TopicPartition]:
        return [
            TopicPartition(self.settings.control_topic, p, o.position)
            for p, o in sorted(self.owned.shards.items())
        ]

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = sorted(tp.partition for tp in partitions if tp.partition in self.owned.shards)
        self.metrics.rebalances.labels("revoke").inc()
        for p in gone:
            for subject in self.owned.subjects_of(p):
                self.source.unsubscribe(subject)
        # Offsets still include the revoked partitions: their owner is still us.
        budget = self.settings.on_revoke_budget_ms / 1000
        try:
            self._commit_now("revoke", timeout=budget)
        except AbortRequiredError as exc:
            log.warning("commit on revoke failed, aborted: %s", exc, extra=self._ctx)
            self._abort_and_redo(exclude=set(gone))
        self._forget(gone)
        if self._eager():
            consumer.unassign()
        else:
            consumer.incremental_unassign(partitions)
        self.health.revoked(gone)
        log.info("shards revoked", extra={**self._ctx, "shards": gone})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = sorted(tp.partition for tp in partitions if tp.partition in self.owned.shards)
        self.metrics.rebalances.labels("lost").inc()
        for p in gone:
            for subject in self.owned.subjects_of(p):
                self.source.unsubscribe(subject)
        # Never commit: someone else may own these shards already.
        self._abort_and_redo(exclude=set(gone))
        self._forget(gone)
        if self._eager():
            consumer.unassign()
        else:
            consumer.incremental_unassign(partitions)
        self.health.revoked(gone)
        log.warning("shards lost", extra={**self._ctx, "shards": gone})

    def _forget(self, shards: list[int]) -> None:
        for p in shards:
            self.owned.forget(p)
        self._gauges()

    def _gauges(self) -> None:
        self.metrics.owned_shards.set(len(self.owned.shards))
        self.metrics.subjects.set(len(self.owned.subjects))

    # --- subjects -----------------------------------------------------------------------------

    def _start_subject(self, shard: int, subject: str) -> None:
        self.source.subscribe_many([self._track(shard, subject)])

    def _track(self, shard: int, subject: str) -> SubjectStart:
        """Track ``subject`` of ``shard`` from its resume point; where its source starts."""
        state = self.owned.shards[shard].state
        resume = state.resume(subject)
        ckpt = state.checkpoints.get(subject)
        after, cmd = (
            resume.after,
            resume.cmd if resume.cmd is not None else (ckpt.cmd if ckpt else None),
        )
        fresh_cmd = resume.cmd
        mine = self.owned.remembered.get(subject)
        if mine is not None and (resume.cmd is None or resume.cmd == mine[2]):
            # our newest commit (and the command it acknowledged) may not have come back
            # through the consumer yet: it is newer than anything the state holds
            after, cmd, fresh_cmd = mine[1], mine[2], None
        track = SubjectTrack(
            shard=shard,
            committed=after,
            policy=resume.policy,
            cmd=cmd,
            # a reset to a position is acknowledged by a checkpoint at that position
            needs_ack=fresh_cmd is not None and after is not None,
        )
        self.owned.subjects[subject] = track
        start = SubjectStart(subject, track.committed, track.policy)
        if not log.isEnabledFor(logging.DEBUG):  # thousands at a time: not even the dict
            return start
        log.debug(  # "shards assigned" carries the count at INFO
            "subject started",
            extra={
                **self._ctx,
                "shard": shard,
                "subject": subject,
                "after": str(track.committed) if track.committed else None,
                "policy": str(track.policy),
                "cmd": fresh_cmd,
            },
        )
        return start

    def _on_control(self, msg: Message) -> None:
        p, offset = msg.partition(), msg.offset()
        if p is None or offset is None:
            return
        owned = self.owned.shards.get(p)
        if owned is None or offset < owned.position:
            return
        owned.position = offset + 1
        key = msg.key()
        if key is None:
            return
        try:
            change = owned.state.apply(decode(key, msg.value()), offset)
        except ControlRecordError as exc:
            log.warning("control record not applied: %s", exc, extra={**self._ctx, "shard": p})
            return
        subject = key.decode("utf-8", "replace").partition(":")[2]
        if change is Change.ROUTE_ADDED:
            track = self.owned.subjects.get(subject)
            if track is None:
                self._start_subject(p, subject)
            else:  # removed and re-added before its data committed: carry on from there
                self.source.subscribe(subject, after=track.last(), policy=track.policy)
        elif change is Change.ROUTE_REMOVED:
            self.source.unsubscribe(subject)
            track = self.owned.subjects.get(subject)
            # Written but uncommitted data of it still commits with its checkpoint below.
            if track is not None and track.pending is None and not track.needs_ack:
                del self.owned.subjects[subject]
            log.info("route removed", extra={**self._ctx, "shard": p, "subject": subject})
        elif change is Change.COMMAND:
            # Commands apply in order: what came before is committed first.
            try:
                self._commit_now("command")
            except AbortRequiredError as exc:
                log.warning("commit before a command failed, aborted: %s", exc, extra=self._ctx)
                self._abort_and_redo()
            if subject in owned.state.routes:
                self._start_subject(p, subject)
        else:
            return
        self._gauges()

    # --- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._consumer is not None
        assert self._writer is not None
        consumer, writer, s = self._consumer, self._writer, self.settings
        interval = s.commit_interval_ms / 1000
        # a transaction never gets near transaction.timeout.ms
        max_age = min(interval, s.transaction_timeout_ms / 4000)
        while not self._stop.is_set():
            self.health.beat()
            try:
                self._turn(consumer, writer, max_age)
            except AbortRequiredError as exc:
                self.metrics.errors.labels(type(exc).__name__).inc()
                log.warning("transaction aborted, redo from checkpoints: %s", exc, extra=self._ctx)
                self._abort_and_redo()
            self._backpressure()
            self._lag()

    def _turn(self, consumer: Consumer, writer: TransactionalWriter, max_age: float) -> None:
        """One loop turn: control records, then source events, then commit when due."""
        s = self.settings
        for msg in consumer.consume(200, timeout=0 if self.owned.subjects else 0.1):
            self._raise_fatal()
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("control consumer: %s", err.str(), extra=self._ctx)
                continue
            self._on_control(msg)
        self._raise_fatal()
        if self.owned.subjects:
            room = max(1, min(_EVENTS_PER_TURN, s.max_batch - writer.transaction_records))
            for event in self.source.poll(room, _IDLE_POLL_S):
                self._handle(event)
            if self._turn_in:  # counted per turn: a labelled metric per message is costly
                for topic, n in self._turn_in.items():
                    self.metrics.messages_in.labels(topic).inc(n)
                self._turn_in.clear()
        due = writer.transaction_open and (
            writer.transaction_records >= s.max_batch or writer.transaction_age() >= max_age
        )
        if due or (not writer.transaction_open and self.owned.dirty() and self._owns()):
            self._commit_now("interval")

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            exc, self._fatal = self._fatal, None
            if isinstance(exc, AbortRequiredError):
                self._abort_and_redo()
                return
            raise PeerFatalError(str(exc)) from exc

    def _owns(self) -> bool:
        return bool(self.owned.shards)

    def _handle(self, event: Event) -> None:
        assert self._writer is not None
        if isinstance(event, Gap):
            self._gap(event)
            return
        route = self.owned.route(event.subject)
        track = self.owned.subjects.get(event.subject)
        if route is None or track is None:
            return  # unsubscribed meanwhile (I1)
        last = track.last()
        if last is not None and event.epoch == last.epoch and event.seq <= last.seq:
            return  # the source's duty, double-checked: never a duplicate (I4)
        topic = route.topic
        self._turn_in[topic] = self._turn_in.get(topic, 0) + 1
        if not self._writer.transaction_open:
            self._ensure_txn()
        outcome = self._writer.write(event, route)
        if outcome is WriteOutcome.WRITTEN:
            self._txn_topics[topic] = self._txn_topics.get(topic, 0) + 1
        elif outcome is WriteOutcome.SKIPPED:
            self.metrics.oversized.labels(route.topic, "skip").inc()
        else:
            self.metrics.oversized.labels(route.topic, "dead_letter").inc()
        track.pending = event.position

    def _gap(self, gap: Gap) -> None:
        self.metrics.gaps.labels(gap.kind.value).inc()
        if gap.missing:
            self.metrics.gap_messages.inc(gap.missing)
        track = self.owned.subjects.get(gap.subject)
        extra: dict[str, Any] = {
            **self._ctx,
            "shard": track.shard if track else None,
            "subject": gap.subject,
            "kind": gap.kind.value,
            "after": str(gap.after) if gap.after else None,
            "resumed_at": str(gap.resumed_at),
            "missing": gap.missing,
        }
        log.warning("gap in subject", extra=extra)
        audit = self.settings.audit_topic
        if audit and track is not None and self._producer is not None:
            self._ensure_txn()
            value = {k: v for k, v in extra.items() if k not in ("txn",)}
            value["event"] = "gap"
            self._producer.produce(audit, json.dumps(value).encode(), gap.subject.encode())

    def _ensure_txn(self) -> None:
        assert self._writer is not None
        if not self._writer.transaction_open:
            self._writer.begin()
            self._txn_topics.clear()

    # --- commit / abort -----------------------------------------------------------------------

    def _commit_now(self, why: str, timeout: float | None = None) -> None:
        """Commit the open transaction (opening one for pending acknowledgements)."""
        assert self._writer is not None
        assert self._consumer is not None
        writer = self._writer
        dirty = self.owned.dirty()
        if not writer.transaction_open and not dirty:
            return
        if not self._owns():
            # No offsets means no group check (I3): nothing may commit. Drop it.
            if writer.transaction_open:
                writer.abort(timeout)
            self.owned.aborted_all()
            return
        self._ensure_txn()
        for subject, track in dirty.items():
            pos = track.last()
            if pos is not None:
                writer.checkpoint(subject, pos, track.cmd)
        offsets = self._assignment()
        started = time.monotonic()
        stats = writer.commit(offsets, self._consumer.consumer_group_metadata(), timeout)
        self.metrics.commit_latency.observe(time.monotonic() - started)
        self.metrics.commits.labels("committed").inc()
        self.metrics.batch_size.observe(stats.records)
        for topic, n in self._txn_topics.items():
            self.metrics.messages_out.labels(topic).inc(n)
        self._txn_topics.clear()
        self.owned.committed_all()
        # subjects whose route went away are forgotten once their data is committed
        for subject in [s for s in self.owned.subjects if self.owned.route(s) is None]:
            del self.owned.subjects[subject]
        self._last_commit = time.monotonic()
        if why != "interval":
            log.info(
                "committed",
                extra={**self._ctx, "why": why, "records": stats.records, "ckpts": len(dirty)},
            )

    def _abort_and_redo(self, exclude: set[int] | None = None) -> None:
        """Abort; every subject (but those of ``exclude`` shards) restarts from its commit."""
        assert self._writer is not None
        if self._writer.transaction_open:
            self.metrics.commits.labels("aborted").inc()
            self._writer.abort()
        self._txn_topics.clear()
        self.owned.aborted_all()
        starts: list[SubjectStart] = []
        for subject, track in list(self.owned.subjects.items()):
            if exclude and track.shard in exclude:
                continue
            if self.owned.route(subject) is None:  # removed meanwhile: nothing left to commit
                del self.owned.subjects[subject]
                continue
            starts.append(SubjectStart(subject, track.committed, track.policy))
        self.source.subscribe_many(starts)

    def _lag(self) -> None:
        """Checkpoint lag per owned shard: messages the server has beyond our commits."""
        now = time.monotonic()
        if now - self._lag_at < _LAG_EVERY_S:
            return
        self._lag_at = now
        lag = self.owned.lag(self.source.stats().server_head)
        for shard, value in lag.items():
            self.metrics.checkpoint_lag.labels(str(shard)).set(value)
        for shard in self._lag_shards - lag.keys():
            self.metrics.checkpoint_lag.remove(str(shard))
        self._lag_shards = set(lag)

    def _backpressure(self) -> None:
        """I7: pause fetching while too much is in flight; resume below half."""
        assert self._writer is not None
        in_flight = self._writer.in_flight() + self._writer.transaction_records
        self.metrics.in_flight.set(in_flight)
        limit = self.settings.max_in_flight
        if not self._paused and in_flight >= limit:
            self.source.pause()
            self._paused = True
        elif self._paused and in_flight < limit // 2:
            self.source.resume()
            self._paused = False

    # --- shutdown -----------------------------------------------------------------------------

    def _shutdown(self) -> int:
        """SIGTERM: stop fetching, commit, leave the group, exit 0."""
        assert self._consumer is not None
        assert self._writer is not None
        for subject in list(self.owned.subjects):
            self.source.unsubscribe(subject)
        code = EXIT_OK
        try:
            self._commit_now("shutdown")
            self._consumer.close()  # leaves the group; on_revoke runs (nothing left to commit)
            self._raise_fatal()
        except (KafkaWriteError, PeerFatalError) as exc:
            log.error("shutdown commit failed: %s", exc, extra=self._ctx)
            code = EXIT_FATAL
            self._close_hard()
        self.source.close()
        if self._producer is not None:
            self._producer.flush(5)
        self.health.left("stopped")
        log.info("peer stopped", extra={**self._ctx, "exit_code": code})
        return code

    def _close_hard(self) -> None:
        """After a fatal error: abort what can be, close without committing anything."""
        if self._writer is not None and self._writer.transaction_open:
            try:
                self._writer.abort(5.0)
            except KafkaWriteError as exc:
                log.warning("abort failed: %s", exc, extra=self._ctx)
        self.owned = ShardSet()  # callbacks during close must commit nothing
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception as exc:
                log.warning("consumer close failed: %s", exc, extra=self._ctx)
            self._consumer = None
        self.source.close()
