"""How often a subject is polled: at once while it yields data, backing off while it is idle,
not again for an answer whose rest there is no room to keep, in turn while it is behind, and,
for a subscription's first fetch, as its slow start allows."""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Callable, Sequence

from peer.model import Message


class IdleBackoff:
    """Delays before re-polling an idle subject: ``minimum``, doubling up to ``maximum``.

    A little jitter (up to 10 % less) keeps subjects that went idle together from being polled
    in lock-step bursts forever. ``reset()`` when the subject yields data again.
    """

    __slots__ = ("_next", "_rng", "maximum", "minimum")

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError("need 0 < minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self._next = minimum
        self._rng = rng or random.Random()

    def reset(self) -> None:
        self._next = self.minimum

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self.maximum, delay * 2)
        return delay * (1 - 0.1 * self._rng.random())


def jittered_backoff(
    failures: int, initial: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Full-jitter exponential backoff after ``failures`` consecutive failures (>= 1)."""
    ceiling = min(maximum, initial * 2 ** min(failures - 1, 30))
    return (rng or random).uniform(initial / 2, max(initial / 2, ceiling))


class CarryBudget:
    """Bytes of parsed answers a source holds back for later, bounded by ``limit``.

    A subject whose rest did not fit reserves its size (:meth:`reserve`, waiting until it
    fits) before it fetches that rest again, and holds the reservation while it fetches:
    asking at once, while other subjects' rests fill the bound, parsed the same megabytes
    over and over and kept none of them, and waking every waiter at each release sent them
    all after a room only one could take. Used from the source's loop thread only.
    """

    __slots__ = ("_freed", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()  # bound to a loop only when first waited on

    def fits(self, nbytes: int) -> bool:
        return self.used + nbytes <= self.limit

    def keep(self, nbytes: int) -> bool:
        """Hold ``nbytes`` more if they fit."""
        if not self.fits(nbytes):
            return False
        self.used += nbytes
        return True

    def release(self, nbytes: int) -> None:
        """A kept rest or a reservation was taken up or let go."""
        if nbytes:
            self.used -= nbytes
            self._freed.set()

    def worth(self, nbytes: int, *, room: bool, position: bool) -> bool:
        """Is an answer of ``nbytes`` worth parsing: can it be taken now (``room``), or kept
        (only once the subject has a ``position``)? A lock-free guess: a wrong no refetches."""
        return room or (position and self.fits(nbytes))

    def keep_rest(
        self, rest: Sequence[Message], answer: Sequence[Message], body_len: int
    ) -> tuple[Sequence[Message] | None, int, int]:
        """Keep ``rest`` of ``answer`` (``body_len``: the answer's bytes, or the estimate of a
        rest kept before) if its share fits: (the rest or None, bytes held, bytes to reserve
        before fetching it again)."""
        share = body_len * len(rest) // len(answer) if body_len else 0
        estimate = share or sum(len(m.content) for m in rest)
        if self.keep(estimate):
            return rest, estimate, 0
        return None, 0, estimate

    async def reserve(self, nbytes: int) -> int:
        """Hold ``nbytes`` once they fit, or once nothing is held (a rest larger than the whole
        bound is then fetched again and cut, as any answer is); returns ``nbytes``."""
        while self.used and not self.fits(nbytes):
            self._freed.clear()
            await self._freed.wait()
        self.used += nbytes
        return nbytes


class CatchUpTurns:
    """One fetch at a time among a source's subjects that are behind (their last answer was
    cut for room) or that find no room when they are about to fetch: such an answer may be
    as large as the server holds from the subject's position, and fetched side by side (up
    to ``max_concurrency`` at once, all let through by the same freed room) most of them
    could be neither taken nor kept. In the throughput benchmark the source received 3.4
    times the bytes it delivered, and receiving them was most of its thread's CPU
    (docs/PERFORMANCE.md). While there is room, subjects that are not behind (caught-up
    ones, or thousands starting at once) never wait for a turn. Loop thread only.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = asyncio.Lock()  # bound to a loop only when first waited on

    async def take(self, behind: bool) -> bool:
        """Wait for the turn if ``behind``; returns whether this caller holds it."""
        if not behind:
            return False
        await self._lock.acquire()
        return True

    def give_back(self, held: bool) -> bool:
        """End the turn if held (idempotent through its result: always False)."""
        if held:
            self._lock.release()
        return False


