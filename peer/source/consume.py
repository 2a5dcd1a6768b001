"""One consume request to MigratoryData, with failover and retries: the source's HTTP side.

A :class:`ConsumeClient` lives in the source's loop thread. It sends ``GET /rest/consume``
to a server chosen by weight (``peer.source.servers``), returns the body of a 200 answer, and
turns every other outcome into either a retry or an error that names the subject:

* transient (connect errors, timeouts, dropped connections, 5xx, 408, 429): the server is
  marked down, another is chosen, and the request is retried with jittered exponential
  backoff (tenacity) until ``retry_give_up`` (never, by default);
* HTTP 403 raises :class:`EntitlementDeniedError`; 400 and other 4xx raise
  :class:`SourceError` with the server's reason.

The token travels as a query parameter: URLs are never logged, and error texts of the HTTP
library are scrubbed of it (:func:`scrub_token`) before they reach a log line or an error.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Final, NoReturn
from urllib.parse import quote

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from peer.config.servers import ServerAddress
from peer.errors import EntitlementDeniedError, SourceError, SourceUnavailableError
from peer.source.bodies import BodyBuffers
from peer.source.http1 import Body, Http1Pool, HttpTransportError
from peer.source.pacing import jittered_backoff
from peer.source.rest_config import RestSourceConfig
from peer.source.resume import ConsumeRequest
from peer.source.servers import ServerPool
from peer.source.tls import client_context
from peer.source.wire import MalformedResponseError, decode_error

log = logging.getLogger("peer.source")

CONSUME_PATH: Final = "/rest/consume"
#: seconds between two "server failing" (or "answering again") lines for one server
_FLIP_LOG_EVERY_S: Final = 10.0
_TOKEN_PARAM = re.compile(r"(token=)[^&\s'\"]*")


def scrub_token(text: str, token: str | None) -> str:
    """Remove the token from text that may quote a URL or a request."""
    if token:
        text = text.replace(token, "***")
    return _TOKEN_PARAM.sub(r"\1***", text)


def describe_error(exc: BaseException, token: str | None) -> str:
    """``Type: text`` of a transport fault, for logs and errors, with the token removed."""
    text = str(exc)
    return scrub_token(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, token)


class _TransientError(Exception):
    """A fault worth retrying, possibly on another server."""

    def __init__(self, server: ServerAddress, reason: str) -> None:
        super().__init__(reason)
        self.server = server
        self.reason = reason


class ConsumeClient:
    """Consume requests of one source: a keep-alive session, bounded concurrency, failover."""

    def __init__(self, config: RestSourceConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._pool = ServerPool(config.servers, down_for=config.server_down_for, rng=rng)
        self._token = config.token.reveal() if config.token is not None else None
        #: the query's end, the same for every request of this source
        self._token_param = "" if self._token is None else "&token=" + quote(self._token, safe="")
        self._stop: stop_base = (
            stop_never if config.retry_give_up is None else stop_after_delay(config.retry_give_up)
        )
        #: (server, "up"/"down") -> (when last logged, flips not logged since)
        self._flips: dict[tuple[str, str], tuple[float, int]] = {}
        self._http: dict[ServerAddress, Http1Pool] = {}
        #: requests in flight, and those waiting for one to end (bounded by max_concurrency;
        #: asyncio.Semaphore's coroutine calls cost more than the rest of the bookkeeping): a
        #: coroutine's future, or the sweeper's callback (peer.source.sweep)
        self._in_flight = 0
        self._queued: collections.deque[asyncio.Future[None] | Callable[[], None]] = (
            collections.deque()
        )
        #: counters, read by the source's stats (loop thread writes, ints: no lock needed)
        self.requests = 0
        self.request_errors = 0
        #: the same per server (every server from the start: the keys never change)
        self.server_requests = {s.netloc: 0 for s in config.servers}
        self.server_errors = {s.netloc: 0 for s in config.servers}
        #: since when (monotonic) no server has answered at all, and the last such error;
        #: read from the peer's thread (plain attribute reads)
        self.failing_since: float | None = None
        self.last_error = ""
        self._bodies = BodyBuffers()  # replaced by open(), shared by its servers' pools

    async def open(self) -> None:
        """(loop thread) Prepare a connection pool per server; before any :meth:`fetch`."""
        cfg = self._config
        tls = client_context(cfg.tls_ca_file) if cfg.encryption else None
        # one set of body buffers for all servers: at most one large body per request in flight
        bodies = BodyBuffers(max_count=cfg.max_concurrency)
        self._http = {
            s: Http1Pool(
                s.host, s.port, ssl_context=tls, timeout=cfg.request_timeout, bodies=bodies
            )
            for s in cfg.servers
        }
        self._bodies = bodies

    def give_back(self, body: Body) -> None:
        """(loop thread) ``body``, from :meth:`fetch`, is read and let go: a large one is
        received again into the same memory (``peer.source.bodies``). Never use it after."""
        self._bodies.give_back(body)

    async def close(self) -> None:
        """(loop thread) Close the connections."""
        if not self._http:
            return
        for pool in self._http.values():
            await pool.close()
        self._http = {}

    def scrub(self, text: str) -> str:
        return scrub_token(text, self._token)

    def target(self, subject: str, request: ConsumeRequest) -> str:
        """The request target (path and query) that asks ``request`` for ``subject``."""
        query = "".join(f"&{name}={value}" for name, value in request.params().items())
        return f"{CONSUME_PATH}?subject={quote(subject, safe='/')}{query}{self._token_param}"

    async def fetch(self, subject: str, request: ConsumeRequest, target: str | None = None) -> Body:
        """The body of a 200 answer; transient faults retried (tenacity), fatal ones raised.

        ``target``: :meth:`target` of the same request, kept by a caller that asks it again."""
        if target is None:
            target = self.target(subject, request)
        try:
            return await self._attempt(subject, target)  # the common case: no retry machinery
        except _TransientError:
            pass
        cfg = self._config
        await asyncio.sleep(self._rng.uniform(0, cfg.retry_initial))
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_TransientError),
            wait=wait_random_exponential(multiplier=cfg.retry_initial, max=cfg.retry_max),
            stop=self._stop,
            reraise=True,
            before_sleep=lambda state: self._log_retry(subject, state),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(subject, target)
        except _TransientError as exc:
            self._give_up(subject, exc)
        raise AssertionError("unreachable: tenacity either returns or raises")

    def malformed(
        self, subject: str, exc: MalformedResponseError, request: ConsumeRequest, n: int
    ) -> float:
        """The ``n``-th malformed answer in a row for ``subject``: logged; the backoff."""
        cfg = self._config
        delay = jittered_backoff(n, cfg.retry_initial, cfg.retry_max, self._rng)
        log.warning(
            "malformed consume answer, asking again later",
            extra={
                "subject": subject,
                "reason": exc.reason,
                "request": str(request),
                "attempt": n,
                "retry_in_s": round(delay, 3),
            },
        )
        return delay

    def _give_up(self, subject: str, exc: _TransientError) -> NoReturn:
        servers = ", ".join(str(s) for s in self._config.servers)
        raise SourceUnavailableError(
            f"subject {subject!r}: no MigratoryData server answered within "
            f"retry_give_up={self._config.retry_give_up} s (servers {servers}); "
            f"last error from {exc.server.netloc}: {exc.reason}",
            hint="check that the servers are up and reachable",
        )

    def _log_retry(self, subject: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.debug(
            "retrying consume",
            extra={
                "subject": subject,
                "attempt": state.attempt_number,
                "error": getattr(exc, "reason", None),
                "server": exc.server.netloc if isinstance(exc, _TransientError) else None,
            },
        )

    async def _attempt(self, subject: str, target: str) -> Body:
        assert self._http, "ConsumeClient.open() first"
        if self._in_flight < self._config.max_concurrency:
            self._in_flight += 1
        else:
            await self._slot()
        server = self._pool.choose()
        try:
            self.requests += 1
            self.server_requests[server.netloc] += 1
            try:
                status, body = await self._http[server].get(target)
            except (HttpTransportError, OSError, TimeoutError) as exc:
                self._server_failed(server, describe_error(exc, self._token))
        finally:
            self._release()
        transient = self._answered(server, status, body)
        if transient is not None:
            raise _TransientError(server, transient)
        if status == 200:
            return body
        detail = self.scrub(decode_error(body))
        if status == 403:
            raise EntitlementDeniedError(subject, detail)
        if status == 400:
            raise SourceError(
                f"subject {subject!r}: the server refused the request (HTTP 400): {detail}",
                hint="check the subject: it must look like /segment[/segment...]",
            )
        raise SourceError(
            f"subject {subject!r}: server {server.netloc} answered HTTP {status}: {detail}",
            hint="check the servers setting and that REST is enabled on the server",
        )

    def _answered(self, server: ServerAddress, status: int, body: Body) -> str | None:
        """Count an answer of ``server``: the reason of a transient fault (5xx, 408, 429),
        else None (a 200, or a refusal: an answer all the same)."""
        if status >= 500 or status in (408, 429):
            reason = f"HTTP {status}: {self.scrub(decode_error(body))}"
            self._count_failure(server, reason)
            return reason
        self.failing_since = None  # a server answered (even a refusal is an answer)
        if status == 200 and self._pool.mark_up(server):
            self._log_flip(server, "up", logging.INFO, "server answering again", {})
        return None

    # -- requests without a coroutine: the sweeper's safety fetches (peer.source.sweep) -----

    def take_slot(self) -> bool:
        """Take a place among the requests in flight if one is free now."""
        if self._in_flight < self._config.max_concurrency:
            self._in_flight += 1
            return True
        return False

    def when_slot(self, handed: Callable[[], None]) -> None:
        """Call ``handed()`` once a request in flight hands its place over, in turn with the
        coroutines waiting for one; the place is then the caller's."""
        self._queued.append(handed)

    def send(self, target: str, on_done: Callable[[Body | None], None]) -> bool:
        """``GET target``, holding a place (:meth:`take_slot`, :meth:`when_slot`), on a server
        chosen as :meth:`fetch` chooses and one of its idle connections: no coroutine, task
        or future. Its answer is counted as :meth:`fetch` counts one (errors, a server down
        or up), the place is passed on, then ``on_done(body)`` is called: the body of a 200
        answer, or None for anything else (a fault, a timeout, a refusal), which the caller
        asks again with :meth:`fetch`. False when that server has no idle connection:
        nothing was sent, and the place is still the caller's."""
        assert self._http, "ConsumeClient.open() first"
        server = self._pool.choose()
        if not self._http[server].send(target, functools.partial(self._sent, server, on_done)):
            return False
        self.requests += 1
        self.server_requests[server.netloc] += 1
        return True

    def release_slot(self) -> None:
        """Give back a place taken or handed and not used for :meth:`send`."""
        self._release()

    def _sent(
        self,
        server: ServerAddress,
        on_done: Callable[[Body | None], None],
        status: int,
        body: Body,
        exc: BaseException | None,
    ) -> None:
        ok = False
        try:
            if exc is None:
                ok = self._answered(server, status, body) is None and status == 200
            # a reused connection that the server had closed unanswered: not its fault
            elif not (isinstance(exc, HttpTransportError) and exc.unanswered):
                self._count_failure(server, describe_error(exc, self._token))
        finally:
            # the place goes on whatever the counting did: a lost one would shrink the bound
            self._release()
        on_done(body if ok else None)

    async def _slot(self) -> None:
        """Wait until a request in flight hands its place over (first come, first served)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed the place, then cancelled
                self._release()
            raise

    def _release(self) -> None:
        """A request ended: its place goes to the first waiting one, else it is free."""
        queued = self._queued
        while queued:
            waiter = queued.popleft()
            if not isinstance(waiter, asyncio.Future):
                waiter()
                return
            if not waiter.done():
                waiter.set_result(None)
                return
        self._in_flight -= 1

    def _server_failed(self, server: ServerAddress, reason: str) -> NoReturn:
        self._count_failure(server, reason)
        raise _TransientError(server, reason)

    def _count_failure(self, server: ServerAddress, reason: str) -> None:
        self.request_errors += 1
        self.server_errors[server.netloc] += 1
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.last_error = f"{server.netloc}: {reason}"
        if self._pool.mark_down(server):
            extra = {"reason": reason, "down_for_s": self._config.server_down_for}
            self._log_flip(server, "down", logging.WARNING, "server failing, trying others", extra)

    def _log_flip(
        self, server: ServerAddress, state: str, level: int, msg: str, extra: dict[str, object]
    ) -> None:
        """Log a server going down or up, at most once per ``_FLIP_LOG_EVERY_S`` per server and
        state; the next line counts what was left out: a server failing one request in ten
        flips on every failure (RELIABILITY.md, finding 3)."""
        now = time.monotonic()
        key = (server.netloc, state)
        last, skipped = self._flips.get(key, (-_FLIP_LOG_EVERY_S, 0))
        if now - last < _FLIP_LOG_EVERY_S:
            self._flips[key] = (last, skipped + 1)
            return
        self._flips[key] = (now, 0)
        log.log(level, msg, extra={"server": server.netloc, **extra, "not_logged_since": skipped})


__all__ = ["CONSUME_PATH", "ConsumeClient", "describe_error", "scrub_token"]
