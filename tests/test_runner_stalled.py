"""A new owner and a stalled owner's open transaction (regression: duplicates under load).

A paused owner (SIGSTOP, a GC stall, a frozen VM) may hold a transaction whose offsets were
already sent: the coordinator still lets it commit until it aborts the transaction at
``transaction.timeout.ms`` (checked every few seconds). The new owner used to give that
transaction a few seconds ("settle") and then start from the checkpoints before it; when the
broker was slow to abort it and the stalled owner woke up and committed, the same messages
were written twice (seen in CI as 16 duplicates of /zombie/s1). An owner's rebuild now waits
for the transaction to end, however it ends.

The stalled owner here is a transactional producer that writes exactly what a peer would (the
data records with their headers and the checkpoint that covers them) and commits late, so
the timing is the test's, not the machine's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from peer.control import encode_checkpoint
from peer.routes import Route
from peer.shards import shard_of
from peer.sim.server import SimServer
from peer.source.base import Message, StartPolicy
from peer.writer.records import java_partition, message_headers, partition_basis
from tests.fixtures.kafka import TopicFactory
from tests.peers import check_exactly_once, deployment, read_committed, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.sim, pytest.mark.slow]

#: longer than the old settle (transaction timeout 10 s + 2 s) plus a group join
STALL_S = 16.0


def test_a_new_owner_waits_for_a_stalled_owners_transaction_and_writes_nothing_twice(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    unique_topic: TopicFactory,
    tmp_path: Path,
    sim_factory: Callable[..., SimServer],
) -> None:
    sim = sim_factory(cache_size=10_000)
    topic = unique_topic(2)
    subject = "/stalled/s1"
    route = Route(subject, topic, start=StartPolicy.parse("history:1000"))
    with deployment(
        kafka_bootstrap, kafka_admin, tmp_path, f"127.0.0.1:{sim.port}", [route], shards=1
    ) as dep:
        published = [sim.publish(subject, f"a{i}") for i in range(5)]
        first = dep.start_peer("a")
        wait_until(lambda: len(read_committed(dep.bootstrap, [topic])) >= 5, 60, "a bridging")
        assert first.stop() == 0

        # The stalled owner's open transaction: the next three messages and their checkpoint.
        stalled = [sim.publish(subject, f"b{i}") for i in range(3)]
        published += stalled
        zombie = Producer(
            {
                "bootstrap.servers": dep.bootstrap,
                "transactional.id": f"{dep.group}-stalled",
                "transaction.timeout.ms": 120_000,  # the broker will not end it for us
            }
        )
        zombie.init_transactions(30)
        zombie.begin_transaction()
        partition = java_partition(partition_basis(route), 2)
        for (epoch, seq), text in zip(stalled, ("b0", "b1", "b2"), strict=True):
            message = Message(subject, text.encode(), epoch, seq, "UPDATE", None, retained=True)
            zombie.produce(
                topic,
                message.content,
                None,
                partition=partition,
                headers=message_headers(message, "md."),  # type: ignore[arg-type]
            )
        key, value = encode_checkpoint(subject, *stalled[-1])
        zombie.produce(dep.control, value, key, partition=shard_of(subject, dep.shards))
        assert zombie.flush(30) == 0

        second = dep.start_peer("b")
        # While the transaction is open the new owner must not start: it cannot know where.
        deadline = time.monotonic() + STALL_S
        while time.monotonic() < deadline:
            assert '"msg":"shards assigned"' not in second.logs(), second.logs()[-2000:]
            time.sleep(0.2)
        zombie.commit_transaction(30)
        wait_until(lambda: '"msg":"shards assigned"' in second.logs(), 60, "b owning the shard")
        published.append(sim.publish(subject, "c"))
        wait_until(
            lambda: len(read_committed(dep.bootstrap, [topic])) >= len(published),
            60,
            "b bridging after the stalled transaction",
        )
        check_exactly_once(read_committed(dep.bootstrap, [topic]), {subject: published})
        assert second.stop() == 0
