"""The in-process reference server closes every connection it accepted when it stops, also
one whose client stopped reading a large answer (RELIABILITY.md, finding 16)."""

from __future__ import annotations

import socket
import time

import pytest

from peer.dev.sim.server import SimConfig, SimServer

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
