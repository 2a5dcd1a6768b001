"""What the peer's loop measures once per turn or second: backpressure (I7), checkpoint lag,
owned shards and subjects, and its stopped subjects, into metrics and health."""

from __future__ import annotations

import time
from typing import Final

from peer.ops.health import Health
from peer.ops.metrics import PeerMetrics
from peer.runner.quarantine import Quarantine
from peer.runner.shardset import ShardSet
from peer.source.base import Source
from peer.writer import TransactionalWriter

#: how often the checkpoint-lag gauges are refreshed
_LAG_EVERY_S: Final = 1.0


class Gauges:
    """Keeps the peer's gauges and the source's pause state; the loop thread's only."""

    def __init__(
        self,
        *,
        metrics: PeerMetrics,
        health: Health,
        owned: ShardSet,
        source: Source,
        max_in_flight: int,
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._owned = owned
        self._source = source
        self._max_in_flight = max_in_flight
        self._paused = False
        self._lag_at = 0.0
        self._lag_shards: set[int] = set()
        self._blocked_reasons: set[str] = set()

    def owned(self) -> None:
        self._metrics.owned_shards.set(len(self._owned.shards))
        self._metrics.subjects.set(len(self._owned.subjects))

    def blocked(self, quarantine: Quarantine) -> None:
        counts = quarantine.counts()
        for reason in self._blocked_reasons - counts.keys():
            self._metrics.blocked.labels(reason).set(0)
        for reason, n in counts.items():
            self._metrics.blocked.labels(reason).set(n)
        self._blocked_reasons = set(counts)
        self._health.blocked(quarantine.summary())

    def lag(self) -> None:
        """Checkpoint lag per owned shard: messages the server has beyond our commits."""
        now = time.monotonic()
        if now - self._lag_at < _LAG_EVERY_S:
            return
        self._lag_at = now
        lag = self._owned.lag(self._source.stats().server_head)
        for shard, value in lag.items():
            self._metrics.checkpoint_lag.labels(str(shard)).set(value)
        for shard in self._lag_shards - lag.keys():
            self._metrics.checkpoint_lag.remove(str(shard))
        self._lag_shards = set(lag)

    def backpressure(self, writer: TransactionalWriter) -> None:
        """I7: pause fetching while too much is in flight; resume below half."""
        in_flight = writer.in_flight() + writer.transaction_records
        self._metrics.in_flight.set(in_flight)
        limit = self._max_in_flight
        if not self._paused and in_flight >= limit:
            self._source.pause()
            self._paused = True
        elif self._paused and in_flight < limit // 2:
            self._source.resume()
            self._paused = False


__all__ = ["Gauges"]
