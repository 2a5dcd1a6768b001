"""A listening socket that keeps the connections it accepted, so a stopping in-process server
can make sure each one is closed before its loop ends.

aiohttp's cleanup closes a connection through its transport, and a transport with unsent
bytes (an answer its client stopped reading) closes only once they are written. A loop
stopped meanwhile never closes that socket: it is collected later, in whatever test runs
then, as an "unclosed transport" warning, which fails that test (RELIABILITY.md). A socket
shut down under its transport ends the wait: the transport's next write fails, its read
sees the end, and it closes itself, on its own loop.

A connection accepted just before the server closes is lost another way: asyncio (3.11)
builds its transport in a task of the next loop turn, and building it for a closed server
fails halfway, leaving the socket open with nothing to close it. A stopping server therefore
refuses new connections first, and closes its site only once those already accepted have
their transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

#: how long a stopping server waits for its connections to close after shutting them down
RELEASE_DEADLINE_S = 2.0


class Listener(socket.socket):
    """A listening TCP socket bound to ``(host, port)`` that keeps what it accepted."""

    def __init__(self, host: str, port: int) -> None:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        super().__init__(family, socket.SOCK_STREAM)
        self.accepted: list[socket.socket] = []
        self.refusing = False
        try:
            # a restarted server listens on its old port again, as aiohttp's own sites do
            self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.bind(address)
        except OSError:
            self.close()
            raise

    def accept(self) -> tuple[socket.socket, Any]:
        conn, address = super().accept()
        if self.refusing:
            conn.close()
            # what asyncio's accept loop takes for "nothing more to accept now"
            raise ConnectionAbortedError(f"{address} refused: the server is stopping")
        # closed ones are let go here: a long-lived server accepts without bound
        self.accepted = [*self.still_open(), conn]
        return conn, address

    def still_open(self) -> list[socket.socket]:
        return [conn for conn in self.accepted if conn.fileno() != -1]

    async def refuse(self) -> None:
        """(on the server's loop, before its site closes) Refuse every connection from now on,
        and let the loop build the transports of those already accepted."""
        self.refusing = True
        # a transport is built in the first step of a task the accept created (at most one
        # turn ago); two turns also cover one created earlier in this turn
        for _ in range(2):
            await asyncio.sleep(0)

    async def release(self, deadline: float = RELEASE_DEADLINE_S) -> list[socket.socket]:
        """(on the server's loop, after its cleanup) Shut down every accepted connection
        still open and wait, up to ``deadline`` seconds, until their transports have closed
        them; returns those still open then."""
        for conn in self.still_open():
            with contextlib.suppress(OSError):  # the peer may have gone already
                conn.shutdown(socket.SHUT_RDWR)
        left = await self.closed_within(deadline / 2)
        if left:
            # A transport waiting for nothing (reading paused, nothing to write) sees no
            # event from a shutdown. The selector loop's own table of its transports
            # (private, as stable as asyncio's selector loop) finds it to abort.
            transports = getattr(asyncio.get_running_loop(), "_transports", {})
            for conn in left:
                transport = transports.get(conn.fileno())
                if transport is not None:
                    transport.abort()
            left = await self.closed_within(deadline / 2)
        return left

    async def closed_within(self, seconds: float) -> list[socket.socket]:
        """(on the server's loop) Wait up to ``seconds`` until every accepted connection is
        closed; returns those still open then."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        # a socket's close has no event to wait on: look again each 10 ms, up to the deadline
        while (left := self.still_open()) and loop.time() < end:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return left
