"""The REST source: polls MigratoryData's documented ``GET /rest/consume`` for each subject.

Threads (docs/SOURCE.md): the peer's calls and an asyncio loop in a daemon thread meet in
one lock over the subscriptions, the event buffer and the counters.

Per subject, one task runs the follow loop (``peer.source.follow``): fetch what the
subject's :class:`SubjectTracker` asks for, let it turn the answer into batches and gaps,
buffer them; an idle subject backs off up to ``poll_idle_max``.

Faults (``peer.source.consume``): connect errors, timeouts, dropped connections and 5xx are
transient: the server is marked down (failover to another by weight) and the request retried
with jittered exponential backoff (tenacity). HTTP 403 (:class:`EntitlementDeniedError`) and
other 4xx (:class:`SourceError`) stop only that subject (a :class:`SubjectFault` after its
buffered events). A malformed answer is counted, logged and asked again after a backoff.

The token travels as a query parameter, so URLs are never logged, and error texts from the
HTTP library are scrubbed before they reach a log line or an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from peer.errors import SourceError
from peer.model import Position, StartPolicy
from peer.source.base import (
    DEFAULT_POLICY,
    Event,
    Item,
    Reachability,
    SourceStats,
    SubjectStart,
    flatten,
)
from peer.source.buffer import EventBuffer
from peer.source.consume import ConsumeClient
from peer.source.follow import Follower, Unchanged
from peer.source.pacing import CarryBudget, CatchUpTurns, FirstFetches
from peer.source.rest_config import RestSourceConfig
from peer.source.resume import (
    SubjectTracker,
    Subscription,
)
from peer.source.tally import Tally

__all__ = ["RestSource", "RestSourceConfig"]

log = logging.getLogger("peer.source")

_START_TIMEOUT_S: Final = 10.0
_STOP_TIMEOUT_S: Final = 10.0


class RestSource(Follower):
    """A :class:`peer.source.base.Source` over MigratoryData's REST consume interface."""

    def __init__(self, config: RestSourceConfig, *, rng: random.Random | None = None) -> None:
        self._config = config
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._subs: dict[str, Subscription] = {}
        self._generation = 0
        self._buffer = EventBuffer[Item](config.max_buffered_messages, config.max_buffered_bytes)
        self._paused = False
        self._closed = False
        self._room_waiting = False
        #: subscribe/unsubscribe work for the loop thread (under the lock); see _schedule
        self._actions: list[tuple[Callable[[Subscription], None], Subscription]] = []
        #: parsed answers held back for later (Outcome.rest), loop thread
        self._carried = CarryBudget(config.max_buffered_bytes)
        self._turns = CatchUpTurns()  # subjects behind, or finding no room, fetch in turn
        #: first fetches: slow start
        self._starts = FirstFetches(
            config.max_concurrency,
            events=config.max_buffered_messages,
            nbytes=config.max_buffered_bytes,
            held_back=lambda: not self._fetchable(),
        )
        #: counters and heads (under the lock; requests and request errors: the client's)
        self._tally = Tally()
        # the loop thread's world
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: dict[str, tuple[int, asyncio.Task[None]]] = {}
        self._client = ConsumeClient(config, self._rng)

    def __repr__(self) -> str:
        servers = ",".join(str(s) for s in self._config.servers)
        return f"RestSource(servers={servers!r}, subjects={len(self._subs)})"

    # -- the Source protocol ---------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread (idempotent); subjects subscribed before start begin now."""
        with self._lock:
            if self._closed:
                raise SourceError("the REST source is closed; create a new one")
            if self._thread is not None:
                return
            ready = threading.Event()
            failure: list[BaseException] = []
            self._thread = threading.Thread(
                target=self._run, args=(ready, failure), name="mdpeer-rest-source", daemon=True
            )
        self._thread.start()
        if not ready.wait(_START_TIMEOUT_S):
            raise SourceError(f"the REST source did not start within {_START_TIMEOUT_S} s")
        if failure:
            raise SourceError(f"the REST source failed to start: {failure[0]!r}")

    def subscribe(
        self, subject: str, *, after: Position | None, policy: StartPolicy = DEFAULT_POLICY
    ) -> None:
        self.subscribe_many([SubjectStart(subject, after, policy)])

    def subscribe_many(self, starts: Sequence[SubjectStart]) -> None:
        """Subscribe each of ``starts`` in order, under one lock and one loop wake-up."""
        if not starts:
            return
        for start in starts:
            if not isinstance(start.subject, str) or not start.subject:
                raise ValueError(f"subject {start.subject!r}: expected a non-empty string")
        debug = log.isEnabledFor(logging.DEBUG)
        notes: list[tuple[SubjectStart, bool, int]] = []
        with self._lock:
            if self._closed:
                raise SourceError(f"subject {starts[0].subject!r}: the REST source is closed")
            history_fetch = self._config.history_fetch
            for subject, after, policy in starts:
                self._generation += 1
                tracker = SubjectTracker(
                    subject, after=after, policy=policy, history_fetch=history_fetch
                )
                sub = Subscription(subject, self._generation, tracker)
                replaced = self._subs.get(subject)
                self._subs[subject] = sub
                self._tally.forget(subject)
                dropped = self._buffer.discard(subject)
                self._schedule(self._spawn, sub)
                if debug:  # thousands at a time: not even the tuple otherwise
                    notes.append(
                        (SubjectStart(subject, after, policy), replaced is not None, dropped)
                    )
        for (subject, after, policy), reset, dropped in notes:
            log.debug(
                "subscribed",
                extra={
                    "subject": subject,
                    "after": str(after) if after else None,
                    "policy": str(policy),
                    "reset": reset,
                    "discarded": dropped,
                },
            )

    def unsubscribe(self, subject: str) -> None:
        with self._lock:
            sub = self._subs.pop(subject, None)
            if sub is None:
                return
            self._tally.forget(subject)
            self._buffer.discard(subject)
            self._schedule(self._cancel, sub)
        log.debug("unsubscribed", extra={"subject": subject})

    def subjects(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._subs)

    def poll(self, max_events: int, timeout: float) -> list[Event]:
        """Up to ``max_events`` events, waiting at most ``timeout`` seconds for the first."""
        return flatten(self.poll_batches(max_events, timeout))

    def poll_batches(self, max_events: int, timeout: float) -> list[Item]:
        """As :meth:`poll`, the messages in batches as the answers brought them."""
        if max_events < 1:
            raise ValueError(f"max_events={max_events}: must be >= 1")
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            thread = self._thread
            if thread is None:
                raise RuntimeError("RestSource.poll() before start()")
            while True:
                if not self._closed and not thread.is_alive():
                    raise SourceError("the REST source's loop thread ended unexpectedly")
                if self._buffer.nevents:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return []
                self._cond.wait(remaining)
            events = self._buffer.take(max_events)
            wake = self._room_waiting and not self._paused and self._buffer.fetchable()
            if wake:
                self._room_waiting = False
        if wake:
            self._poke()
        return events

    def reachability(self) -> Reachability:
        since = self._client.failing_since
        if since is None:
            return Reachability()
        return Reachability(max(time.monotonic() - since, 0.0), self._client.last_error)

    def pause(self) -> None:
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            if not self._paused:
                return
            self._paused = False
            self._room_waiting = False
        self._poke()

    def stats(self) -> SourceStats:
        with self._lock:
            stats = self._tally.stats(self._buffer.subjects())
            stats.subjects = len(self._subs)
            stats.requests = self._client.requests
            stats.request_errors = self._client.request_errors
            stats.server_requests = dict(self._client.server_requests)
            stats.server_errors = dict(self._client.server_errors)
            stats.buffered = self._buffer.nevents
            stats.paused = self._paused
            return stats

    def close(self) -> None:
        """Stop fetching, close connections and the loop thread (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            loop, stopping, thread = self._loop, self._stopping, self._thread
            self._cond.notify_all()
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own
                loop.call_soon_threadsafe(stopping.set)
        if thread is not None:
            thread.join(_STOP_TIMEOUT_S)
            if thread.is_alive():
                log.warning("the REST source thread did not stop in time")

    def __enter__(self) -> RestSource:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- helpers called with the lock held ---------------------------------------------------

    def _schedule(self, action: Callable[[Subscription], None], sub: Subscription) -> None:
        """Queue ``action(sub)`` for the loop thread; one wake-up for many queued actions.

        A peer taking over shards subscribes thousands of subjects at once: a wake-up per
        subject (a self-pipe write, a loop turn fighting the caller for the GIL) made 100,000
        subscriptions take tens of seconds.
        """
        if self._loop is None:
            return
        self._actions.append((action, sub))
        if len(self._actions) == 1:
            self._loop.call_soon_threadsafe(self._run_actions)

    def _run_actions(self) -> None:
        """(loop thread) Apply the queued subscribe/unsubscribe actions, in order."""
        with self._lock:
            actions, self._actions = self._actions, []
        for action, sub in actions:
            action(sub)

    # -- the loop thread ---------------------------------------------------------------------

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as exc:  # report start failures to start(); later ones are logged
            if not ready.is_set():
                failure.append(exc)
                ready.set()
            else:
                log.exception("the REST source loop failed")

    async def _main(self, ready: threading.Event) -> None:
        await self._client.open()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        try:
            with self._lock:
                self._loop = asyncio.get_running_loop()
                for sub in self._subs.values():
                    self._spawn(sub)
                closed = self._closed
            ready.set()
            if not closed:
                await self._stopping.wait()
        finally:
            tasks = [task for _, task in self._tasks.values()]
            self._tasks.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._client.close()
            with self._lock:
                self._loop = None

    def _spawn(self, sub: Subscription, same: Unchanged | None = None) -> None:
        """(loop thread) Start ``sub``'s task, replacing an older subscription's (``same``:
        its last answer that changed nothing, when it was parked)."""
        current = self._tasks.get(sub.subject)
        if current is not None:
            if current[0] >= sub.generation:
                return  # already running, or superseded by a newer subscription
            current[1].cancel()
        self._unpark(sub)
        task = asyncio.get_running_loop().create_task(
            self._follow(sub, same), name=f"follow {sub.subject}"
        )
        self._tasks[sub.subject] = (sub.generation, task)

    def _cancel(self, sub: Subscription) -> None:
        """(loop thread) Stop ``sub``'s task unless a newer subscription replaced it."""
        self._unpark(sub)
        current = self._tasks.get(sub.subject)
        if current is not None and current[0] <= sub.generation:
            del self._tasks[sub.subject]
            current[1].cancel()

    def _unpark(self, sub: Subscription) -> None:
        """(loop thread) Forget a parked subscription of ``sub``'s subject not newer than
        ``sub`` (doorbell mode, ``peer.source.sweep``)."""

    def _poke(self) -> None:
        """(any thread) Wake the tasks waiting for room or for resume."""
        with self._lock:
            loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # closing
                loop.call_soon_threadsafe(wake.set)
