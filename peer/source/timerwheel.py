"""Coarse timers for long waits: one loop timer per slot of ``tick`` seconds, however many
waits are due in it (issue #16).

An armed idle subject waits the safety interval (30 s by default). With 100,000 of them, a
loop timer each meant a heap of 100,000 ``TimerHandle`` objects, a push and a pop of it (with
Python-level comparisons) per fetch. Here a wait costs a set insertion; a wait may end up to
one tick late, which a jittered 30 s interval does not notice. The tick is short (5 ms)
because a slot's waits all end at once: at 100,000 subjects a 100 ms slot woke 330 fetches
together, which then queued for the 16 requests in flight (more loop work than the timers
saved).

:class:`Wheel` holds any items and hands a slot's items to a callback when it ends (the
sweeper's parked subjects, ``peer.source.sweep``); :class:`TimerWheel` is the same for
futures, resolved when their slot ends.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Wheel(Generic[T]):
    """(one loop's thread) Items handed to ``due`` once their slot has ended."""

    __slots__ = ("_due", "_slots", "tick")

    def __init__(self, due: Callable[[set[T]], None], tick: float = 0.005) -> None:
        if tick <= 0:
            raise ValueError("tick must be > 0")
        self.tick = tick
        self._due = due
        self._slots: dict[int, set[T]] = {}

    def __len__(self) -> int:
        return sum(len(s) for s in self._slots.values())

    def add(self, item: T, delay: float, grain: int = 1) -> int:
        """Hand ``item`` to ``due`` once ``delay`` (plus up to ``grain`` ticks) has passed;
        its slot (for :meth:`stop`).

        ``grain`` > 1 puts the wait in a slot that is a multiple of ``grain`` ticks, so that
        waits ending close together end together: one loop wake-up (and one burst of
        answers) for several fetches instead of one each, which at a few hundred fetches a
        second was most of their cost (issue #16).
        """
        loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + max(delay, 0.0)) / self.tick)
        if grain > 1:
            slot = -(-slot // grain) * grain
        waiting = self._slots.get(slot)
        if waiting is None:
            waiting = self._slots[slot] = set()
            loop.call_at(slot * self.tick, self._fire, slot)
        waiting.add(item)
        return slot

    def stop(self, item: T, slot: int) -> None:
        """Forget ``item`` of ``slot`` (ended early, or cancelled)."""
        waiting = self._slots.get(slot)
        if waiting is not None:
            waiting.discard(item)

    def _fire(self, slot: int) -> None:
        items = self._slots.pop(slot, None)
        if items:
            self._due(items)


def _resolve_all(futures: set[asyncio.Future[None]]) -> None:
    for fut in futures:
        _resolve(fut)


class TimerWheel(Wheel[asyncio.Future[None]]):
    """(one loop's thread) Futures resolved at their slot's end."""

    __slots__ = ()

    def __init__(self, tick: float = 0.005) -> None:
        super().__init__(_resolve_all, tick)

    async def sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds (up to a tick more)."""
        fut, slot = self.start(delay)
        try:
            await fut
        finally:
            self.stop(fut, slot)

    def start(self, delay: float, grain: int = 1) -> tuple[asyncio.Future[None], int]:
        """A future that the wheel resolves once ``delay`` (plus up to ``grain`` ticks, see
        :meth:`add`) has passed, and its slot; resolve it earlier yourself, and :meth:`stop`
        it when done."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        return fut, self.add(fut, delay, grain)


__all__ = ["TimerWheel", "Wheel"]
