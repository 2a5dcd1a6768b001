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

Faults of one subject or route stop that subject only (:mod:`peer.runner.containment`); the
peer exits non-zero only for what concerns the whole process: fenced by a newer instance of
its own id, the control topic unreadable, a producer that keeps failing after being replaced.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from peer.config.settings import PeerSettings
from peer.control import Change, ControlRecordError, decode
from peer.errors import MdpeerError, PeerFatalError
from peer.kafka.clients import consumer_config, producer_config, with_callbacks
from peer.kafka.closing import leave_and_close
from peer.kafka.errors import (
    AbortRequiredError,
    FatalKafkaError,
    FencedError,
    KafkaWriteError,
    NotAuthorizedError,
    RouteFaultError,
)
from peer.kafka.refusals import KafkaLoginError, watching
from peer.model import Position
from peer.ops.health import Health
from peer.ops.metrics import PeerMetrics
from peer.runner import access
from peer.runner.committer import Committer
from peer.runner.containment import Containment
from peer.runner.gauges import Gauges
from peer.runner.pace import CommitPace
from peer.runner.quarantine import Quarantine
from peer.runner.rebalance import Rebalancer
from peer.runner.shardset import ShardSet
from peer.runner.sourcewatch import SourceWatch
from peer.source.base import Batch, Gap, Source, SubjectStart
from peer.writer import DEFAULT_MESSAGE_MAX_BYTES as MAX_BYTES
from peer.writer import TransactionalWriter

log = logging.getLogger("peer.runner")


#: exit codes of ``mdpeer run``
EXIT_OK: Final = 0
EXIT_CONFIG: Final = 1
EXIT_FATAL: Final = 2

