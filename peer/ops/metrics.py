"""The metrics of a peer, with no dependency beyond the standard library.

* A small typed registry of counters, gauges and histograms with labels, rendered in the
  Prometheus text exposition format 0.0.4 (what every Prometheus-compatible scraper reads).
* :class:`PeerMetrics`: the metrics ``mdpeer run`` updates.

Health and the HTTP endpoints that serve both are in :mod:`peer.ops.health`. Everything is
thread-safe: the peer's loop, librdkafka callbacks and the HTTP threads touch
the same objects. One lock per metric family keeps updates cheap and a scrape consistent per
family.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Final, Generic, TypeVar

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_NAME_RE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

#: commit latency buckets (seconds): a commit every 100 ms should take a few ms to ~100 ms
COMMIT_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


# --- metric families --------------------------------------------------------------------------

C = TypeVar("C")


class _Family(Generic[C]):
    """A named metric with fixed label names; one child per label-value combination."""

    kind: ClassVar[str]

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"bad metric name {name!r}")
        for label in labels:
            if not _LABEL_RE.fullmatch(label) or label.startswith("__") or label == "le":
                raise ValueError(f"bad label name {label!r} for {name}")
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], C] = {}

    def _new(self) -> C:
        raise NotImplementedError

    def labels(self, *values: str, **named: str) -> C:
        """The child for these label values (positional in declaration order, or by name)."""
        if named:
            if values:
                raise TypeError("pass label values by position or by name, not both")
            try:
                values = tuple(named[n] for n in self.label_names)
            except KeyError as exc:
                raise TypeError(f"{self.name}: missing label {exc.args[0]!r}") from None
            if len(named) != len(self.label_names):
                raise TypeError(f"{self.name}: unknown labels {sorted(named)}")
        if len(values) != len(self.label_names):
            raise TypeError(f"{self.name} takes labels {self.label_names}, got {values!r}")
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new()
            return child

    def remove(self, *values: str) -> None:
        """Forget one child (e.g. the gauge of a shard no longer owned)."""
        with self._lock:
            self._children.pop(tuple(values), None)

    def _unlabelled(self) -> C:
        if self.label_names:
            raise TypeError(f"{self.name} has labels {self.label_names}: use .labels(...)")
        return self.labels()

    def _items(self) -> list[tuple[tuple[str, ...], C]]:
        with self._lock:
            return sorted(self._children.items())

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for values, child in self._items():
            lines.extend(self._render_child(values, child))
        return lines

    def _render_child(self, values: tuple[str, ...], child: C) -> list[str]:
        raise NotImplementedError


class _Value:
    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0.0

    def get(self) -> float:
        with self._lock:
            return self._value


class CounterChild(_Value):
    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        with self._lock:
            self._value += amount


class GaugeChild(_Value):
    __slots__ = ()

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.inc(-amount)


class HistogramChild:
    __slots__ = ("_counts", "_lock", "_sum", "bounds")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._lock = threading.Lock()
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        i = 0
        while i < len(self.bounds) and value > self.bounds[i]:
            i += 1
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[int], float]:
        """Cumulative counts per bucket (the last is +Inf = count) and the sum."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for c in counts:
            running += c
            cumulative.append(running)
        return cumulative, total


class Counter(_Family[CounterChild]):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        super().__init__(name, help_text, labels)

    def _new(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)

    def get(self, *values: str) -> float:
        return self.labels(*values).get()

    def _render_child(self, values: tuple[str, ...], child: CounterChild) -> list[str]:
        labels = _labels_text(self.label_names, values)
        return [f"{self.name}{labels} {format_value(child.get())}"]


class Gauge(_Family[GaugeChild]):
    kind = "gauge"

    def _new(self) -> GaugeChild:
        return GaugeChild()

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._unlabelled().dec(amount)

    def get(self, *values: str) -> float:
        return self.labels(*values).get()

    def _render_child(self, values: tuple[str, ...], child: GaugeChild) -> list[str]:
        labels = _labels_text(self.label_names, values)
        return [f"{self.name}{labels} {format_value(child.get())}"]


class Histogram(_Family[HistogramChild]):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Iterable[float] = COMMIT_BUCKETS,
    ) -> None:
        bounds = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be distinct finite numbers")
        self.bounds = bounds
        super().__init__(name, help_text, labels)

    def _new(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)

    def _render_child(self, values: tuple[str, ...], child: HistogramChild) -> list[str]:
        cumulative, total = child.snapshot()
        lines = []
        bounds = [*(format_value(b) for b in self.bounds), "+Inf"]
        for bound, count in zip(bounds, cumulative, strict=True):
            labels = _labels_text(self.label_names, values, f'le="{bound}"')
            lines.append(f"{self.name}_bucket{labels} {count}")
        labels = _labels_text(self.label_names, values)
        lines.append(f"{self.name}_sum{labels} {format_value(total)}")
        lines.append(f"{self.name}_count{labels} {cumulative[-1]}")
        return lines


