"""A deployment as tests and benchmarks make one: a group, its control topic, one peer config
file, and the ``mdpeer run`` processes started from it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from peer.control.reader import DEFAULT_TIMEOUT
from peer.control.writes import admin_producer, write_routes
from peer.routes.model import Route
from peer.testing.peer import PeerProcess


@dataclass
class Deployment:
    """A control topic with routes, target topics, and a way to start peers on it."""

    bootstrap: str
    group: str
    control: str
    shards: int
    config: Path
    peers: list[PeerProcess] = field(default_factory=list)
    #: librdkafka properties of an admin client (a secured cluster's login); bootstrap only
    #: when empty
    admin_conf: dict[str, Any] = field(default_factory=dict)

    def start_peer(
        self, peer_id: str | None = None, env: dict[str, str] | None = None
    ) -> PeerProcess:
        """A peer on this deployment; its state is its ``/readyz`` (``peer.owned()``, ...)."""
        peer = PeerProcess(self.config, peer_id or f"p-{uuid.uuid4().hex[:6]}", env=env)
        self.peers.append(peer)
        return peer

    def write_routes(self, routes: Iterable[Route], timeout: float = DEFAULT_TIMEOUT) -> None:
        """``routes`` in one admin transaction."""
        conf = self.admin_conf or {"bootstrap.servers": self.bootstrap}
        producer = admin_producer(conf, self.group)
        try:
            write_routes(producer, self.control, self.shards, list(routes), timeout=timeout)
        finally:
            producer.flush(5)

    def close(self, *, failed: bool = False) -> None:
        """Kill its peers; ``failed``: their logs are kept (paths on stderr)."""
        for peer in self.peers:
            peer.close(failed=failed)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(failed=exc_type is not None)


__all__ = ["Deployment"]
