"""A SIGTERMed peer whose brokers stopped answering leaves within its budget (finding 11).

A peer committing to brokers that do not answer can sit in librdkafka's transactional calls
for tens of seconds, longer than an orchestrator waits before it kills the process. Once
stopping, the peer gives a blocked call ``on_revoke_budget_ms``, then leaves with exit 2 and
nothing more of its own: the next owner redoes what was not committed (RELIABILITY.md).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from peer.dev.localkafka import Cluster
from peer.dev.sim.server import SimServer
from peer.model import StartPolicy
from peer.routes.model import Route
from peer.testing import create_topics, wait_until
from tests.fixtures.kafka import own_cluster, skip_if_external
from tests.peers import deployment, read_committed

pytestmark = [pytest.mark.kafka, pytest.mark.sim, pytest.mark.slow]


@pytest.fixture
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A broker of this test's own, so pausing it disturbs no other test."""
    skip_if_external("pauses a broker started here")
    with own_cluster(tmp_path_factory, "kafka-paused") as cluster:
        try:
            yield cluster
        finally:
            for pid in cluster.running_pids().values():
                os.kill(pid, signal.SIGCONT)


def test_a_stopping_peer_leaves_within_its_budget_when_kafka_stops_answering(
    own_kafka: Cluster, tmp_path: Path, sim_factory: Callable[..., SimServer]
) -> None:
    sim = sim_factory(cache_size=10_000)
    admin = AdminClient({"bootstrap.servers": own_kafka.bootstrap})
    create_topics(admin, ["t.paused"])
    route = Route("/pause/a", "t.paused", start=StartPolicy.parse("history:1000"))
    budget_ms = 3000
    with deployment(
        own_kafka.bootstrap, admin, tmp_path, sim.url, [route], on_revoke_budget_ms=budget_ms
    ) as dep:
        peer = dep.start_peer("paused")
        sim.publish("/pause/a", "first")
        wait_until(lambda: len(read_committed(dep.bootstrap, ["t.paused"])) == 1, 60, "flowing")
        broker = next(iter(own_kafka.running_pids().values()))
        os.kill(broker, signal.SIGSTOP)  # the broker is there, and answers nothing
        try:
            for i in range(5):
                sim.publish("/pause/a", f"more{i}")
            # fetched and written: their commit is what waits on the paused broker
            wait_until(
                lambda: peer.metric('mdpeer_messages_in_total{topic="t.paused"}') >= 6,
                30,
                "the new messages fetched",
            )
            peer.signal(signal.SIGTERM)
            # budget + the loop's turn + closing: far below the 20-30 s orchestrators wait
            code = peer.wait(budget_ms / 1000 + 12)
        finally:
            os.kill(broker, signal.SIGCONT)
        # its shutdown commit needs the paused broker: abandoned at the budget, exit 2
        assert code == 2, peer.logs()[-3000:]
        assert "did not return within the stop budget" in peer.logs()