class Registry:
    """The metric families of a process, rendered together for ``/metrics``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family[Any]] = {}

    def _add(self, family: _Family[Any]) -> None:
        with self._lock:
            if family.name in self._families:
                raise ValueError(f"metric {family.name!r} is already registered")
            self._families[family.name] = family

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        c = Counter(name, help_text, labels)
        self._add(c)
        return c

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        g = Gauge(name, help_text, labels)
        self._add(g)
        return g

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Iterable[float] = COMMIT_BUCKETS,
    ) -> Histogram:
        h = Histogram(name, help_text, labels, buckets)
        self._add(h)
        return h

    def render(self) -> str:
        with self._lock:
            families = list(self._families.values())
        lines: list[str] = []
        for family in families:
            lines.extend(family.render())
        return "\n".join(lines) + "\n"


class PeerMetrics:
    """The metrics of ``mdpeer run``. Per-route metrics are labelled by target topic (a
    bounded set), not by subject (unbounded)."""

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry or Registry()
        self.info = r.gauge("mdpeer_peer_info", "Always 1: who this peer is.", ["group", "peer"])
        self.messages_in = r.counter(
            "mdpeer_messages_in_total", "Messages received from MigratoryData.", ["topic"]
        )
        self.messages_out = r.counter(
            "mdpeer_messages_out_total",
            "Messages committed to Kafka (inside a committed transaction).",
            ["topic"],
        )
        self.oversized = r.counter(
            "mdpeer_oversized_total",
            "Messages over the size limit, by the route's policy (skip, dead_letter).",
            ["topic", "action"],
        )
        self.commits = r.counter(
            "mdpeer_commits_total", "Kafka transactions ended, by result.", ["result"]
        )
        self.commit_latency = r.histogram(
            "mdpeer_commit_latency_seconds",
            "Time from starting a commit (checkpoints + offsets) to its acknowledgement.",
        )
        self.batch_size = r.histogram(
            "mdpeer_transaction_messages",
            "Messages per committed transaction.",
            buckets=(1, 10, 100, 1000, 10_000, 100_000),
        )
        self.rebuild = r.histogram(
            "mdpeer_shard_rebuild_seconds",
            "Time from an assignment to working on its shards: waiting for the previous "
            "owner's transactions, then reading routes and checkpoints from the control topic.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
        )
        self.owned_shards = r.gauge("mdpeer_owned_shards", "Control shards this peer owns.")
        self.subjects = r.gauge("mdpeer_subjects", "Subjects this peer fetches.")
        self.checkpoint_lag = r.gauge(
            "mdpeer_checkpoint_lag_messages",
            "Messages the source has beyond the committed checkpoints, per owned shard "
            "(where the source can tell).",
            ["shard"],
        )
        self.in_flight = r.gauge(
            "mdpeer_in_flight_messages", "Messages fetched but not yet committed."
        )
        self.gaps = r.counter(
            "mdpeer_gaps_total",
            "Discontinuities in a subject's stream (epoch change or seq jump), by kind.",
            ["kind"],
        )
        self.gap_messages = r.counter(
            "mdpeer_gap_messages_total", "Messages known missing in seq jumps."
        )
        self.errors = r.counter("mdpeer_errors_total", "Errors by kind.", ["kind"])
        self.rebalances = r.counter(
            "mdpeer_rebalances_total", "Shard assignment events (assign, revoke, lost).", ["event"]
        )
        self.blocked = r.gauge(
            "mdpeer_blocked_subjects",
            "Subjects stopped at their checkpoint by a fault of their own, by reason "
            "(topic_missing, topic_unauthorized, oversize, entitlement_denied, ...).",
            ["reason"],
        )
        self.source_reachable = r.gauge(
            "mdpeer_source_reachable",
            "1 while a MigratoryData server answers this peer, 0 while none does.",
        )
        self.producer_replacements = r.counter(
            "mdpeer_producer_replacements_total",
            "Transactional producers replaced in-process after a failure they could not "
            "recover from (an abort refused, a fatal error other than fencing).",
        )

    def render(self) -> str:
        return self.registry.render()


__all__ = [
    "COMMIT_BUCKETS",
    "CONTENT_TYPE",
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "Histogram",
    "HistogramChild",
    "PeerMetrics",
    "Registry",
    "escape_help",
    "escape_label_value",
    "format_value",
]
