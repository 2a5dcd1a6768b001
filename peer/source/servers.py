"""Weighted choice of a MigratoryData server and failover (the source's side of the server list;
the list itself is parsed by :mod:`peer.config.servers`).

A server is chosen at random by weight and kept while it answers (sticky: its keep-alive
connections stay warm, and one cluster member answers a subject's consecutive requests). A server
that fails is marked down for a while and another healthy one is chosen, again by weight.
Weight 0 marks a backup: used only when every weighted server is down. When every server is
down, the one that failed longest ago is tried, so the pool never refuses to choose.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

from peer.config.servers import ServerAddress


class ServerPool:
    """Chooses the server for the next request; not thread-safe (used from the source's loop)."""

    def __init__(
        self,
        servers: Sequence[ServerAddress],
        *,
        down_for: float,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not servers:
            raise ValueError("no servers")
        self._servers = tuple(servers)
        self._down_for = down_for
        self._rng = rng or random.Random()
        self._clock = clock
        self._down_until: dict[ServerAddress, float] = {}
        self._current: ServerAddress | None = None

    @property
    def servers(self) -> tuple[ServerAddress, ...]:
        return self._servers

    def is_down(self, server: ServerAddress) -> bool:
        return self._down_until.get(server, 0.0) > self._clock()

    def choose(self) -> ServerAddress:
        """The current server while it is healthy, else a new weighted-random choice."""
        current = self._current
        if current is not None and not self.is_down(current):
            return current
        self._current = self._pick()
        return self._current

    def mark_down(self, server: ServerAddress) -> bool:
        """Avoid ``server`` for ``down_for`` seconds; True if it was up (a state change)."""
        was_up = not self.is_down(server)
        self._down_until[server] = self._clock() + self._down_for
        if self._current == server:
            self._current = None
        return was_up

    def mark_up(self, server: ServerAddress) -> bool:
        """``server`` answered; True if it had been marked down (a recovery)."""
        return self._down_until.pop(server, None) is not None

    def _pick(self) -> ServerAddress:
        now = self._clock()
        healthy = [s for s in self._servers if self._down_until.get(s, 0.0) <= now]
        weighted = [s for s in healthy if s.weight > 0]
        if weighted:
            return self._rng.choices(weighted, weights=[s.weight for s in weighted])[0]
        if healthy:  # only backups (weight 0) are up
            return self._rng.choice(healthy)
        # Everything is down: the one that failed longest ago has had the most time to recover.
        return min(self._servers, key=lambda s: self._down_until.get(s, 0.0))


__all__ = ["ServerPool"]
