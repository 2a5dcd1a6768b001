"""The metrics of a peer, on the Prometheus project's own client (``prometheus_client``).

:class:`PeerMetrics` declares what ``mdpeer run`` measures, in a registry of its own (tests
run several peers' metrics in one process), with the client's process collector (CPU,
memory, file descriptors, start time) and platform collector (``python_info``).
:func:`exposition` encodes a registry as the scraper asks: OpenMetrics when its ``Accept``
header prefers it, else the Prometheus text format 0.0.4. The client's metrics are
thread-safe: the peer's loop, librdkafka callbacks and the HTTP threads share them.

Health and the HTTP endpoints that serve both are in :mod:`peer.ops.health`. Every metric is
listed, with a PromQL example, in docs/RUNNING.md (tests/test_monitoring.py compares the two).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

# A ``*_created`` series per counter and histogram child would double the series count for a
# value no dashboard or alert of ours reads (the process's start time is exported anyway).
disable_created_metrics()  # type: ignore[no-untyped-call]  # the client leaves it unannotated

#: commit latency buckets (seconds): a commit every 100 ms should take a few ms to ~100 ms
COMMIT_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def exposition(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """(body, content type) of ``registry`` in the format the ``Accept`` header asks for."""
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type


def cause_label(cause: BaseException | str) -> str:
    """A label value for why something happened: an error's class name in snake case without
    ``Error`` (``GroupFencedError``: ``group_fenced``), or the string given."""
    if isinstance(cause, str):
        return cause
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(cause).__name__.removesuffix("Error")).lower()


class PeerMetrics:
    """The metrics of ``mdpeer run``. Per-route metrics are labelled by target topic (a
    bounded set), not by subject (unbounded)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, labels, registry=r)

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, buckets=buckets, registry=r)

        self.info = gauge("mdpeer_peer_info", "Always 1: who this peer is.", ["group", "peer"])
        self.shards = gauge(
            "mdpeer_shards",
            "Shards (control-topic partitions) of the deployment this peer belongs to.",
        )
        self.messages_in = counter(
            "mdpeer_messages_in_total",
            "Messages received from MigratoryData, by route target topic.",
            ["topic"],
        )
        self.messages_out = counter(
            "mdpeer_messages_out_total",
            "Messages committed to Kafka (inside a committed transaction), by target topic.",
            ["topic"],
        )
        self.oversized = counter(
            "mdpeer_oversized_total",
            "Messages over the size limit, by the route's policy (skip, dead_letter).",
            ["topic", "action"],
        )
        self.commits = counter(
            "mdpeer_commits_total", "Kafka transactions ended, by result.", ["result"]
        )
        self.aborts = counter(
            "mdpeer_aborts_total",
            "Kafka transactions aborted, by cause (the error that made the abort necessary, "
            "or lost for shards lost to the group).",
            ["cause"],
        )
        self.commit_latency = histogram(
            "mdpeer_commit_latency_seconds",
            "Time from starting a commit (checkpoints + offsets) to its acknowledgement.",
            COMMIT_BUCKETS,
        )
        self.batch_size = histogram(
            "mdpeer_transaction_messages",
            "Messages per committed transaction.",
            (1, 10, 100, 1000, 10_000, 100_000),
        )
        self.rebuild = histogram(
            "mdpeer_shard_rebuild_seconds",
            "Time from an assignment to working on its shards: waiting for the previous "
            "owner's transactions, then reading routes and checkpoints from the control topic.",
            (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
        )
        self.owned_shards = gauge("mdpeer_owned_shards", "Control shards this peer owns.")
        self.subjects = gauge("mdpeer_subjects", "Subjects this peer fetches.")
        self.checkpoint_lag = gauge(
            "mdpeer_checkpoint_lag_messages",
            "Messages the source has beyond the committed checkpoints, per owned shard "
            "(where the source can tell).",
            ["shard"],
        )
        self.route_lag = gauge(
            "mdpeer_route_lag_messages",
            "Messages the source has beyond the committed checkpoints, per route target "
            "topic (where the source can tell).",
            ["topic"],
        )
        self.in_flight = gauge(
            "mdpeer_in_flight_messages", "Messages fetched but not yet committed."
        )
        self.gaps = counter(
            "mdpeer_gaps_total",
            "Discontinuities in a subject's stream (epoch change or seq jump), by kind.",
            ["kind"],
        )
        self.gap_messages = counter(
            "mdpeer_gap_messages_total", "Messages known missing in seq jumps."
        )
        self.errors = counter("mdpeer_errors_total", "Errors by kind.", ["kind"])
        self.rebalances = counter(
            "mdpeer_rebalances_total", "Shard assignment events (assign, revoke, lost).", ["event"]
        )
        self.blocked = gauge(
            "mdpeer_blocked_subjects",
            "Subjects stopped at their checkpoint by a fault of their own, by reason "
            "(topic_missing, topic_unauthorized, oversize, entitlement_denied, ...).",
            ["reason"],
        )
        self.source_reachable = gauge(
            "mdpeer_source_reachable",
            "1 while a MigratoryData server answers this peer, 0 while none does.",
        )
        self.source_requests = counter(
            "mdpeer_source_requests_total",
            "Consume requests sent to MigratoryData, by server.",
            ["server"],
        )
        self.source_errors = counter(
            "mdpeer_source_request_errors_total",
            "Consume requests that failed (transport error, timeout, HTTP 5xx, 408 or 429), "
            "by server; each is retried, on another server when there is one.",
            ["server"],
        )
        self.source_doorbell_connected = gauge(
            "mdpeer_source_doorbell_connected",
            "1 while MigratoryData's client (doorbell mode) is connected, else 0.",
        )
        self.source_doorbells = counter(
            "mdpeer_source_doorbells_total",
            "Doorbells: a subject's fetch woken by MigratoryData's client (doorbell mode).",
        )
        self.producer_replacements = counter(
            "mdpeer_producer_replacements_total",
            "Transactional producers replaced in-process after a failure they could not "
            "recover from (an abort refused, a fatal error other than fencing).",
        )

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """One sample's value as a scrape would read it (0 while it has none)."""
        return self.registry.get_sample_value(name, dict(labels or {})) or 0.0

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        return exposition(self.registry, accept)


__all__ = ["COMMIT_BUCKETS", "PeerMetrics", "cause_label", "exposition"]
