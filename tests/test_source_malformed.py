"""Malformed answers and unexpected statuses, served by a tiny scripted HTTP server of our own.

This is not a stand-in for MigratoryData (that is peer.dev.sim); it only produces the broken input
a well-behaved server never sends: bad JSON, wrong types, a wrong subject, odd statuses.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from peer.config.servers import parse_servers
from peer.dev.sim.listener import Listener
from peer.errors import FaultReason, SourceError
from peer.model import Message, Position
from peer.source.base import Event, SubjectFault
from peer.source.rest import RestSource, RestSourceConfig

SUBJECT = "/bad/a"
Reply = tuple[int, bytes]


def good(first: int, last: int, subject: str = SUBJECT) -> bytes:
    messages = [
        {
            "message_type": "RECOVERED",
            "content": f"c{seq}",
            "closure": None,
            "retained": True,
            "compressed": False,
            "epoch": 1,
            "seq": seq,
        }
        for seq in range(first, last + 1)
    ]
    return json.dumps({"subject": subject, "messages": messages}).encode()


class ScriptedServer:
    """Answers consume from ``script`` (one reply per request) and then from ``fallback``."""

    STOP_DEADLINE_S = 10.0

    def __init__(
        self,
        script: list[Reply],
        fallback: Callable[[int], Reply],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.script = list(script)
        self.fallback = fallback
        self.requests: list[dict[str, str]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        # keeps what it accepted: the server's loop closes a TLS connection asynchronously
        # (close_notify, or an EOF after a refused handshake), and stop waits for each one
        self._listener = Listener("127.0.0.1", 0)
        self.url = ""

    async def _consume(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        seq = int(request.query.get("seq", "0"))
        status, body = self.script.pop(0) if self.script else self.fallback(seq)
        return web.Response(status=status, body=body, content_type="application/json")

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_get("/rest/consume", self._consume)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.SockSite(self._runner, self._listener, ssl_context=self.ssl_context)
        await site.start()
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    async def _stop(self) -> list[socket.socket]:
        """Close the site, then let the loop finish closing every connection it accepted
        (the clients have gone by now, so each one has an EOF or a close_notify to read)."""
        assert self._runner is not None
        await self._listener.refuse()
        await self._runner.cleanup()
        return await self._listener.closed_within(self.STOP_DEADLINE_S)

    def start(self) -> None:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stall(self, seconds: float) -> None:
        """Hold the server's loop for ``seconds``: nothing it owes is sent meanwhile."""
        self._loop.call_soon_threadsafe(time.sleep, seconds)

    def stop(self) -> None:
        left: list[socket.socket] = []
        if self._runner is not None:
            done = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
            left = done.result(self.STOP_DEADLINE_S + 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._listener.close()
        assert not left, f"connections still open {self.STOP_DEADLINE_S:g} s after stop: {left}"


@pytest.fixture
def scripted() -> Iterator[Callable[..., tuple[ScriptedServer, RestSource]]]:
    made: list[tuple[ScriptedServer, RestSource]] = []

    def make(
        script: list[Reply], fallback: Callable[[int], Reply], **config: Any
    ) -> tuple[ScriptedServer, RestSource]:
        server = ScriptedServer(script, fallback)
        server.start()
        settings: dict[str, Any] = {
            "poll_idle_min": 0.01,
            "poll_idle_max": 0.05,
            "retry_initial": 0.01,
            "retry_max": 0.05,
        }
        settings.update(config)
        source = RestSource(RestSourceConfig(servers=parse_servers(server.url), **settings))
        source.start()
        made.append((server, source))
        return server, source

    yield make
    for server, source in made:
        source.close()
        server.stop()


def up_to(last: int) -> Callable[[int], Reply]:
    """A correct inclusive server holding seqs 1..last."""
    return lambda seq: (200, good(max(seq, 1), last))


def first_fault(source: RestSource, deadline_s: float = 15) -> SubjectFault:
    """The first SubjectFault the source yields (its subject's fetching has stopped)."""
    end = time.monotonic() + deadline_s
    while True:
        assert time.monotonic() < end, "no SubjectFault"
        for event in source.poll(100, 0.05):
            if isinstance(event, SubjectFault):
                return event


def drain_messages(source: RestSource, n: int, deadline_s: float = 15) -> list[Message]:
    events: list[Event] = []
    end = time.monotonic() + deadline_s
    while sum(isinstance(e, Message) for e in events) < n:
        assert time.monotonic() < end, f"only {events}"
        events += source.poll(100, 0.05)
    return [e for e in events if isinstance(e, Message)]


@pytest.mark.parametrize(
    "bad",
    [
        b"{not json",
        b'{"subject": "/bad/a", "messages": "nope"}',
        b'["a list"]',
        good(1, 3, subject="/other/subject"),
        # seq 2 has a string seq: the whole answer is refused, seq 1 included
        good(1, 1)[:-2]
        + b', {"message_type": "RECOVERED", "content": "x", "epoch": 1, "seq": "2"}]}',
        # a bool is no sequence number
        json.dumps(
            {
                "subject": SUBJECT,
                "messages": [{"message_type": "X", "content": "y", "epoch": 1, "seq": True}],
            }
        ).encode(),
        json.dumps(
            {"subject": SUBJECT, "messages": [{"content": "no type", "epoch": 1, "seq": 1}]}
        ).encode(),
    ],
    ids=[
        "not-json",
        "messages-not-list",
        "not-object",
        "wrong-subject",
        "bad-seq-type",
        "bool-seq",
        "missing-field",
    ],
)
def test_malformed_answers_are_counted_and_retried_never_partially_delivered(
    bad: bytes, scripted: Callable[..., tuple[ScriptedServer, RestSource]]
) -> None:
    server, source = scripted([(200, bad), (200, bad)], up_to(3))
    source.subscribe(SUBJECT, after=Position(1, 0))
    got = drain_messages(source, 3)
    assert [(m.seq, m.content) for m in got] == [(1, b"c1"), (2, b"c2"), (3, b"c3")]
    assert source.stats().malformed == 2
    assert source.poll(100, 0.2) == []
    # the bad answers did not move the position: every request asked from 1:0 until good
    assert [r["seq"] for r in server.requests[:3]] == ["0", "0", "0"]


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_statuses_are_retried(
    status: int, scripted: Callable[..., tuple[ScriptedServer, RestSource]]
) -> None:
    _, source = scripted([(status, b'{"error": "busy"}')] * 3, up_to(2))
    source.subscribe(SUBJECT, after=Position(1, 0))
    assert [m.seq for m in drain_messages(source, 2)] == [1, 2]
    assert source.stats().request_errors == 3


def test_unexpected_client_error_status_stops_only_the_subject(
    scripted: Callable[..., tuple[ScriptedServer, RestSource]],
) -> None:
    _, source = scripted([(404, b"<html>not found</html>")], up_to(2))
    source.subscribe(SUBJECT, after=Position(1, 0))
    fault = first_fault(source)
    assert fault.subject == SUBJECT
    assert isinstance(fault.error, SourceError)
    assert "HTTP 404" in str(fault.error)
    assert SUBJECT in str(fault.error)
    assert fault.error.hint is not None
    assert fault.error.fault is FaultReason.SOURCE_REFUSED
    # resubscribing clears the failure and starts the subject again
    source.subscribe(SUBJECT, after=Position(1, 0))
    assert [m.seq for m in drain_messages(source, 2)] == [1, 2]
