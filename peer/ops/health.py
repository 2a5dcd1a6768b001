"""Liveness and readiness of a peer, and the HTTP endpoints that serve them with the metrics.

* :class:`Health`: liveness (the main loop's heartbeat is fresh) and readiness (joined the
  group, every owned shard rebuilt, MigratoryData in reach), with an injectable clock so tests
  need not sleep.
* :class:`ObservabilityServer`: ``/metrics`` (Prometheus text, or OpenMetrics when the
  scraper's ``Accept`` asks for it), ``/healthz``, ``/readyz`` over HTTP from a daemon thread
  (``ThreadingHTTPServer``); port 0 picks a free port.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry

from peer.ops.metrics import PeerMetrics, exposition

log = logging.getLogger(__name__)


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
        self._source_mode: dict[str, str] = {}

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

    def source_mode(self, plan: dict[str, str]) -> None:
        """How the source learns of news: doorbell or polling, and why (issue #16)."""
        with self._lock:
            self._source_mode = dict(plan)

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
            source_mode = self._source_mode
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
            "source_mode": source_mode,
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
            page, content_type = exposition(self.server.registry, self.headers.get("Accept", ""))
            self._send(HTTPStatus.OK, content_type, page)
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

    def __init__(
        self, address: tuple[str, int], registry: CollectorRegistry, health: Health
    ) -> None:
        self.registry = registry
        self.health = health
        super().__init__(address, _Handler)


class ObservabilityServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (0: a free port) from a
    daemon thread. Use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        metrics: PeerMetrics | CollectorRegistry,
        health: Health,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._registry = metrics.registry if isinstance(metrics, PeerMetrics) else metrics
        self._health = health
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ObservabilityServer:
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = _Server(self._address, self._registry, self._health)
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


__all__ = ["Health", "ObservabilityServer"]
