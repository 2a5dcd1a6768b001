"""How often a subject is polled: at once while it yields data, backing off while it is idle."""

from __future__ import annotations

import random


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
