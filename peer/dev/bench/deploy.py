"""A benchmark deployment: control topic, target topic, a peer config file, routes, peers."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from peer.control.admin import admin_producer, ensure_control_topic, write_routes
from peer.model import StartPolicy
from peer.routes.model import Route
from peer.testing import PeerProcess, create_topics

#: routes start from the oldest cached message so a pre-filled backlog is bridged in full
HISTORY_START = "history:1000000"


def toml_value(value: object) -> str:
    """A TOML scalar for a bool, int, float or string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def peer_config_text(
    bootstrap: str, group: str, server: str, settings: Mapping[str, object]
) -> str:
    """The TOML of a peer config: top-level settings, then ``[source] servers``."""
    lines = [f"{k} = {toml_value(v)}" for k, v in {"bootstrap": bootstrap, "group": group}.items()]
    lines += [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    lines += ["[source]", f"servers = {toml_value(server)}"]
    return "\n".join(lines) + "\n"


def create_topic(admin: AdminClient, topic: str, partitions: int) -> None:
    """One topic of replication 1 (the benchmarks' broker has one node), ready to take data."""
    create_topics(admin, [topic], partitions, replication_factor=1)


@dataclass
class Deployment:
    """A group: control topic + target topic, peers started from one config."""

    bootstrap: str
    group: str
    shards: int
    topic: str
    config: Path
    peers: list[PeerProcess] = field(default_factory=list)

    @property
    def control_topic(self) -> str:
        return f"{self.group}.control"

    def start_peer(self, peer_id: str) -> PeerProcess:
        peer = PeerProcess(self.config, peer_id)  # what it owns: its /readyz
        self.peers.append(peer)
        return peer

    def write_routes(self, subjects: list[str], start: str = HISTORY_START) -> None:
        """Routes of ``subjects`` to the target topic, in one transaction."""
        producer = admin_producer({"bootstrap.servers": self.bootstrap}, self.group)
        try:
            policy = StartPolicy.parse(start)
            routes = [Route(s, self.topic, start=policy) for s in subjects]
            write_routes(producer, self.control_topic, self.shards, routes, timeout=120)
        finally:
            producer.flush(5)

    def close(self, *, failed: bool = False) -> None:
        for peer in self.peers:
            peer.close(failed=failed)


@contextlib.contextmanager
def deployment(
    bootstrap: str,
    admin: AdminClient,
    workdir: Path,
    server: str,
    subjects: list[str] | None,
    *,
    shards: int,
    partitions: int,
    settings: Mapping[str, Any],
) -> Iterator[Deployment]:
    """A fresh group; routes of ``subjects`` written up front unless None (write them later).

    Every peer started through it is killed on exit.
    """
    group = f"bench-{uuid.uuid4().hex[:8]}"
    topic = f"{group}.data"
    create_topic(admin, topic, partitions)
    ensure_control_topic(admin, f"{group}.control", shards, None, bootstrap=bootstrap)
    config = workdir / f"{group}.toml"
    config.write_text(peer_config_text(bootstrap, group, server, settings))
    dep = Deployment(bootstrap, group, shards, topic, config)
    try:
        if subjects is not None:
            dep.write_routes(subjects)
        yield dep
    except BaseException:
        dep.close(failed=True)  # their logs are kept, and their paths printed
        raise
    finally:
        dep.close()