#: how long the loop waits for source events when idle
_IDLE_POLL_S: Final = 0.1
#: events taken from the source per loop turn at most
_EVENTS_PER_TURN: Final = 2000


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
        self._stopped_at = 0.0
        self._closing = False
        self._fatal: BaseException | None = None
        self._turn_in: dict[str, int] = {}
        self._ctx = {"peer": settings.peer_id, "txn": settings.transactional_id}
        self._consumer_conf = consumer_config(settings)
        self._producer_conf = producer_config(settings)
        self._committer: Committer | None = None
        self._consumer: Consumer | None = None
        self._refused: list[KafkaLoginError] = []
        self.gauges = Gauges(
            metrics=self.metrics,
            health=self.health,
            owned=self.owned,
            source=source,
            max_in_flight=settings.max_in_flight,
        )
        self.containment = Containment(
            source=source,
            owned=lambda: self.owned,
            writer=lambda: self._txns().writer,
            peer_id=settings.peer_id,
            quarantine=Quarantine(
                retry_max=settings.blocked_retry_max_ms / 1000, context=self._ctx
            ),
            on_change=self.gauges.blocked,
            context=self._ctx,
        )
        self.watch = SourceWatch(
            source,
            peer_id=settings.peer_id,
            health=self.health,
            metrics=self.metrics,
            unready_after=settings.source_unready_after_ms / 1000,
            context=self._ctx,
        )

    def _txns(self) -> Committer:
        assert self._committer is not None, "run() first"
        return self._committer

    # --- lifecycle ----------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Signal handler: finish the turn, commit, leave the group (SIGTERM / SIGINT)."""
        if not self._stop.is_set():
            log.info("stop requested", extra={**self._ctx, "signal": signum})
            self._stopped_at = time.monotonic()
        self._stop.set()

    def _abandon(self) -> bool:
        """Stopping for longer than the revoke budget: stop waiting for Kafka calls."""
        budget = self.settings.on_revoke_budget_ms / 1000
        return self._stop.is_set() and time.monotonic() - self._stopped_at > budget

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> int:
        """Join, work until stopped; returns the exit code (0 only after a clean handoff).

        A refused login raises (exit 1, as any refusal to start); a missing ACL, whenever
        found, stops the peer (exit 2) naming it (:mod:`peer.runner.access`)."""
        with watching() as self._refused:
            try:
                return self._run()
            except NotAuthorizedError as exc:
                return self._fatal_stop(access.named(exc, self.settings))

    def _run(self) -> int:
        s = self.settings
        self.metrics.info.labels(s.group, s.peer_id).set(1)
        producer = self._new_producer()
        topics = access.topic_catalog(producer, s)
        shards = access.control_partitions(producer, topics, s)
        self.metrics.shards.set(shards)
        writer = TransactionalWriter(
            producer,
            control_topic=s.control_topic,
            control_partitions=shards,
            header_prefix=s.header_prefix,
            max_in_flight=s.max_in_flight,
            # the writer's size check must use the producer's own limit
            message_max_bytes=int(self._producer_conf.get("message.max.bytes", MAX_BYTES)),
            transactional_id=s.transactional_id,
            topics=topics,
            abandon=self._abandon,
        )
        self._committer = Committer(
            settings=s,
            writer=writer,
            new_producer=self._new_producer,
            owned=self.owned,
            source=self.source,
            containment=self.containment,
            watch=self.watch,
            metrics=self.metrics,
            context=self._ctx,
        )
        rebalancer = Rebalancer(
            settings=s,
            consumer_conf=self._consumer_conf,
            owned=self.owned,
            committer=self._committer,
            source=self.source,
            containment=self.containment,
            health=self.health,
            metrics=self.metrics,
            stop=self._stop,
            track=self._track,
            changed=self.gauges.owned,
            context=self._ctx,
        )
        writer.init()  # fences an older instance of this peer id
        self.source.start()
        self._consumer = Consumer(with_callbacks(self._consumer_conf, "group-consumer"))
        self._consumer.subscribe(
            [s.control_topic],
            on_assign=self._guard(rebalancer.on_assign),
            on_revoke=self._guard(rebalancer.on_revoke),
            on_lost=self._guard(rebalancer.on_lost),
        )
        log.info(
            "peer started",
            extra={
                **self._ctx,
                "group": s.group,
                "shards": shards,
                "missing_topics": topics.policy.describe(),
            },
        )
        try:
            self._loop()
        except (MdpeerError, KafkaException) as exc:
            cause = exc.__cause__ if isinstance(exc, PeerFatalError) and exc.__cause__ else exc
            if isinstance(cause, NotAuthorizedError):
                cause = access.named(cause, s)
            return self._fatal_stop(cause)
        return self._shutdown()

    def _fatal_stop(self, cause: BaseException) -> int:
        self.metrics.errors.labels(type(cause).__name__).inc()
        log.error("peer stops: %s", cause, extra={**self._ctx, "error": type(cause).__name__})
        self._close_hard()
        return EXIT_FATAL

    def _new_producer(self) -> Producer:
        return Producer(with_callbacks(self._producer_conf, "producer"))

    def _guard(self, fn: Callable[[Consumer, list[TopicPartition]], None]) -> Callable[..., None]:
        """Rebalance callbacks must not raise into librdkafka: keep the error for the loop."""

        def call(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            if self._fatal is not None or self._closing:
                return  # a failed or closing peer commits and subscribes nothing more
            try:
                fn(consumer, partitions)
            except BaseException as exc:  # re-raised by the loop right after consume()
                self._fatal = exc

        return call

    # --- subjects -----------------------------------------------------------------------------

    def _start_subject(self, shard: int, subject: str) -> None:
        self.source.subscribe_many([self._track(shard, subject)])

    def _track(self, shard: int, subject: str) -> SubjectStart:
        """Track ``subject`` of ``shard`` from its resume point; where its source starts."""
        start, fresh_cmd = self.owned.track(shard, subject)
        if log.isEnabledFor(logging.DEBUG):  # thousands at a time: not even the dict otherwise
            log.debug(  # "shards assigned" carries the count at INFO
                "subject started",
                extra={
                    **self._ctx,
                    "shard": shard,
                    "subject": subject,
                    "after": str(start.after) if start.after else None,
                    "policy": str(start.policy),
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
            self.containment.retry_now(subject)
            track = self.owned.subjects.get(subject)
            if track is None:
                self._start_subject(p, subject)
            else:  # removed and re-added before its data committed: carry on from there
                self.source.subscribe(subject, after=track.last(), policy=track.policy)
        elif change is Change.ROUTE_CHANGED:
            # e.g. on_oversize changed: a subject stopped by the old route is tried again
            track = self.owned.subjects.get(subject)
            if self.containment.retry_now(subject) and track is not None:
                self.source.subscribe(subject, after=track.last(), policy=track.policy)
        elif change is Change.ROUTE_REMOVED:
            self.source.unsubscribe(subject)
            self.containment.route_removed(subject)
            track = self.owned.subjects.get(subject)
            # Written but uncommitted data of it still commits with its checkpoint below.
            if track is not None and track.pending is None and not track.needs_ack:
                del self.owned.subjects[subject]
            log.info("route removed", extra={**self._ctx, "shard": p, "subject": subject})
        elif change is Change.COMMAND:
            # Commands apply in order: what came before is committed first.
            assert self._consumer is not None
            self._txns().commit_or_recover(self._consumer, "command")
            self.containment.retry_now(subject)
            if subject in owned.state.routes:
                self._start_subject(p, subject)
        else:
            return
        self.gauges.owned()

    # --- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._consumer is not None
        interval = self.settings.commit_interval_ms / 1000
        # a transaction never gets near transaction.timeout.ms
        max_age = min(interval, self.settings.transaction_timeout_ms / 4000)
        pace = CommitPace(max_age, self.settings.max_batch, _IDLE_POLL_S)
        while not self._stop.is_set():
            self.health.beat()
            try:
                self._turn(self._consumer, self._txns(), pace)
            except AbortRequiredError as exc:
                self.metrics.errors.labels(type(exc).__name__).inc()
                log.warning("transaction aborted, redo from checkpoints: %s", exc, extra=self._ctx)
                self._txns().recover(exc)
            except FatalKafkaError as exc:
                if isinstance(exc, (FencedError, NotAuthorizedError)):
                    raise
                self._txns().replace_producer(exc)
            if self._refused:  # a login refused since: no reconnect will cure it
                raise self._refused[0]
            self.gauges.backpressure(self._txns().writer)
            self.gauges.lag()
            self.watch.check()
            self.containment.tick()

    def _turn(self, consumer: Consumer, txns: Committer, pace: CommitPace) -> None:
        """One loop turn: control records, then source events, then commit when due."""
        s = self.settings
        writer = txns.writer
        for msg in consumer.consume(200, timeout=0 if self.owned.subjects else 0.1):
            self._raise_fatal()
            err = msg.error()
            if err is not None:
                denied = access.consumer_error(err, s)
                if denied is not None:
                    raise denied
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("control consumer: %s", err.str(), extra=self._ctx)
                continue
            self._on_control(msg)
        self._raise_fatal()
        if self.owned.subjects:
            room = max(1, min(_EVENTS_PER_TURN, s.max_batch - writer.transaction_records))
            wait = pace.wait(writer.transaction_opened, txns.last_start)
            items = self.source.poll_batches(room, wait)
            for item in items:
                if isinstance(item, Batch):
                    self._write(item)
                elif isinstance(item, Gap):
                    self._gap(item)
                elif item.subject in self.owned.subjects:
                    self.containment.source_fault(item)
            pace.took(items, room, txns.last_start)
            if self._turn_in:  # counted per turn: a labelled metric per message is costly
                for topic, n in self._turn_in.items():
                    self.metrics.messages_in.labels(topic).inc(n)
                self._turn_in.clear()
        due = pace.due(writer.transaction_opened, writer.transaction_records, txns.last_start)
        if due or (not writer.transaction_open and txns.has_work() and self._owns()):
            txns.commit(consumer, "interval")
        elif not writer.transaction_open and self._owns():
            txns.idle_offsets(consumer)

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            exc, self._fatal = self._fatal, None
            if isinstance(exc, AbortRequiredError):
                self._txns().recover(exc)
                return
            raise PeerFatalError(str(exc)) from exc

    def _owns(self) -> bool:
        return bool(self.owned.shards)

    def _write(self, batch: Batch) -> None:
        """One subject's consecutive messages: routed, deduped and checkpointed once (the
        writer builds and produces each record)."""
        subject = batch.subject
        route = self.owned.route(subject)
        track = self.owned.subjects.get(subject)
        if route is None or track is None or self.containment.stopped(subject):
            return  # unsubscribed meanwhile (I1), or stopped by a fault of its own
        messages = batch.messages
        last = track.last()
        if last is not None and messages[0].epoch == last.epoch and messages[0].seq <= last.seq:
            # the source's duty, double-checked: never a duplicate (I4)
            messages = [m for m in messages if m.epoch != last.epoch or m.seq > last.seq]
            if not messages:
                return
        txns = self._txns()
        if not txns.writer.transaction_open:
            txns.ensure_txn()
        result = txns.writer.write_batch(messages, route)
        topic, done = route.topic, result.done
        self._turn_in[topic] = self._turn_in.get(topic, 0) + done + (result.fault is not None)
        if result.written:
            txns.txn_topics[topic] = txns.txn_topics.get(topic, 0) + result.written
        if result.skipped:
            self.metrics.oversized.labels(topic, "skip").inc(result.skipped)
        if result.dead_lettered:
            self.metrics.oversized.labels(topic, "dead_letter").inc(result.dead_lettered)
        if done:
            end = messages[done - 1]
            track.pending = Position(end.epoch, end.seq)
        if result.fault is not None:
            # Nothing of that message was produced: the subject stops right before it.
            self.containment.route_fault(result.fault)

    def _gap(self, gap: Gap) -> None:
        """A gap is counted and logged by the source; here it is metered and audited (I6)."""
        self.metrics.gaps.labels(gap.kind.value).inc()
        if gap.missing:
            self.metrics.gap_messages.inc(gap.missing)
        audit = self.settings.audit_topic
        track = self.owned.subjects.get(gap.subject)
        if not audit or track is None or self.containment.stopped(gap.subject):
            return
        try:
            self._txns().audit_gap(audit, gap, track.shard)
        except RouteFaultError as exc:  # the gap must not go unreported: the subject waits
            self.containment.route_fault(exc)

    # --- shutdown -----------------------------------------------------------------------------

    def _shutdown(self) -> int:
        """SIGTERM: stop fetching, commit, leave the group, exit 0."""
        assert self._consumer is not None
        for subject in list(self.owned.subjects):
            self.source.unsubscribe(subject)
        self.watch.leaving()
        code = EXIT_OK
        try:
            budget = self.settings.on_revoke_budget_ms / 1000  # as a revoke: bounded
            self._txns().commit(self._consumer, "shutdown", budget)
            if not leave_and_close(self._consumer, "group consumer"):  # on_revoke: empty
                self._closing = True  # a callback the late close still serves does nothing
            self._raise_fatal()
        except (KafkaWriteError, PeerFatalError, KafkaException) as exc:
            log.error("shutdown commit failed: %s", exc, extra=self._ctx)
            code = EXIT_FATAL
            self._close_hard()
        self.source.close()
        if not self.abandoned:  # a client with a call still running would not drain
            self._txns().writer.flush(5)
        self.health.left("stopped")
        log.info("peer stopped", extra={**self._ctx, "exit_code": code})
        return code

    @property
    def abandoned(self) -> bool:
        """A transactional call was left running in librdkafka while stopping: the clients
        cannot be closed cleanly (closing would wait for it); the process should just end."""
        return self._committer is not None and self._committer.writer.abandoned

    def _close_hard(self) -> None:
        """After a fatal error: abort what can be, close without committing anything."""
        self._closing = True
        writer = self._committer.writer if self._committer is not None else None
        if writer is not None and writer.transaction_open:
            try:
                writer.abort(5.0)
            except MdpeerError as exc:  # fenced, failed, or abandoned while stopping
                log.warning("abort failed: %s", exc, extra=self._ctx)
        self.owned.clear()  # callbacks during close must commit nothing
        if self._consumer is not None and not self.abandoned:
            try:
                leave_and_close(self._consumer, "group consumer")  # self._closing is set
            except Exception as exc:
                log.warning("consumer close failed: %s", exc, extra=self._ctx)
            self._consumer = None
        self.source.close()
