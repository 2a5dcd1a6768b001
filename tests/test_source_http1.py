"""The source's lean HTTP/1.1 client (peer/source/http1.py) against a scripted TCP server of
the test's own: framing (length, chunked, the connection's end, 1xx), keep-alive reuse, a
kept-alive connection the server closed, timeouts and broken answers."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable

import pytest

from peer.config.servers import parse_servers
from peer.source.consume import ConsumeClient
from peer.source.http1 import Body, Http1Pool, HttpTransportError
from peer.source.rest_config import RestSourceConfig
from peer.source.resume import ConsumeRequest, RequestKind

#: (request head, reader, writer) -> whether to keep the connection open for another request
Script = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


async def _serve(script: Script) -> tuple[asyncio.Server, list[bytes], list[int]]:
    """A server answering each request with ``script``; every request head, and a count of
    connections accepted."""
    heads: list[bytes] = []
    accepted = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
                if not await script(head, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, heads, accepted


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def _client_of(script: Script, max_concurrency: int) -> tuple[asyncio.Server, ConsumeClient]:
    """A scripted server and an opened :class:`ConsumeClient` of it."""
    server, _heads, _accepted = await _serve(script)
    config = RestSourceConfig(
        servers=parse_servers(f"127.0.0.1:{_port(server)}"), max_concurrency=max_concurrency
    )
    client = ConsumeClient(config, random.Random(1))
    await client.open()
    return server, client


def _run(
    script: Script,
    body: Callable[[Http1Pool, list[bytes], list[int]], Awaitable[None]],
    timeout: float = 2.0,
) -> None:
    async def main() -> None:
        server, heads, accepted = await _serve(script)
        pool = Http1Pool("127.0.0.1", _port(server), ssl_context=None, timeout=timeout)
        try:
            await body(pool, heads, accepted)
        finally:
            await pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def _run_failing(script: Script, target: str, match: str) -> None:
    """``GET target`` against ``script`` raises a transport error matching ``match``."""

    async def body(pool: Http1Pool, _heads: list[bytes], _accepted: list[int]) -> None:
        with pytest.raises(HttpTransportError, match=match):
            await pool.get(target)

    _run(script, body)


def _answer(status: str, body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def test_length_framed_answers_reuse_one_connection_and_send_the_target() -> None:
    async def script(head: bytes, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(_answer("200 OK", b'{"a":1}', "Content-Length: 7"))
        return True

    async def body(pool: Http1Pool, heads: list[bytes], accepted: list[int]) -> None:
        for i in range(3):
            assert await pool.get(f"/rest/consume?subject=/a/{i}") == (200, b'{"a":1}')
        assert accepted == [1]
        assert heads[2].startswith(b"GET /rest/consume?subject=/a/2 HTTP/1.1\r\nHost: 127.0.0.1:")

    _run(script, body)


def test_chunked_split_and_informational_answers_are_framed() -> None:
    async def script(_h: bytes, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        w.write(_answer("403 Forbidden", b"", "Transfer-Encoding: chunked"))
        for part in (b"5;ext=1\r\nhel", b"lo\r\n", b"6\r\n world\r\n", b"0\r\n", b"\r\n"):
            await w.drain()
            await asyncio.sleep(0.01)  # each part its own segment: framing across reads
            w.write(part)
        return True

    async def body(pool: Http1Pool, _heads: list[bytes], accepted: list[int]) -> None:
        assert await pool.get("/x") == (403, b"hello world")
        assert await pool.get("/y") == (403, b"hello world")
        assert accepted == [1]

    _run(script, body)


def test_a_large_length_framed_body_split_across_reads_is_received_whole() -> None:
    """Larger than one read: received in place, then the connection serves the next one."""
    big = random.Random(3).randbytes(1_000_003)

    async def script(head: bytes, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if b"/small" in head:
            w.write(_answer("200 OK", b"tail", "Content-Length: 4"))
            return True
        answer = _answer("200 OK", big, f"Content-Length: {len(big)}")
        cuts = [0, 40, 70_000, 70_001, 400_000, len(answer)]  # the head with a body's start
        for start, end in itertools.pairwise(cuts):
            w.write(answer[start:end])
            await w.drain()
            await asyncio.sleep(0.01)
        return True

    async def body(pool: Http1Pool, _heads: list[bytes], accepted: list[int]) -> None:
        for _ in range(2):
            status, got = await pool.get("/big")
            assert status == 200
            assert got == big
            assert await pool.get("/small") == (200, b"tail")
        assert accepted == [1]

    _run(script, body)


def test_a_large_body_cut_short_by_the_server_is_a_transport_error() -> None:
    big = b"x" * 300_000

    async def script(head: bytes, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(_answer("200 OK", big[:200_000], f"Content-Length: {len(big)}"))
        await w.drain()
        return False

    _run_failing(script, "/cut", "before the answer was complete")


def test_connection_close_and_unframed_answers_end_with_the_connection() -> None:
    async def script(head: bytes, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if b"/close" in head:
            w.write(_answer("200 OK", b"ab", "Content-Length: 2", "Connection: close"))
        else:
            w.write(b"HTTP/1.0 500 Oops\r\n\r\nuntil the end")
        return False

    async def body(pool: Http1Pool, _heads: list[bytes], accepted: list[int]) -> None:
        assert await pool.get("/close") == (200, b"ab")
        assert await pool.get("/eof") == (500, b"until the end")
        assert await pool.get("/close") == (200, b"ab")
        assert accepted == [3]  # none of them was reused

    _run(script, body)


def test_a_kept_alive_connection_the_server_closed_is_retried_once_on_a_new_one() -> None:
    async def script(head: bytes, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(_answer("200 OK", b"ok", "Content-Length: 2"))
        await w.drain()
        return False  # closes after the answer, though it promised keep-alive

    async def body(pool: Http1Pool, heads: list[bytes], accepted: list[int]) -> None:
        assert await pool.get("/1") == (200, b"ok")
        await asyncio.sleep(0.05)  # the close reached us: the idle connection is dropped
        assert await pool.get("/2") == (200, b"ok")
        assert accepted == [2]

    _run(script, body)


def test_reused_connection_closed_unseen_is_sent_again_but_a_fresh_one_fails() -> None:
    answered: list[bytes] = []

    async def script(head: bytes, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if b"/drop" in head and len(answered) == 1:
            answered.append(head)
            return False  # closes without a byte of an answer
        answered.append(head)
        w.write(_answer("200 OK", b"ok", "Content-Length: 2"))
        return True

    async def body(pool: Http1Pool, heads: list[bytes], accepted: list[int]) -> None:
        assert await pool.get("/first") == (200, b"ok")
        assert await pool.get("/drop") == (200, b"ok")  # once more on a new connection
        assert accepted == [2]
        assert [h.split(b" ")[1] for h in heads] == [b"/first", b"/drop", b"/drop"]

    _run(script, body)

    async def silent(_h: bytes, _r: asyncio.StreamReader, _w: asyncio.StreamWriter) -> bool:
        return False

    _run_failing(silent, "/x", "closed before the answer")


def test_timeout_bad_answers_and_refused_connections_raise() -> None:
    async def script(head: bytes, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if b"/slow" in head:
            await asyncio.sleep(1.0)
        elif b"/garbage" in head:
            w.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        elif b"/length" in head:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
        elif b"/huge" in head:
            w.write(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 70_000)
        return True

    async def body(pool: Http1Pool, _heads: list[bytes], _accepted: list[int]) -> None:
        with pytest.raises(TimeoutError):
            await pool.get("/slow")
        with pytest.raises(HttpTransportError, match="status line"):
            await pool.get("/garbage")
        with pytest.raises(HttpTransportError, match="Content-Length"):
            await pool.get("/length")
        with pytest.raises(HttpTransportError, match="head longer"):
            await pool.get("/huge")

    _run(script, body, timeout=0.3)

    async def refused() -> None:
        server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
        port = _port(server)
        server.close()
        await server.wait_closed()
        pool = Http1Pool("127.0.0.1", port, ssl_context=None, timeout=2.0)
        with pytest.raises(ConnectionRefusedError):
            await pool.get("/x")

    asyncio.run(refused())


def test_consume_client_keeps_at_most_max_concurrency_in_flight_and_cancels_cleanly() -> None:
    now = [0]
    most = [0]

    async def script(_h: bytes, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        now[0] += 1
        most[0] = max(most[0], now[0])
        await asyncio.sleep(0.05)
        now[0] -= 1
        w.write(_answer("200 OK", b"{}", "Content-Length: 2"))
        return True

    async def main() -> None:
        server, client = await _client_of(script, max_concurrency=3)
        snapshot = ConsumeRequest(RequestKind.SNAPSHOT)
        try:
            answers = await asyncio.gather(*(client.fetch(f"/s/{i}", snapshot) for i in range(10)))
            assert answers == [b"{}"] * 10
            assert most[0] == 3
            # queued fetches cancelled: their places are not lost
            tasks = [asyncio.create_task(client.fetch(f"/c/{i}", snapshot)) for i in range(8)]
            await asyncio.sleep(0.01)
            for task in tasks[3:]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            most[0] = 0
            answers = await asyncio.gather(*(client.fetch(f"/t/{i}", snapshot) for i in range(6)))
            assert answers == [b"{}"] * 6
            assert most[0] == 3
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_send_hands_answers_faults_and_timeouts_to_a_callback() -> None:
    async def script(head: bytes, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if b"/slow" in head:
            await asyncio.sleep(1.0)
        elif b"/drop" in head:
            return False
        w.write(_answer("200 OK", b"ok", "Content-Length: 2"))
        return True

    async def body(pool: Http1Pool, heads: list[bytes], accepted: list[int]) -> None:
        loop = asyncio.get_running_loop()
        got: list[tuple[int, bytes, type[BaseException] | None]] = []
        ended = asyncio.Event()

        def on_answer(status: int, answer: Body, exc: BaseException | None) -> None:
            got.append((status, bytes(answer), None if exc is None else type(exc)))
            ended.set()

        async def sent(target: str) -> tuple[int, bytes, type[BaseException] | None]:
            ended.clear()
            assert pool.send(target, on_answer)
            await ended.wait()
            return got[-1]

        assert not pool.send("/x", on_answer)  # no idle connection yet: nothing sent
        assert await pool.get("/first") == (200, b"ok")
        assert await sent("/a") == (200, b"ok", None)
        assert await sent("/b") == (200, b"ok", None)  # the same connection, kept alive
        assert accepted == [1]
        assert await sent("/slow") == (0, b"", TimeoutError)
        assert not pool.send("/x", on_answer)  # the timed-out connection was closed
        assert await pool.get("/again") == (200, b"ok")
        assert await sent("/drop") == (0, b"", HttpTransportError)
        assert await pool.get("/after") == (200, b"ok")  # a new connection
        assert [h.split(b" ")[1] for h in heads][-2:] == [b"/drop", b"/after"]
        assert loop.is_running()

    _run(script, body, timeout=0.3)


def test_consume_client_sends_under_its_bound_and_counts_answers() -> None:
    async def script(head: bytes, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if b"/busy" in head:
            w.write(_answer("503 Busy", b"{}", "Content-Length: 2"))
        else:
            w.write(_answer("200 OK", b"{}", "Content-Length: 2"))
        return True

    async def main() -> None:
        server, client = await _client_of(script, max_concurrency=1)
        snapshot = ConsumeRequest(RequestKind.SNAPSHOT)
        done: list[Body | None] = []
        handed: list[bool] = []
        both = asyncio.Event()

        def on_done(answer: Body | None) -> None:
            done.append(answer)
            if len(done) == 2:
                both.set()

        try:
            assert await client.fetch("/s/0", snapshot) == b"{}"  # a connection to reuse
            assert client.take_slot()
            assert not client.take_slot()  # the bound is 1
            client.when_slot(lambda: handed.append(client.send("/busy", on_done)))
            assert client.send("/ok", on_done)
            async with asyncio.timeout(5):
                await both.wait()
            assert handed == [True]  # the place went on to the waiting callback
            assert done == [b"{}", None]  # a 503 is no answer to keep
            assert (client.requests, client.request_errors) == (3, 1)
            assert client.take_slot()  # every place given back
            client.release_slot()
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
