"""A benchmark deployment: control topic, target topic, a peer config file, routes, peers."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.admin import AdminClient

from peer.control.admin import ensure_control_topic
from peer.dev.bench.session import Broker
from peer.model import StartPolicy
from peer.routes.model import Route
from peer.testing import SimProcess, create_topics
from peer.testing.deployment import Deployment

#: routes start from the oldest cached message so a pre-filled backlog is bridged in full
HISTORY_START = "history:1000000"
#: the histogram a peer keeps of its shard rebuilds (assignment to working on the shards)
REBUILD_METRIC = "mdpeer_shard_rebuild_seconds"


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


@contextlib.contextmanager
def bench_server(*args: str) -> Iterator[SimProcess]:
    """A reference server (``mdpeer sim serve`` with ``args``) for one measurement; its
    generator is stopped and it is closed on every exit path."""
    sim = SimProcess(*args)
    try:
        yield sim
    finally:
        sim.stop_generator()
        sim.close()


def subscribed(sim: SimProcess) -> int:
    """Subscriptions on the server's notification channel (doorbell mode's clients)."""
    notify = sim.state("/none")["notify"]
    return int(notify.get("subscriptions", 0))


@dataclass
class BenchDeployment(Deployment):
    """A group whose routes all lead to one target topic."""

    topic: str = field(kw_only=True)

    def route_subjects(self, subjects: list[str], start: str = HISTORY_START) -> None:
        """Routes of ``subjects`` to the target topic, in one transaction."""
        policy = StartPolicy.parse(start)
        self.write_routes([Route(s, self.topic, start=policy) for s in subjects], timeout=120)


@contextlib.contextmanager
def deployment(
    broker: Broker,
    server: str,
    subjects: list[str] | None,
    *,
    shards: int,
    partitions: int,
    settings: Mapping[str, Any],
) -> Iterator[BenchDeployment]:
    """A fresh group; routes of ``subjects`` written up front unless None (write them later).

    Every peer started through it is killed on exit.
    """
    group = f"bench-{uuid.uuid4().hex[:8]}"
    topic = f"{group}.data"
    control = f"{group}.control"
    admin = broker.admin
    create_topic(admin, topic, partitions)
    ensure_control_topic(admin, control, shards, None, bootstrap=broker.bootstrap)
    config = broker.work / f"{group}.toml"
    config.write_text(peer_config_text(broker.bootstrap, group, server, settings))
    dep = BenchDeployment(broker.bootstrap, group, control, shards, config, topic=topic)
    with dep:  # a failure keeps the peers' logs, and prints their paths
        if subjects is not None:
            dep.route_subjects(subjects)
        yield dep
