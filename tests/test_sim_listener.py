"""The in-process reference server closes every connection it accepted when it stops, also
one whose client stopped reading a large answer (RELIABILITY.md, finding 16) and one that
arrived as it stopped (finding 18)."""

from __future__ import annotations

import gc
import logging
import socket
import threading
import time

import pytest

from peer.dev.sim.server import SimConfig, SimServer
from peer.testing.wait import wait_until

pytestmark = [pytest.mark.sim]


def test_a_stopped_server_closes_a_connection_whose_client_stopped_reading() -> None:
    sim = SimServer(SimConfig(port=0, cache_size=200, max_message_size=65536))
    sim.start()
    listener = sim._listener
    assert listener is not None
    client: socket.socket | None = None
    try:
        for _ in range(200):  # about 12 MB of answer: far more than the socket buffers hold
            sim.publish("/big/a", "x" * 60_000)
        host, port = sim.url.split("://", 1)[1].rsplit(":", 1)
        client = socket.create_connection((host, int(port)))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        request = "GET /rest/consume?subject=/big/a&history=1000 HTTP/1.1\r\nHost: x\r\n\r\n"
        client.sendall(request.encode())
        first = client.recv(1024)  # the answer started, then this client stops reading
        assert first.startswith(b"HTTP/1.1 200")
        end = time.monotonic() + 10
        while not listener.still_open():
            assert time.monotonic() < end, "the server never accepted the connection"
            time.sleep(0.01)
        sim.stop()
        # its socket was closed before the stop returned, not left to the collector
        assert not listener.still_open()
    finally:
        sim.stop()
        if client is not None:
            client.close()


def test_connections_arriving_while_the_server_stops_are_all_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio (3.11) builds an accepted connection's transport a loop turn later; for a server
    closed meanwhile it failed halfway and left the socket open, to be collected in some later
    test as an "unclosed transport" (24-128 connections left open a stop, before the fix)."""
    caplog.set_level(logging.WARNING, logger="peer.dev.sim")
    for _ in range(5):
        sim = SimServer(SimConfig(port=0))
        sim.start()
        listener, port = sim._listener, sim.port
        assert listener is not None
        made, done = [0], threading.Event()

        def connect(to: int = port, made: list[int] = made, done: threading.Event = done) -> None:
            clients: list[socket.socket] = []
            while not done.is_set():
                try:
                    clients.append(socket.create_connection(("127.0.0.1", to), timeout=1))
                    made[0] += 1
                except OSError:
                    pass  # refused once the server has stopped listening
            for client in clients:
                client.close()

        threads = [threading.Thread(target=connect) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: made[0] >= 20, 10, "connections arriving")  # noqa: B023
            sim.stop()
        finally:
            done.set()
            for thread in threads:
                thread.join(10)
            sim.stop()
        assert not listener.still_open()
    assert not [r.getMessage() for r in caplog.records if "still open" in r.getMessage()]
    # a half-built transport is found here, as an unraisable warning that fails this test
    gc.collect()
