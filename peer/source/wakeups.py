"""The REST source's side of the doorbell (issue #16): turn :class:`Doorbell` callbacks into
per-subject wake-ups of the source's asyncio loop, and say how long an idle subject may wait.
:class:`DoorbellSource` is the REST source with them: its subscriptions are the doorbell's.

Threads: the doorbell's callbacks come from the client's threads and only hand over to the
loop (``call_soon_threadsafe``); the per-subject state (:class:`_Bell`) lives on the loop
thread. Denials are a set under a lock, read before each fetch.

The rules, and why each keeps exactly-once and latency safe:

* :meth:`Wakeups.fetching` clears the subject's ring *before* its fetch, so a doorbell that
  comes during the fetch is not lost: the following idle wait returns at once and fetches
  again.
* An idle subject waits the safety interval only while :meth:`Doorbell.armed` says a message
  would ring; otherwise the ordinary idle back-off. A new subscription's first fetch never
  waits: the source's task fetches before its first idle wait.
* ``connected(True)`` rings every subject (doorbells may have been missed while down);
  ``connected(False)`` rings every subject too, so the ones sleeping the safety interval fetch
  once and fall back to the idle back-off (no longer armed).
* ``denied(S)`` makes S's next :meth:`fetching` raise :class:`EntitlementDeniedError`: the
  source stops S exactly as for a 403 of consume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from peer.config.settings import SourceSettings
from peer.errors import EntitlementDeniedError
from peer.source.base import SubjectStart
from peer.source.doorbell import Doorbell, DoorbellPlan
from peer.source.follow import Unchanged
from peer.source.rest import RestSource
from peer.source.rest_config import RestSourceConfig
from peer.source.resume import Subscription
from peer.source.sweep import Sweeper
from peer.source.timerwheel import TimerWheel

log = logging.getLogger("peer.source")

#: the longest a safety fetch waits past its time so that it starts with others (_grain)
_MAX_GRAIN_S = 0.1


class _Bell:
    """(loop thread) One subject's wake-up state."""

    __slots__ = ("rung", "slot", "waiter")

    def __init__(self) -> None:
        self.rung = False
        #: the wait's future (done once it ended), and its wheel slot (0: not on the wheel)
        self.waiter: asyncio.Future[None] | None = None
        self.slot = 0


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Wakeups:
    """Doorbell-driven wake-ups for a :class:`peer.source.rest.RestSource`.

    ``on_ring()`` and ``on_connected(up)`` (optional) are told of every doorbell and every
    connection change, from the client's threads (metrics)."""

    def __init__(
        self,
        source: SourceSettings,
        *,
        plan: DoorbellPlan | None = None,
        rng: random.Random | None = None,
        on_ring: Callable[[], None] | None = None,
        on_connected: Callable[[bool], None] | None = None,
    ) -> None:
        self.safety_interval = source.poll_safety_interval_ms / 1000
        #: safety fetches worth starting together: as many as may be in flight at once
        self._batch = source.max_concurrency
        self._rng = rng or random.Random()
        self._on_ring, self._on_connected = on_ring, on_connected
        self._lock = threading.Lock()
        self._denied: dict[str, str] = {}
        self._doorbells = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bells: dict[str, _Bell] = {}
        self._wheel = TimerWheel()
        #: (loop thread) told of every subject rung: a parked one's task starts at once
        self.woken: Callable[[str], None] | None = None
        door = Doorbell.from_settings(
            source, wake=self._wake, denied=self._deny, connected=self._connected, plan=plan
        )
        if door is None:
            raise ValueError("Wakeups need doorbell mode (plan_for(...).mode == 'doorbell')")
        self.door = door

    # -- the source's side (peer thread) ---------------------------------------------------

    def subscribe(self, subjects: Iterable[str]) -> None:
        subjects = list(subjects)
        with self._lock:
            for subject in subjects:
                self._denied.pop(subject, None)
        self.door.subscribe(subjects)

    def unsubscribe(self, subjects: Iterable[str]) -> None:
        subjects = list(subjects)
        self.door.unsubscribe(subjects)
        with self._lock:
            for subject in subjects:
                self._denied.pop(subject, None)
        self._soon(self._drop, subjects)

    def close(self) -> None:
        self.door.close()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            doorbells = self._doorbells
        return {**self.door.stats(), "doorbells": doorbells}

    # -- the loop thread -----------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called on the loop thread once it runs; then the client connects."""
        with self._lock:
            self._loop = loop
        self.door.start()

    def detach(self) -> None:
        with self._lock:
            self._loop = None

    def fetching(self, subject: str) -> None:
        """Before each fetch of ``subject``: forget its ring; raise if it was denied."""
        bell = self._bells.get(subject)
        if bell is not None:
            bell.rung = False
        with self._lock:
            info = self._denied.get(subject)
        if info is not None:
            raise EntitlementDeniedError(subject, info)

    def idle(self, subject: str, delay: float) -> asyncio.Future[None] | None:
        """What to wait for after an idle fetch: ``delay`` (the idle back-off), or the safety
        interval while the doorbell is armed for ``subject``; a ring ends the wait at once
        (None: rung already, fetch again now).

        A bare future, not a coroutine: 100,000 armed subjects each wait 30 s, so whatever a
        wait allocates outlives the garbage collector's young generations, and every object
        of it was traversed in several collections (issue #16)."""
        bell = self._bells.get(subject)
        if bell is None:
            bell = self._bells[subject] = _Bell()
        if bell.rung:
            return None
        loop = asyncio.get_running_loop()
        if self.door.armed(subject):
            # the long wait of most subjects: on the wheel, not a loop timer each; the wheel
            # drops it when its slot ends (a ring or a cancel only resolves it earlier)
            fut, bell.slot = self._wheel.start(*self._safety_wait())
        else:
            fut, bell.slot = loop.create_future(), 0
            loop.call_later(delay, _resolve, fut)
        bell.waiter = fut
        return fut

    def safety_wait(self, subject: str) -> tuple[float, int] | None:
        """The safety wait (seconds, wheel grain) of idle ``subject`` while it is armed and
        not rung (``peer.source.sweep``: it may park); None otherwise."""
        bell = self._bells.get(subject)
        if bell is None:
            bell = self._bells[subject] = _Bell()
        if bell.rung or not self.door.armed(subject):
            return None
        return self._safety_wait()

    def _safety_wait(self) -> tuple[float, int]:
        return self.safety_interval * (1 - 0.1 * self._rng.random()), self._grain()

    def _grain(self) -> int:
        """Wheel ticks per slot for a safety wait: about ``_batch`` fetches end together.

        10,000 subjects over 30 s are 333 fetches a second, in 5 ms ticks one or two each:
        a loop wake-up for every fetch, and another for its answer. Grouped by 16 (48 ms),
        the waits are at most that much later than asked, which a jittered 30 s interval
        does not notice; capped at ``_MAX_GRAIN_S``. At 100,000 subjects the grain is one
        tick: more at once would only queue for the requests in flight.
        """
        per_s = len(self._bells) / self.safety_interval
        if per_s <= 0:
            return 1
        wanted = min(self._batch / per_s, _MAX_GRAIN_S)
        return max(1, int(wanted / self._wheel.tick))

    def _ring(self, subjects: Iterable[str] | None) -> None:
        """(loop thread) Ring ``subjects`` (None: every subject)."""
        if subjects is None:
            subjects = list(self._bells)
        woken = self.woken
        for subject in subjects:
            bell = self._bells.get(subject)
            if bell is None:
                bell = self._bells[subject] = _Bell()
            bell.rung = True
            if woken is not None:
                woken(subject)
            waiter = bell.waiter
            if waiter is not None:
                bell.waiter = None
                _resolve(waiter)
                if bell.slot:
                    self._wheel.stop(waiter, bell.slot)

    def _drop(self, subjects: list[str]) -> None:
        """(loop thread) Forget unsubscribed subjects; one still waited on is left to its
        (cancelled or replacing) task, which a later ring or timer ends."""
        for subject in subjects:
            bell = self._bells.get(subject)
            if bell is not None and (bell.waiter is None or bell.waiter.done()):
                del self._bells[subject]

    # -- the doorbell's callbacks (client threads) ----------------------------------------------

    def _soon(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(fn, *args)

    def _wake(self, subject: str) -> None:
        with self._lock:
            self._doorbells += 1
        if self._on_ring is not None:
            self._on_ring()
        self._soon(self._ring, (subject,))

    def _deny(self, subject: str, info: str) -> None:
        with self._lock:
            self._denied[subject] = info
        log.warning("doorbell: subscription denied", extra={"subject": subject})
        self._soon(self._ring, (subject,))

    def _connected(self, up: bool) -> None:
        if self._on_connected is not None:
            self._on_connected(up)
        self._soon(self._ring, None)


class DoorbellSource(RestSource):
    """The REST source in doorbell mode: subscribing a subject subscribes it on the doorbell
    too, and an idle subject waits for its ring (or the safety interval) instead of polling."""

    def __init__(
        self, config: RestSourceConfig, wakeups: Wakeups, *, rng: random.Random | None = None
    ) -> None:
        super().__init__(config, rng=rng)
        self.wakeups = wakeups
        #: idle subjects whose safety fetches need no task (peer.source.sweep)
        self.sweeper = Sweeper(self._client, self)
        wakeups.woken = self.sweeper.wake

    def subscribe_many(self, starts: Sequence[SubjectStart]) -> None:
        super().subscribe_many(starts)
        self.wakeups.subscribe([start.subject for start in starts])

    def unsubscribe(self, subject: str) -> None:
        super().unsubscribe(subject)
        self.wakeups.unsubscribe([subject])

    def close(self) -> None:
        self.wakeups.close()
        super().close()

    async def _main(self, ready: threading.Event) -> None:
        self.wakeups.attach(asyncio.get_running_loop())
        try:
            await super()._main(ready)
        finally:
            self.sweeper.close()
            self.wakeups.detach()

    def _fetching(self, subject: str) -> None:
        self.wakeups.fetching(subject)

    def _idle(self, subject: str, delay: float) -> asyncio.Future[None] | None:
        return self.wakeups.idle(subject, delay)

    # -- parking (peer.source.sweep; loop thread) ----------------------------------------

    def _park(self, sub: Subscription, same: Unchanged) -> bool:
        wait = self.wakeups.safety_wait(sub.subject)
        if wait is None:
            return False
        self.sweeper.park(sub, same, wait)
        return True

    def _unpark(self, sub: Subscription) -> None:
        self.sweeper.unpark(sub)

    def sweepable(self, sub: Subscription) -> bool:
        if not self._current(sub) or not self._buffer.takes_any() or not self._fetchable():
            return False
        try:
            self.wakeups.fetching(sub.subject)
        except EntitlementDeniedError:
            return False  # the task meets it again, and stops the subject
        return True

    def park_wait(self, sub: Subscription) -> tuple[float, int] | None:
        return self.wakeups.safety_wait(sub.subject) if self._current(sub) else None

    def restart(self, sub: Subscription, same: Unchanged) -> None:
        if self._current(sub):
            self._spawn(sub, same)


__all__ = ["DoorbellSource", "Wakeups"]
