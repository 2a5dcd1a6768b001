"""Parked idle subjects: their safety fetches without a task, coroutine or future each
(doorbell mode, issue #16).

In doorbell mode nearly every subject is idle and armed: it is asked again only once per
safety interval, and nearly always answers what it answered last time. A follow task
(``peer.source.follow``) about to wait the safety interval after such an answer *parks* its
subject instead: the subscription and the kept answer (``Unchanged``: request, target,
body) go on a timer wheel and the task ends. When the subject falls due, :class:`Sweeper`
sends the same request straight from the loop's callbacks (``ConsumeClient.send``: the
concurrency bound, the server choice and the counters of every request). An identical 200
answer while the subscription is current, armed and not rung parks the subject again;
anything else starts its follow task again, which fetches on the ordinary path.

Why this keeps exactly-once: a parked subject's tracker is not touched here. The same bytes
in answer to the same request change nothing (the rule follow.py applies to a repeat), and
every other answer is dropped unread and asked again by the follow task: a different body,
a refusal or any other status, a transport fault, a timeout. A ring of a parked subject
starts its task at once (latency); a ring during a sweep's fetch (the ring is cleared before
it, as for any fetch) starts it after the answer, so the doorbell is not lost. A denial,
no room in the buffer, a pause, or no idle connection to send on: the task does the fetch,
and meets the denial, waits for room or connects, as it always did. Unsubscribing, a new
subscription of the subject and closing forget the parked entry; an answer in flight for a
forgotten one is counted and dropped.

Loop thread only. What the follow task costs per idle subject and safety fetch (two task
wake-ups, futures, a chain of coroutine frames, about nine live objects that the collector
traverses) is left to subjects with data.
"""

from __future__ import annotations

import collections
import functools
import logging
from typing import Protocol

from peer.source.consume import ConsumeClient
from peer.source.follow import Unchanged
from peer.source.http1 import Body
from peer.source.resume import Subscription
from peer.source.timerwheel import Wheel

log = logging.getLogger("peer.source")

#: ``Parked.slot`` while due (queued for a place) and while its fetch is in flight
_DUE, _FLYING = 0, -1


class Parked:
    """A parked subject: its subscription, the answer that changed nothing, its state."""

    __slots__ = ("same", "slot", "sub")

    def __init__(self, sub: Subscription, same: Unchanged) -> None:
        self.sub = sub
        self.same = same
        #: its wheel slot while waiting; _DUE or _FLYING
        self.slot = _DUE


class SweepHost(Protocol):
    """What the sweeper asks of its source (``peer.source.wakeups.DoorbellSource``)."""

    def sweepable(self, sub: Subscription) -> bool:
        """Whether ``sub`` may be fetched now without its task (current, not paused, room,
        not denied); it is about to be (its ring is cleared)."""

    def park_wait(self, sub: Subscription) -> tuple[float, int] | None:
        """The safety wait (seconds, wheel grain) of ``sub`` if it may park: current, armed,
        not rung."""

    def restart(self, sub: Subscription, same: Unchanged) -> None:
        """Start ``sub``'s follow task, knowing ``same`` (if ``sub`` is still current)."""


class Sweeper:
    """(loop thread) The parked subjects of one source and their safety fetches."""

    def __init__(self, client: ConsumeClient, host: SweepHost, tick: float = 0.005) -> None:
        self._client = client
        self._host = host
        self._parked: dict[str, Parked] = {}
        self._wheel: Wheel[Parked] = Wheel(self._fell_due, tick)
        #: fallen due, waiting for a place among the requests in flight
        self._due: collections.deque[Parked] = collections.deque()
        #: a place asked for (ConsumeClient.when_slot): one at a time for all of _due
        self._asked = False

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, sub: Subscription, same: Unchanged, wait: tuple[float, int]) -> None:
        """Park ``sub`` (its task ends now) until ``wait`` (:meth:`SweepHost.park_wait`)."""
        parked = Parked(sub, same)
        parked.slot = self._wheel.add(parked, *wait)
        self._parked[sub.subject] = parked

    def unpark(self, sub: Subscription) -> Parked | None:
        """Forget the subject of ``sub`` unless a newer subscription parked it."""
        parked = self._parked.get(sub.subject)
        if parked is None or parked.sub.generation > sub.generation:
            return None
        del self._parked[sub.subject]
        if parked.slot > 0:
            self._wheel.stop(parked, parked.slot)
        return parked

    def wake(self, subject: str) -> None:
        """``subject`` was rung: its task starts at once, unless its fetch is in flight
        (the answer then sees the ring)."""
        parked = self._parked.get(subject)
        if parked is not None and parked.slot != _FLYING:
            self._restart(parked)

    def close(self) -> None:
        self._parked.clear()
        self._due.clear()

    # -- sweeping ------------------------------------------------------------------------

    def _restart(self, parked: Parked) -> None:
        self.unpark(parked.sub)
        self._host.restart(parked.sub, parked.same)

    def _fell_due(self, items: set[Parked]) -> None:
        for parked in items:
            parked.slot = _DUE
        self._due.extend(items)
        self._pump()

    def _pump(self) -> None:
        """Send what is due while places are free; then ask for one."""
        client = self._client
        while self._due and not self._asked:
            if not client.take_slot():
                self._asked = True
                client.when_slot(self._handed)
                return
            self._send()

    def _handed(self) -> None:
        """(from a request that ended) A place is ours."""
        self._asked = False
        if self._due:
            self._send()
        else:
            self._client.release_slot()
        self._pump()

    def _send(self) -> None:
        """Send the first still-parked subject of ``_due``, holding a place."""
        parked_now, client = self._parked, self._client
        while self._due:
            parked = self._due.popleft()
            if parked_now.get(parked.sub.subject) is not parked:
                continue  # woken, unsubscribed or replaced while due
            if not self._host.sweepable(parked.sub):
                break
            parked.slot = _FLYING
            if client.send(parked.same.target, functools.partial(self._answered, parked)):
                return
            break  # no idle connection: the task connects
        else:
            client.release_slot()
            return
        client.release_slot()
        self._restart(parked)

    def _answered(self, parked: Parked, body: Body | None) -> None:
        if self._parked.get(parked.sub.subject) is not parked:
            return  # unsubscribed, replaced or closed meanwhile
        try:
            if body is not None and body == parked.same.body:
                wait = self._host.park_wait(parked.sub)
                if wait is not None:
                    parked.slot = self._wheel.add(parked, *wait)
                    return
        except Exception:  # a bug: the subject must not stay in flight, never asked again
            log.exception("parked subject not parked again", extra={"subject": parked.sub.subject})
        self._restart(parked)


__all__ = ["Parked", "SweepHost", "Sweeper"]
