"""Metrics and health endpoints of a peer, with no dependency beyond the standard library.

* A small typed registry of counters, gauges and histograms with labels, rendered in the
  Prometheus text exposition format 0.0.4 (what every Prometheus-compatible scraper reads).
* :class:`PeerMetrics`: the metrics ``mdpeer run`` updates (issue 4's list).
* :class:`Health`: liveness (the main loop's heartbeat is fresh) and readiness (joined the
  group, every owned shard rebuilt), with an injectable clock so tests need not sleep.
* :class:`ObservabilityServer`: ``/metrics``, ``/healthz``, ``/readyz`` over HTTP from a
  daemon thread (``ThreadingHTTPServer``); port 0 picks a free port.

Everything is thread-safe: the peer's loop, librdkafka callbacks and the HTTP threads touch
the same objects. One lock per metric family keeps updates cheap and a scrape consistent per
family.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


# --- health -----------------------------------------------------------------------------------


class Health:
    """Liveness and readiness of a peer.

    Live: the main loop called :meth:`beat` within ``heartbeat_timeout`` seconds (a stuck
    loop makes the orchestrator restart the process). Before the first beat, the time of
    creation counts, so start-up gets the same grace.

    Ready: joined the group, no owned shard is still being rebuilt (owning zero shards is
    ready: a spare peer in a bigger group is healthy), and MigratoryData has not been out of
    reach for longer than the peer's ``source_unready_after_ms``. Subjects stopped by a fault
    of their own are listed (``blocked``) but do not make the peer unready: they are a data
    fault that another peer would meet too, not a dead peer.
    """

    def __init__(
        self, heartbeat_timeout: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if heartbeat_timeout <= 0:
            raise ValueError("heartbeat_timeout must be positive")
        self.heartbeat_timeout = heartbeat_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._last_beat = clock()
        self._joined = False
        self._owned: set[int] = set()
        self._rebuilding: set[int] = set()
        self._not_ready: str | None = None
        self._blocked: dict[str, Any] = {"count": 0, "by_reason": {}, "subjects": []}
        self._source: dict[str, Any] | None = None
        self._source_unready = False

    def beat(self) -> None:
        with self._lock:
            self._last_beat = self._clock()

    def joined(self) -> None:
        with self._lock:
            self._joined = True

    def left(self, reason: str = "left the group") -> None:
        with self._lock:
            self._joined = False
            self._not_ready = reason
            self._owned.clear()
            self._rebuilding.clear()

    def assigned(self, shards: Iterable[int]) -> None:
        """Shards given to this peer: not ready until each one is :meth:`rebuilt`."""
        with self._lock:
            self._joined = True
            self._not_ready = None
            new = set(shards)
            self._owned |= new
            self._rebuilding |= new

    def rebuilt(self, shard: int) -> None:
        with self._lock:
            self._rebuilding.discard(shard)

    def revoked(self, shards: Iterable[int]) -> None:
        with self._lock:
            gone = set(shards)
            self._owned -= gone
            self._rebuilding -= gone

    def blocked(self, summary: dict[str, Any]) -> None:
        """The peer's stopped subjects (count, by reason, the first ones)."""
        with self._lock:
            self._blocked = summary

    def source_unreachable(self, failing_for: float, error: str, *, unready: bool) -> None:
        """No MigratoryData server answered for ``failing_for`` s (0: they answer again)."""
        with self._lock:
            self._source = (
                {"unreachable_for_s": round(failing_for, 1), "last_error": error}
                if failing_for > 0
                else None
            )
            self._source_unready = unready

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            age = self._clock() - self._last_beat
        alive = age <= self.heartbeat_timeout
        body: dict[str, Any] = {"alive": alive, "heartbeat_age_s": round(age, 3)}
        if not alive:
            body["reason"] = (
                f"main loop heartbeat is {age:.1f}s old (limit {self.heartbeat_timeout:g}s)"
            )
        return alive, body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            joined, owned, rebuilding = self._joined, sorted(self._owned), sorted(self._rebuilding)
            left_reason = self._not_ready
            blocked, source, source_unready = self._blocked, self._source, self._source_unready
        reason = None
        if not joined:
            reason = left_reason or "not joined the consumer group yet"
        elif rebuilding:
            reason = f"rebuilding shards {rebuilding}"
        elif source_unready and source is not None:
            reason = (
                f"no MigratoryData server answered for {source['unreachable_for_s']} s "
                f"(last error: {source['last_error']})"
            )
        body: dict[str, Any] = {
            "ready": reason is None,
            "owned_shards": owned,
            "rebuilding": rebuilding,
            "blocked": blocked,
            "source": source or {"reachable": True},
        }
        if reason is not None:
            body["reason"] = reason
        return reason is None, body


# --- HTTP -------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(HTTPStatus.OK, CONTENT_TYPE, self.server.render().encode("utf-8"))
        elif path in ("/healthz", "/readyz"):
            check = (
                self.server.health.liveness if path == "/healthz" else self.server.health.readiness
            )
            ok, body = check()
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(status, "application/json", json.dumps(body).encode("utf-8"))
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # Scrapes every few seconds would flood stderr; keep them at debug level.
        log.debug("http %s", format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], render: Callable[[], str], health: Health) -> None:
        self.render = render
        self.health = health
        super().__init__(address, _Handler)


class ObservabilityServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (0: a free port) from a
    daemon thread. Use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        metrics: PeerMetrics | Registry,
        health: Health,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._render = metrics.render
        self._health = health
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ObservabilityServer:
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = _Server(self._address, self._render, self._health)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="mdpeer-http",
            daemon=True,
        )
        self._thread.start()
        log.info("metrics and health on http://%s:%d", self.host, self.port)
        return self

    @property
    def host(self) -> str:
        return self._address[0]

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> ObservabilityServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "CONTENT_TYPE",
    "Counter",
    "Gauge",
    "Health",
    "Histogram",
    "ObservabilityServer",
    "PeerMetrics",
    "Registry",
    "escape_label_value",
    "format_value",
]
