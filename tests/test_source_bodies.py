"""Large answer bodies received into reused buffers (peer/source/bodies.py, issue #14).

A lent body is exactly the answer, is never overwritten while it is held, and its memory
takes a later answer only once handed back; through the whole source, against the reference
server, a backlog of large answers arrives complete, in order, once, with buffers reused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from peer.config.servers import parse_servers
from peer.dev.sim.server import SimServer
from peer.model import Message, Position
from peer.source.base import Event
from peer.source.bodies import LEND_MIN, BodyBuffers
from peer.source.http1 import Http1Pool
from peer.source.rest import RestSource, RestSourceConfig
from peer.testing import wait_until


def test_a_lent_body_is_exactly_n_bytes_and_its_memory_comes_back() -> None:
    bodies = BodyBuffers()
    first = bodies.lend(LEND_MIN + 1)
    assert len(first) == LEND_MIN + 1
    kept = first.obj
    bodies.give_back(first)
    with pytest.raises(ValueError, match="released"):
        bytes(first)  # a use after the hand-back fails instead of reading another answer
    second = bodies.lend(LEND_MIN + 10)
    assert second.obj is kept
    assert (bodies.lent, bodies.made) == (2, 1)
    bodies.give_back(second)
    bodies.give_back(second)  # twice: ignored, not kept twice
    third, fourth = bodies.lend(LEND_MIN), bodies.lend(LEND_MIN)
    assert third.obj is kept
    assert fourth.obj is not kept


def test_only_lent_bodies_are_kept_and_within_bounds() -> None:
    bodies = BodyBuffers(max_count=2, max_bytes=10 * 1024 * 1024)
    bodies.give_back(b"x" * LEND_MIN)  # not lent: nothing to keep
    bodies.give_back(memoryview(bytearray(100)))  # not lent
    own = bytearray(LEND_MIN)
    bodies.give_back(memoryview(own))  # a caller's own buffer, large enough: never reused
    views = [bodies.lend(LEND_MIN) for _ in range(3)]
    buffers = [v.obj for v in views]
    for view in views:
        bodies.give_back(view)
    again = [bodies.lend(LEND_MIN) for _ in range(3)]
    reused = sum(any(a.obj is b for b in buffers) for a in again)
    assert reused == 2  # the third one was not kept (max_count)
    assert all(a.obj is not own for a in again)
    assert bodies.made == 4


def test_a_body_held_is_not_overwritten_by_the_next_answer() -> None:
    # longer than the client reads at once (256 KB): the body cannot be in with its head,
    # so it is received in place, into a lent buffer, however the bytes arrive
    size = 5 * LEND_MIN
    payloads = [bytes([65 + i]) * size for i in range(4)]
    served = iter(payloads)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
                writer.write(head + next(served))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, StopIteration):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = int(server.sockets[0].getsockname()[1])
        bodies = BodyBuffers()
        pool = Http1Pool("127.0.0.1", port, ssl_context=None, timeout=5.0, bodies=bodies)
        try:
            _, held = await pool.get("/a")
            _, second = await pool.get("/b")  # ``held`` not handed back: new memory
            assert isinstance(held, memoryview)
            assert isinstance(second, memoryview)
            assert held == payloads[0]
            assert second == payloads[1]
            reused = second.obj
            bodies.give_back(second)
            _, third = await pool.get("/c")
            assert isinstance(third, memoryview)
            assert third.obj is reused
            assert third == payloads[2]
            assert held == payloads[0]  # still intact
            assert (bodies.lent, bodies.made) == (3, 2)
        finally:
            await pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


@pytest.mark.sim
def test_rounds_of_large_answers_arrive_whole_in_order_once(
    sim_factory: Callable[..., SimServer],
) -> None:
    subject, rounds, per_round, size = "/bodies/a", 5, 500, 900
    sim = sim_factory(cache_size=rounds * per_round)
    netloc = sim.url.split("://", 1)[1]
    source = RestSource(RestSourceConfig(servers=parse_servers([netloc])))
    source.start()
    events: list[Event] = []
    try:
        first = sim.publish(subject, "0".zfill(8).ljust(size, "x"))
        source.subscribe(subject, after=None)

        def snapshot() -> bool:
            events.extend(source.poll(1, 0.02))
            return bool(events)

        wait_until(snapshot, 30, "m0")
        for r in range(rounds):  # each round's backlog is one answer of about 500 KB
            want = 1 + (r + 1) * per_round
            # paused while the round is published: fetched as it grew, a slow machine made
            # it many small answers, none large enough to be lent
            source.pause()
            for i in range(want - per_round, want):
                sim.publish(subject, str(i).zfill(8).ljust(size, "x"))
            source.resume()

            def drained(want: int = want) -> bool:
                events.extend(source.poll(1000, 0.02))
                return len(events) >= want

            wait_until(drained, 30, f"{want} messages")
        bodies = source._client._bodies
        lent, made = bodies.lent, bodies.made
    finally:
        source.close()
    messages = [e for e in events if isinstance(e, Message)]
    assert [m.position for m in messages] == [
        Position(first[0], first[1] + i) for i in range(1 + rounds * per_round)
    ]
    assert [int(m.content[:8]) for m in messages] == list(range(1 + rounds * per_round))
    assert all(len(m.content) == size for m in messages)
    assert lent >= rounds - 1, "the answers were not large enough to be lent"
    assert made < lent, "no buffer was reused"
