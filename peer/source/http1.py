"""A lean HTTP/1.1 keep-alive client for the consume request (issue #16).

In doorbell mode one peer sends thousands of small safety fetches a second (100,000 armed
subjects / 30 s). aiohttp spent about 150 us of Python per request on machinery the source
never uses (URL objects, cookie and redirect handling, tracing signals, a timeout context, a
response object with lazy headers); this client is what the request needs and no more:

* ``GET`` only, one request at a time per connection (no pipelining: servers differ), the
  request line and ``Host`` prepared once per server;
* answers framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or the connection's
  end; 1xx answers skipped; ``Connection: close`` and HTTP/1.0 honoured;
* connections kept alive and reused (idle ones dropped after ``keepalive`` seconds); a
  reused connection that the server closed before any byte of the answer is retried once on
  a new one (the request is idempotent), so an idle timeout on the server's side is not a
  server fault;
* a total timeout per request (connect included), TLS with the caller's context.

Every transport fault is an :class:`HttpTransportError` (or :class:`TimeoutError`, or an
``OSError`` from connecting, TLS included): the caller classifies them. No URL is ever part
of an error text (the token travels in the query).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Final

from peer.source.bodies import LEND_MIN, BodyBuffers

#: the longest status line plus headers accepted
MAX_HEAD: Final = 64 * 1024
#: bytes read at once while no body is received in place (heads, small and chunked answers;
#: as much as asyncio's own transports read at once)
_SCRATCH: Final = 256 * 1024

#: an answer's body: ``bytes``, the ``bytearray`` one was received into in place, or a body
#: lent by :class:`BodyBuffers` (a large one: to be handed back, never kept)
Body = bytes | bytearray | memoryview
#: what :meth:`Http1Pool.send` calls with an answer: ``(status, body, None)``, or
#: ``(0, b"", fault)`` for a transport fault or a timeout
AnswerCallback = Callable[[int, Body, BaseException | None], None]

log = logging.getLogger("peer.source")


class HttpTransportError(Exception):
    """The request got no complete HTTP/1.1 answer. ``unanswered``: not a byte of an answer
    came on a reused connection before it closed (safe to send again on a new one)."""

    def __init__(self, reason: str, *, unanswered: bool = False) -> None:
        super().__init__(reason)
        self.unanswered = unanswered


class _Handed:
    """Where a request sent by :meth:`Http1Pool.send` waits for its answer: in the
    connection's ``waiter`` place (a future's ``done``, ``set_result`` and
    ``set_exception``), handing the answer to a callback. No task, coroutine or future per
    request: the sweeper's safety fetches of idle subjects (issue #16)."""

    __slots__ = ("_conn", "_done", "_on_answer", "_pool")

    def __init__(self, pool: Http1Pool, conn: _Connection, on_answer: AnswerCallback) -> None:
        self._pool, self._conn, self._on_answer = pool, conn, on_answer
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, answer: tuple[int, Body]) -> None:
        self._end(answer[0], answer[1], None)

    def set_exception(self, exc: BaseException) -> None:
        self._end(0, b"", exc)

    def _end(self, status: int, body: Body, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self._pool._settle(self._conn, failed=exc is not None)
        try:
            self._on_answer(status, body, exc)
        except Exception:  # raised into a protocol callback, it would close the connection
            log.exception("answer callback failed")


_Waiter = asyncio.Future[tuple[int, Body]] | _Handed


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection: at most one request in flight (``waiter``)."""

    __slots__ = (
        "_bodies",
        "_body",
        "_chunked",
        "_filled",
        "_head",
        "_in_place",
        "_into",
        "_keep",
        "_remaining",
        "_scratch",
        "_status",
        "_until_eof",
        "buf",
        "closed",
        "deadline",
        "got_bytes",
        "reused",
        "transport",
        "used_at",
        "waiter",
    )

    def __init__(self, bodies: BodyBuffers | None = None) -> None:
        self._bodies = bodies
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self._scratch: memoryview | None = None
        self.waiter: _Waiter | None = None
        self.closed = False
        self.reused = False
        self.got_bytes = False
        self.used_at = 0.0
        #: (loop time) when the request in flight times out
        self.deadline = 0.0
        self._reset()

    def _reset(self) -> None:
        self._head = False
        self._status = 0
        self._keep = True
        self._chunked = False
        self._until_eof = False
        self._remaining = 0
        self._body = bytearray()  # a chunked body
        #: a Content-Length body received in place (a ``bytearray``, or lent), a view of it
        #: while it is, and how much of it is in
        self._in_place: Body = b""
        self._into: memoryview | None = None
        self._filled = 0

    # -- asyncio's callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    # A large answer (a consume answer is up to megabytes) is read straight into a body of
    # its Content-Length, once its head is in: no chunk objects, no growing buffer (which
    # faulted in fresh pages as it grew), no copy out of it (issue 14).

    def get_buffer(self, sizehint: int) -> memoryview:
        into = self._into
        if into is not None:
            return into[self._filled :]
        if self._scratch is None:
            self._scratch = memoryview(bytearray(_SCRATCH))
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self._into is None:
            assert self._scratch is not None
            self.data_received(self._scratch[:nbytes])
            return
        waiter = self.waiter
        if waiter is None or waiter.done():
            self.close()
            return
        self._filled += nbytes
        if self._filled == len(self._into):
            self._finish(waiter, self._in_place)

    def data_received(self, data: bytes | memoryview) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: this connection's framing is lost
            return
        self.got_bytes = True
        self.buf += data
        try:
            self._parse(waiter)
        except HttpTransportError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        waiter = self.waiter
        if waiter is not None and not waiter.done() and self._until_eof:
            self._finish(waiter, bytes(self.buf))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self._until_eof and self._head:
            self._finish(waiter, bytes(self.buf))
            return
        reason = "connection closed before the answer was complete"
        if exc is not None:
            reason += f" ({type(exc).__name__}: {exc})" if str(exc) else f" ({type(exc).__name__})"
        waiter.set_exception(
            HttpTransportError(reason, unanswered=self.reused and not self.got_bytes)
        )

    # -- the answer --------------------------------------------------------------------------

    def _parse(self, waiter: _Waiter) -> None:
        buf = self.buf
        while not self._head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise HttpTransportError(f"answer head longer than {MAX_HEAD} bytes")
                return
            self._read_head(bytes(buf[:end]))
            del buf[: end + 4]
        if self._until_eof:
            return
        if not self._chunked:
            if len(buf) < self._remaining:
                self._receive_in_place()
                return
            n = self._remaining
            with memoryview(buf) as view:  # one copy of a body of megabytes, not two
                body = bytes(view[:n])
            del buf[:n]
            self._finish(waiter, body)
            return
        self._read_chunks(waiter)

    def _receive_in_place(self) -> None:
        """The rest of this Content-Length body goes straight into ``_in_place``."""
        n, bodies = self._remaining, self._bodies
        if bodies is not None and n >= LEND_MIN:
            into = self._in_place = bodies.lend(n)
        else:
            body = self._in_place = bytearray(n)
            into = memoryview(body)
        into[: len(self.buf)] = self.buf
        self._filled = len(self.buf)
        self.buf.clear()
        self._into = into

    def _read_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
            raise HttpTransportError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        try:
            status = int(parts[1])
        except ValueError:
            raise HttpTransportError(f"not an HTTP/1.x status line: {lines[0][:80]!r}") from None
        if 100 <= status < 200:
            return  # informational: the real answer follows
        length: int | None = None
        keep = parts[0] == b"HTTP/1.1"
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise HttpTransportError(f"bad Content-Length {value[:40]!r}") from None
                if length < 0:
                    raise HttpTransportError(f"bad Content-Length {value[:40]!r}")
            elif name == b"transfer-encoding":
                chunked = value.strip().lower().endswith(b"chunked")
            elif name == b"connection":
                token = value.strip().lower()
                if token == b"close":
                    keep = False
                elif token == b"keep-alive":
                    keep = True
        self._head, self._status, self._keep = True, status, keep
        if status in (204, 304):
            self._remaining = 0
        elif chunked:
            self._chunked = True
        elif length is not None:
            self._remaining = length
        else:
            self._until_eof, self._keep = True, False

    def _read_chunks(self, waiter: _Waiter) -> None:
        buf = self.buf
        while True:
            if self._remaining:  # inside a chunk: its data, then its CRLF
                if len(buf) < self._remaining + 2:
                    return
                self._body += buf[: self._remaining]
                del buf[: self._remaining + 2]
                self._remaining = 0
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise HttpTransportError("chunk size line too long")
                return
            size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpTransportError(f"bad chunk size {size_text[:40]!r}") from None
            if size:
                del buf[: end + 2]
                self._remaining = size
                continue
            trailer_end = buf.find(b"\r\n\r\n", end)
            if trailer_end < 0 and buf[end + 2 : end + 4] != b"\r\n":
                return  # the last chunk's trailers are not all in yet
            stop = end + 4 if buf[end + 2 : end + 4] == b"\r\n" else trailer_end + 4
            del buf[:stop]
            self._finish(waiter, bytes(self._body))
            return

    def _finish(self, waiter: _Waiter, body: Body) -> None:
        status, keep = self._status, self._keep and not self.buf
        self._reset()
        self.buf.clear()
        if not keep:
            self.close()
        if not waiter.done():
            waiter.set_result((status, body))

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        """Aborted, not closed: a connection is closed when it failed or is let go, and a
        TLS close would wait for the server's close_notify; a loop that ended first left
        that socket open (a ResourceWarning, a leaked descriptor)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Http1Pool:
    """Keep-alive connections to one server; used from one asyncio loop only."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        timeout: float,
        keepalive: float = 30.0,
        bodies: BodyBuffers | None = None,
    ) -> None:
        self._host = host.strip("[]")
        self._port = port
        self._ssl = ssl_context
        self._timeout = timeout
        self._keepalive = keepalive
        #: where large bodies are received: lent to the caller, who hands them back
        self._bodies = bodies
        netloc = f"[{self._host}]" if ":" in self._host else self._host
        self._tail = f" HTTP/1.1\r\nHost: {netloc}:{port}\r\n\r\n".encode("ascii")
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        #: connections with a request in flight, and the one timer that times them out: a
        #: timer per request cost a heap push and pop per fetch, thousands a second
        self._busy: set[_Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._tick = min(0.25, timeout / 4)

    async def get(self, target: str) -> tuple[int, Body]:
        """``GET target`` (path and query); the status and the whole body."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        conn = self._take_idle()
        if conn is not None:
            try:
                return await self._send(loop, conn, target, deadline)
            except HttpTransportError as exc:
                if not exc.unanswered:
                    raise
        conn = await self._connect(loop, deadline)
        return await self._send(loop, conn, target, deadline)

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # aborted sockets close on the loop's next turn

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.used_at < self._keepalive:
                conn.reused = True
                return conn
            conn.close()
            self._open.discard(conn)
        return None

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the requests past their deadline; again in a tick while any are in flight."""
        now = loop.time()
        # a handed answer leaves _busy at once: not while iterating over it
        late = [conn for conn in self._busy if conn.deadline <= now]
        for conn in late:
            waiter = conn.waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(TimeoutError(f"no answer within {self._timeout:g} s"))
        self._sweep = loop.call_later(self._tick, self._expire, loop) if self._busy else None

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError(f"no answer within {self._timeout:g} s")
        try:
            async with asyncio.timeout(left):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self._bodies),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except TimeoutError:
            raise TimeoutError(f"no connection within {self._timeout:g} s") from None
        self._open.add(conn)
        return conn

    def send(self, target: str, on_answer: AnswerCallback) -> bool:
        """``GET target`` on an idle keep-alive connection, the answer handed to
        ``on_answer`` (from a protocol callback; a fault, the timeout included, as
        ``(0, b"", exc)``); False, and nothing sent, when no connection is idle (then use
        :meth:`get`). A reused connection that the server closed unanswered is not asked
        again here: ``exc.unanswered`` says so."""
        conn = self._take_idle()
        if conn is None:
            return False
        loop = asyncio.get_running_loop()
        self._write(loop, conn, target, loop.time() + self._timeout, _Handed(self, conn, on_answer))
        return True

    def _write(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: _Connection,
        target: str,
        deadline: float,
        waiter: _Waiter,
    ) -> None:
        conn.waiter, conn.got_bytes, conn.deadline = waiter, False, deadline
        assert conn.transport is not None
        conn.transport.write(b"GET " + target.encode("ascii") + self._tail)
        self._busy.add(conn)
        if self._sweep is None:
            self._sweep = loop.call_later(self._tick, self._expire, loop)

    def _settle(self, conn: _Connection, *, failed: bool) -> None:
        """``conn``'s request ended: back to the idle ones, or closed (a fault, a timeout or
        a cancel leave the answer's framing unknown)."""
        self._busy.discard(conn)
        conn.waiter = None
        if failed:
            conn.close()
        if conn.closed:
            self._open.discard(conn)
        else:
            conn.used_at = time.monotonic()
            self._idle.append(conn)

    async def _send(
        self, loop: asyncio.AbstractEventLoop, conn: _Connection, target: str, deadline: float
    ) -> tuple[int, Body]:
        fut: asyncio.Future[tuple[int, Body]] = loop.create_future()
        self._write(loop, conn, target, deadline, fut)
        try:
            answer = await fut
        except BaseException:
            self._settle(conn, failed=True)
            raise
        self._settle(conn, failed=False)
        return answer


__all__ = ["MAX_HEAD", "AnswerCallback", "Body", "Http1Pool", "HttpTransportError"]
