"""The REST source's per-subject loop (``peer.source.rest``): fetch, decode, accept, wait.

One task per subscription runs :meth:`Follower._follow`: wait until fetching is allowed,
send the request its :class:`SubjectTracker` asks for, decode, and, only if the subscription
is still the current one (answers of a replaced or removed one are dropped), let the tracker
turn the answer into batches and gaps and buffer them. An idle subject backs off up to
``poll_idle_max`` (doorbell mode: waits for its ring, ``peer.source.wakeups``).

:class:`Follower` holds no state of its own: :class:`peer.source.rest.RestSource` (its only
subclass) owns the attributes declared here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Awaitable, Sequence
from typing import NamedTuple

from peer.errors import SourceError
from peer.model import Message
from peer.source.base import Item, SubjectFault
from peer.source.buffer import EventBuffer
from peer.source.consume import ConsumeClient
from peer.source.http1 import Body
from peer.source.pacing import CarryBudget, CatchUpTurns, FirstFetches, IdleBackoff
from peer.source.rest_config import RestSourceConfig
from peer.source.resume import ConsumeRequest, Outcome, RequestKind, Subscription
from peer.source.tally import Tally
from peer.source.wire import MalformedResponseError, decode_consume

log = logging.getLogger("peer.source")

#: the largest answer kept to compare the next one with (one per idle subject)
_SAME_MAX = 2048
#: what an answer identical to an unchanging one produces (read only)
_NOTHING = Outcome()


class Unchanged(NamedTuple):
    """A request whose answer changed nothing, its target and that answer's body."""

    request: ConsumeRequest
    target: str
    body: bytes


def _unchanged(outcome: Outcome, body: Body) -> bool:
    """Whether ``outcome`` changed nothing but what the same answer would set again: no
    events, position or phase (``progressed``), no counter (duplicates; gaps are events).
    The tracker's ``head`` and the tally's entry are the answer's last message again."""
    return not outcome.progressed and not outcome.duplicates and len(body) <= _SAME_MAX