class FirstFetches:
    """Slow start for subscriptions' first fetches: at most ``limit`` of them in flight.

    Nobody knows how far behind a subject is until its first answer: one starting from a
    history or resuming an old checkpoint may bring all the server holds for it. Sent side
    by side for every subject at once (up to ``maximum``, the source's ``max_concurrency``),
    most such answers could be neither taken nor kept, and were fetched again later
    (docs/PERFORMANCE.md, "Issue 14 on 2026-12-03, evening"). So, as TCP
    does on a fresh connection, the limit starts at ``initial`` and grows by one for each
    *small* first answer: one that ``maximum`` of could share the buffer (``events`` and
    ``nbytes``, its bounds). At ``maximum`` the gate is open: every waiting first fetch goes,
    bounded only by the client's own ``max_concurrency`` and in its queue's order, as
    without this class; let through one at a time, each would queue in the client behind
    the idle polls of every subject already started (RELIABILITY.md, finding 17). Each large
    answer halves the limit; at one, first fetches are :attr:`crowded` and also take their
    catch-up turn (:class:`CatchUpTurns`). Later fetches are not counted here: a first
    answer tells whether its subject is behind.

    A fault of one subject must not hold the others back: a first fetch may be retried for
    as long as its server fails. So while first fetches wait and none has ended for
    ``stall`` seconds, one more goes each ``stall`` seconds, past the limit, unless fetching
    is ``held_back`` (paused, or no room: first fetches then wait as every fetch does).
    Loop thread only.
    """

    __slots__ = (
        "_held_back",
        "_progress",
        "_small_bytes",
        "_small_events",
        "_timer",
        "_waiting",
        "in_flight",
        "limit",
        "maximum",
        "stall",
    )

    def __init__(
        self,
        maximum: int,
        *,
        events: int,
        nbytes: int,
        held_back: Callable[[], bool] = lambda: False,
        initial: int = 2,
        stall: float = 1.0,
    ) -> None:
        if maximum < 1:
            raise ValueError("need maximum >= 1")
        self.maximum = maximum
        self.limit = max(1, min(initial, maximum))
        self.stall = stall
        self._held_back = held_back
        self.in_flight = 0
        self._small_events = max(1, events // maximum)
        self._small_bytes = max(1, nbytes // maximum)
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        #: first fetches ended so far (the stall timer's measure of progress), and that timer
        self._progress = 0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def crowded(self) -> bool:
        """Whether first answers were large lately (the limit is down to one): a first fetch
        then also waits for its catch-up turn, so that no catch-up of another subject fills
        the room its answer was sent for while it is in flight."""
        return self.limit == 1

    def small(self, messages: int, nbytes: int) -> bool:
        """Whether a first answer of ``messages`` (``nbytes`` long), taken whole, is small."""
        return messages <= self._small_events and nbytes <= self._small_bytes

    @property
    def open(self) -> bool:
        """Whether first answers were small lately (the limit is up to ``maximum``): first
        fetches are then not held back here."""
        return self.limit >= self.maximum

    async def take(self) -> None:
        """Wait until one more first fetch may be in flight, then count it (first come,
        first served)."""
        if self.open or (self.in_flight < self.limit and not self._waiting):
            self.in_flight += 1
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiting.append(fut)
        self._let_through()
        if self._timer is None and not fut.done():
            self._timer = loop.call_later(self.stall, self._stalled, self._progress)
        try:
            await fut
        except asyncio.CancelledError:
            # Left in the queue when cancelled while waiting (skipped there): removing it
            # would cost a scan per subject when a rebalance drops thousands at once.
            if fut.done() and not fut.cancelled():  # let through, then cancelled
                self.done(small=None)
            raise

    def done(self, *, small: bool | None) -> None:
        """A first fetch ended: its answer was :meth:`small` (True), large, cut or let go for
        room (False), or there was none to judge (None: a fault, a subscription gone)."""
        self.in_flight -= 1
        self._progress += 1
        if small:
            self.limit = min(self.maximum, self.limit + 1)
        elif small is not None:
            self.limit = max(1, self.limit // 2)
        self._let_through()

    def _let_through(self) -> None:
        waiting = self._waiting
        while waiting and (self.in_flight < self.limit or self.open):
            fut = waiting.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def _stalled(self, progress: int) -> None:
        """(timer) No first fetch ended for ``stall`` seconds: let one more through, past the
        limit, and look again later while any waits."""
        self._timer = None
        waiting = self._waiting
        while waiting and waiting[0].done():
            waiting.popleft()  # cancelled while waiting
        if not waiting:
            return
        if progress == self._progress and not self._held_back():
            self.in_flight += 1
            waiting.popleft().set_result(None)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.stall, self._stalled, self._progress)
