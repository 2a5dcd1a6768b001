"""What the peer's loop measures once per turn or second: backpressure (I7), checkpoint lag,
owned shards and subjects, its stopped subjects and the source's requests, into metrics and
health."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

from prometheus_client import Counter, Gauge

from peer.errors import FaultReason
from peer.ops.health import Health
from peer.ops.metrics import PeerMetrics
from peer.runner.quarantine import Quarantine
from peer.runner.shardset import ShardSet
from peer.source.base import GapKind, Source
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
        self._lag_shards: set[str] = set()
        self._lag_topics: set[str] = set()
        self._blocked_reasons: set[str] = set()
        #: the source's request counts (per server) already added to the counters
        self._requests: dict[str, int] = {}
        self._request_errors: dict[str, int] = {}
        # Every known label value from the start, at 0: rate() and increase() then see the
        # first event (a series born at 1 has no earlier sample), dashboards show 0.
        for kind in GapKind:
            metrics.gaps.labels(kind.value)
        for reason in FaultReason:
            metrics.blocked.labels(reason.value)
        for result in ("committed", "aborted"):
            metrics.commits.labels(result)
        for event in ("assign", "revoke", "lost"):
            metrics.rebalances.labels(event)

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
        """Checkpoint lag per owned shard and per route topic (messages the server has beyond
        our commits), and the source's requests per server; once a second."""
        now = time.monotonic()
        if now - self._lag_at < _LAG_EVERY_S:
            return
        self._lag_at = now
        stats = self._source.stats()
        heads = stats.server_head if stats.lagging is None else stats.lagging
        by_shard, by_topic = self._owned.lags(heads)
        m = self._metrics
        self._lag_shards = _set_all(m.checkpoint_lag, by_shard, self._lag_shards)
        self._lag_topics = _set_all(m.route_lag, by_topic, self._lag_topics)
        _add_new(m.source_requests, stats.server_requests, self._requests)
        _add_new(m.source_errors, stats.server_errors, self._request_errors)

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


def _set_all(
    gauge: Gauge, values: Mapping[int, int] | Mapping[str, int], had: set[str]
) -> set[str]:
    """Set one child per key of ``values``; remove those of ``had`` that are gone (a shard
    or route no longer ours). The keys now set."""
    now = {str(key): value for key, value in values.items()}
    for key, value in now.items():
        gauge.labels(key).set(value)
    for key in had - now.keys():
        gauge.remove(key)
    return set(now)


def _add_new(counter: Counter, totals: Mapping[str, int], seen: dict[str, int]) -> None:
    """Add to ``counter`` what ``totals`` (the source's running counts) grew by since ``seen``."""
    for key, total in totals.items():
        grown = total - seen.get(key, 0)
        if grown > 0 or key not in seen:
            counter.labels(key).inc(max(grown, 0))
        seen[key] = total


__all__ = ["Gauges"]
