"""Coarse timers for long waits: one loop timer per slot of ``tick`` seconds, however many
futures are due in it (issue #16).

An armed idle subject waits the safety interval (30 s by default). With 100,000 of them, a
loop timer each meant a heap of 100,000 ``TimerHandle`` objects, a push and a pop of it (with
Python-level comparisons) per fetch. Here a wait costs a set insertion; a wait may end up to
one tick late, which a jittered 30 s interval does not notice. The tick is short (5 ms)
because a slot's waits all end at once: at 100,000 subjects a 100 ms slot woke 330 fetches
together, which then queued for the 16 requests in flight (more loop work than the timers
saved).
"""

from __future__ import annotations

import asyncio
import math


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class TimerWheel:
    """(one loop's thread) Futures resolved at their slot's end."""

    __slots__ = ("_slots", "tick")

    def __init__(self, tick: float = 0.005) -> None:
        if tick <= 0:
            raise ValueError("tick must be > 0")
        self.tick = tick
        self._slots: dict[int, set[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return sum(len(s) for s in self._slots.values())

    async def sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds (up to a tick more)."""
        fut, slot = self.start(delay)
        try:
            await fut
        finally:
            self.stop(fut, slot)

    def start(self, delay: float, grain: int = 1) -> tuple[asyncio.Future[None], int]:
        """A future that the wheel resolves once ``delay`` (plus up to ``grain`` ticks) has
        passed, and its slot; resolve it earlier yourself, and :meth:`stop` it when done.

        ``grain`` > 1 puts the wait in a slot that is a multiple of ``grain`` ticks, so that
        waits ending close together end together: one loop wake-up (and one burst of
        answers) for several fetches instead of one each, which at a few hundred fetches a
        second was most of their cost (issue #16).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        slot = math.ceil((loop.time() + max(delay, 0.0)) / self.tick)
        if grain > 1:
            slot = -(-slot // grain) * grain
        waiting = self._slots.get(slot)
        if waiting is None:
            waiting = self._slots[slot] = set()
            loop.call_at(slot * self.tick, self._fire, slot)
        waiting.add(fut)
        return fut, slot

    def stop(self, fut: asyncio.Future[None], slot: int) -> None:
        """Forget ``fut`` of ``slot`` (ended early, or cancelled)."""
        waiting = self._slots.get(slot)
        if waiting is not None:
            waiting.discard(fut)

    def _fire(self, slot: int) -> None:
        for fut in self._slots.pop(slot, ()):
            _resolve(fut)


__all__ = ["TimerWheel"]