class Follower:
    """The follow loop of :class:`peer.source.rest.RestSource` (see the module's text)."""

    _config: RestSourceConfig
    _rng: random.Random
    _lock: threading.Lock
    _cond: threading.Condition
    _subs: dict[str, Subscription]
    _buffer: EventBuffer[Item]
    _paused: bool
    _closed: bool
    _room_waiting: bool
    _carried: CarryBudget
    _turns: CatchUpTurns
    _starts: FirstFetches
    _tally: Tally
    _wake: asyncio.Event | None
    _client: ConsumeClient
    _tasks: dict[str, tuple[int, asyncio.Task[None]]]

    def _current(self, sub: Subscription) -> bool:
        return self._subs.get(sub.subject) is sub and not self._closed

    def _fetchable(self) -> bool:
        with self._lock:
            return not self._paused and self._buffer.fetchable()

    def _fetching(self, subject: str) -> None:
        """The hook before each fetch of ``subject`` (doorbell mode: wakeups.py)."""

    async def _until_fetchable(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            with self._lock:
                if not self._paused and self._buffer.fetchable():
                    return
                self._room_waiting = True
            await self._wake.wait()

    def _forget(self, sub: Subscription) -> None:
        """(loop thread) ``sub``'s task ends: forget it unless a newer one replaced it. Called
        by the task itself, not as a done callback: that was 3 more objects per subject
        (a partial, a bound method, a context) for the collector to traverse (issue #16)."""
        current = self._tasks.get(sub.subject)
        if current is not None and current[1] is asyncio.current_task():
            del self._tasks[sub.subject]

    async def _follow(self, sub: Subscription, same: Unchanged | None = None) -> None:
        """(loop thread) Poll one subject for as long as its subscription lasts (or until it
        parks: doorbell mode, ``peer.source.sweep``); ``same``: its last answer that changed
        nothing, when it was parked."""
        try:
            await self._follow_loop(sub, same)
        except asyncio.CancelledError:
            raise
        except SourceError as exc:
            self._fail(sub, exc)
        except Exception as exc:  # a bug must not silently stall a subject
            log.exception("REST source task failed", extra={"subject": sub.subject})
            self._fail(sub, SourceError(f"subject {sub.subject!r}: internal error: {exc!r}"))
        finally:
            self._forget(sub)

    async def _follow_loop(self, sub: Subscription, same: Unchanged | None) -> None:
        idle = IdleBackoff(self._config.poll_idle_min, self._config.poll_idle_max, self._rng)
        subject, malformed = sub.subject, 0
        # The unexamined rest of the last answer, parsed once, answers the next (positional)
        # request. Bounded (CarryBudget): ``held`` is this task's part (its rest, or room reserved
        # to fetch again a rest that did not fit); what can be neither taken nor kept is not parsed.
        carry: Sequence[Message] | None = None
        held, dropped, behind, turn = 0, 0, False, False
        # This subscription's first fetch (a parked one's resumption is not): slow start.
        first, starting, small = same is None, False, None
        # The last answer that changed nothing (no events, position, phase or counters), with
        # its request and target: the tracker is unchanged since, so it asks the same again,
        # and the same bytes in answer cannot change anything either. Most safety fetches of
        # idle subjects are such repeats (issue #16): they skip decoding, the lock and the
        # tracker. Bodies up to _SAME_MAX bytes only: one is kept per idle subject.
        try:
            while True:
                if dropped:
                    held, dropped = await self._carried.reserve(dropped), 0
                # The slot before the turn (one order: no deadlock), both before the wait for
                # room: either may take a while to come. A first fetch also waits for its
                # turn once first answers are large (crowded: decided when its slot came).
                if first:
                    await self._starts.take()
                    first, starting = False, True
                crowded = starting and self._starts.crowded
                if behind or not self._buffer.takes_any() or crowded:  # (a coroutine: waits)
                    turn = await self._turns.take(behind=True)
                if not self._fetchable():
                    await self._until_fetchable()
                self._fetching(subject)
                if same is None:
                    request, target = sub.tracker.next_request(), None
                else:
                    request, target = same.request, same.target
                continued = carry is not None and request.kind is RequestKind.FROM
                body_len = held if continued else 0  # a carry's size: its estimate
                messages, carry = (carry if continued else None), None
                try:
                    if messages is None:
                        target = target or self._client.target(subject, request)
                        body = await self._client.fetch(subject, request, target)
                        try:
                            if same is not None and body == same.body:
                                outcome = _NOTHING if self._current(sub) else None
                            else:
                                same, body_len = None, len(body)
                                room = self._buffer.takes_any()
                                position = sub.tracker.last is not None
                                if self._carried.worth(
                                    body_len - held, room=room, position=position
                                ):
                                    messages = decode_consume(subject, body)
                                if messages is None:
                                    dropped, behind = (body_len if position else 0), True
                                    small = False
                                    continue
                                # validated as the tracker reaches them: the same fault
                                outcome = self._accept(sub, request, messages)
                                if outcome is not None:
                                    small = not outcome.truncated and self._starts.small(
                                        outcome.messages, body_len
                                    )
                                if outcome is not None and _unchanged(outcome, body):
                                    same = Unchanged(request, target, bytes(body))
                        finally:
                            # decoded (messages own their bytes) or let go: a large body's
                            # memory takes the next answer (peer.source.bodies)
                            self._client.give_back(body)
                            del body  # not held across the waits below
                    else:
                        outcome = self._accept(sub, request, messages, continued=continued)
                except MalformedResponseError as exc:
                    turn = self._turns.give_back(turn)
                    starting = self._started(starting, None)
                    malformed += 1
                    if not await self._malformed_pause(sub, exc, request, malformed):
                        return
                    continue
                finally:
                    self._carried.release(held)
                    held = 0
                    turn = self._turns.give_back(turn)
                    starting = self._started(starting, small)
                malformed = 0
                if outcome is None:
                    return
                behind = outcome.truncated
                if outcome.rest is not None and messages:
                    carry, held, dropped = self._carried.keep_rest(outcome.rest, messages, body_len)
                progressed, messages, outcome = outcome.progressed, None, None  # as body above
                if progressed:
                    idle.reset()
                    continue
                # idle, and nothing carried or owed: its safety waits may go on without a task
                idle_only = carry is None and not (held or dropped or behind)
                if same is not None and idle_only and self._park(sub, same):
                    return
                wait = self._idle(subject, idle.next_delay())
                if wait is not None:
                    await wait
                    wait = None
        finally:
            self._carried.release(held)
            self._turns.give_back(turn)
            self._started(starting, None)

    def _started(self, starting: bool, small: bool | None) -> bool:
        """End the first fetch if ``starting`` (:class:`FirstFetches`); always False."""
        if starting:
            self._starts.done(small=small)
        return False

    def _park(self, sub: Subscription, same: Unchanged) -> bool:
        """Whether ``sub``, idle, its last answer ``same``, was parked instead of waiting: its
        task then ends (doorbell mode: ``peer.source.sweep``)."""
        return False

    def _idle(self, subject: str, delay: float) -> Awaitable[None] | None:
        """What to wait for after a fetch that brought nothing (doorbell mode: or until rung;
        None: fetch again at once)."""
        return asyncio.sleep(delay)

    async def _malformed_pause(
        self, sub: Subscription, exc: MalformedResponseError, request: ConsumeRequest, n: int
    ) -> bool:
        """Count a malformed answer and back off; False when the subscription has ended."""
        with self._lock:
            if not self._current(sub):
                return False
            self._tally.malformed += 1
        await asyncio.sleep(self._client.malformed(sub.subject, exc, request, n))
        return True

    def _accept(
        self,
        sub: Subscription,
        request: ConsumeRequest,
        messages: Sequence[Message],
        *,
        continued: bool = False,
    ) -> Outcome | None:
        with self._cond:
            if not self._current(sub):
                return None
            buffer = self._buffer
            room_events, room_bytes = buffer.room()
            outcome = sub.tracker.apply(
                request,
                messages,
                room_events=max(room_events, 0),
                room_bytes=max(room_bytes, 0),
                force_first=not buffer.nevents,
                continued=continued,
            )
            # Logged before the events become visible, so a gap's log line precedes its event.
            outcome.log(sub.subject)
            if outcome.items:
                buffer.extend(sub.subject, outcome.items, outcome.nbytes)
                self._cond.notify_all()
            self._tally.accepted(sub.subject, sub.tracker, outcome)
        return outcome

    def _fail(self, sub: Subscription, exc: SourceError) -> None:
        with self._cond:
            if not self._current(sub):
                return
            # After the subject's buffered events: what came before the fault still counts.
            self._buffer.extend(sub.subject, [SubjectFault(sub.subject, exc)], 0)
            self._cond.notify_all()
        # The peer reports it (once per subject and cause, peer.runner.quarantine); a retry
        # that meets the same refusal is not news.
        log.debug(
            "subject stopped", extra={"subject": sub.subject, "error": self._client.scrub(str(exc))}
        )


__all__ = ["Follower", "Unchanged"]
