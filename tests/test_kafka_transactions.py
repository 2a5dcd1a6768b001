"""The broker is fit for the design: transactions are atomic, and a stale group member is fenced.

These run against the real broker of the session (``kafka_bootstrap``), never a mock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from peer.kafka.closing import leave_and_close
from peer.testing import wait_until
from tests.fixtures.kafka import GroupFactory, TopicFactory, eager_member, read_topic, values

pytestmark = pytest.mark.kafka


def transactional_producer(bootstrap: str, txn_id: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": txn_id,
            "transaction.timeout.ms": 30000,
            "linger.ms": 5,
        }
    )
    producer.init_transactions(30)
    return producer


def test_read_committed_sees_committed_batches_only(
    kafka_bootstrap: str, unique_topic: TopicFactory
) -> None:
    topic = unique_topic(1)
    committed_1 = [b"c1-0", b"c1-1", b"c1-2"]
    aborted = [b"ab-0", b"ab-1"]
    committed_2 = [b"c2-0"]
    producer = transactional_producer(kafka_bootstrap, f"txn-{uuid.uuid4().hex[:8]}")

    producer.begin_transaction()
    for v in committed_1:
        producer.produce(topic, key=b"k", value=v)
    producer.commit_transaction(30)

    producer.begin_transaction()
    for v in aborted:
        producer.produce(topic, key=b"k", value=v)
    assert producer.flush(30) == 0  # the aborted records are really in the log
    producer.abort_transaction(30)

    producer.begin_transaction()
    for v in committed_2:
        producer.produce(topic, key=b"k", value=v)
    producer.commit_transaction(30)

    assert values(read_topic(kafka_bootstrap, topic)) == committed_1 + committed_2
    # The aborted batch was written, only hidden: a read_uncommitted reader sees it.
    everything = read_topic(kafka_bootstrap, topic, isolation="read_uncommitted")
    assert values(everything) == committed_1 + aborted + committed_2


@dataclass
class Member:
    """A group member that records its rebalance callbacks and what it consumed."""

    name: str
    consumer: Consumer
    assigned: list[list[int]] = field(default_factory=list)
    revoked: list[list[int]] = field(default_factory=list)
    lost: list[list[int]] = field(default_factory=list)
    consumed: int = 0

    def subscribe(self, topic: str) -> None:
        self.consumer.subscribe(
            [topic],
            on_assign=lambda _c, ps: self.assigned.append(sorted(p.partition for p in ps)),
            on_revoke=lambda _c, ps: self.revoked.append(sorted(p.partition for p in ps)),
            on_lost=lambda _c, ps: self.lost.append(sorted(p.partition for p in ps)),
        )

    def poll_once(self) -> None:
        msg = self.consumer.poll(0.1)
        if msg is not None and msg.error() is None:
            self.consumed += 1

    def positions(self) -> list[TopicPartition]:
        return self.consumer.position(self.consumer.assignment())


def group_member(bootstrap: str, group: str, name: str) -> Member:
    return Member(name, eager_member(bootstrap, group, name))


def test_stale_generation_is_fenced_by_send_offsets(
    kafka_bootstrap: str, unique_topic: TopicFactory, unique_group: GroupFactory
) -> None:
    source = unique_topic(2)
    out = unique_topic(1)
    group = unique_group()
    seed = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(6):
        seed.produce(source, partition=i % 2, value=f"in-{i}".encode())
    assert seed.flush(30) == 0

    a = group_member(kafka_bootstrap, group, "member-a")
    b = group_member(kafka_bootstrap, group, "member-b")
    producer_a = transactional_producer(kafka_bootstrap, f"{group}-a")
    producer_b = transactional_producer(kafka_bootstrap, f"{group}-b")
    try:
        # A alone: it owns both partitions and consumes every seed record.
        a.subscribe(source)

        def a_caught_up() -> bool:
            a.poll_once()
            return a.consumed == 6

        wait_until(a_caught_up, 30, "member A to consume the 6 seed records", step=0)
        assert a.assigned == [[0, 1]]
        stale_metadata = a.consumer.consumer_group_metadata()
        stale_positions = a.positions()
        assert sorted(tp.offset for tp in stale_positions) == [3, 3]

        # A's transaction is open and its records are in the log ...
        producer_a.begin_transaction()
        for i in range(3):
            producer_a.produce(out, value=f"from-a-{i}".encode())
        assert producer_a.flush(30) == 0

        # ... when B joins. A does not poll (a paused zombie): the group rebalances
        # without it, and B ends up owning partitions under a new generation.
        b.subscribe(source)

        def b_assigned() -> bool:
            b.poll_once()
            return any(b.assigned)

        wait_until(b_assigned, 30, "member B to be assigned partitions", step=0)
        # A never heard of it: no callback ran in A since its first assignment.
        assert (a.assigned, a.revoked, a.lost) == ([[0, 1]], [], [])

        # The zombie tries to commit with the group metadata it holds: the group coordinator
        # rejects the offsets, and the transaction can only be aborted.
        with pytest.raises(KafkaException) as fenced:
            producer_a.send_offsets_to_transaction(stale_positions, stale_metadata, 30)
        error = fenced.value.args[0]
        assert error.code() in {
            KafkaError.ILLEGAL_GENERATION,
            KafkaError.UNKNOWN_MEMBER_ID,
            KafkaError.FENCED_INSTANCE_ID,
        }, error
        assert error.txn_requires_abort(), error
        with pytest.raises(KafkaException):
            producer_a.commit_transaction(30)  # the transaction cannot be saved
        producer_a.abort_transaction(30)

        # The current owner commits the same way and succeeds (the check can pass).
        def b_caught_up() -> bool:
            b.poll_once()
            owned = b.consumer.assignment()
            return bool(owned) and all(tp.offset == 3 for tp in b.positions())

        wait_until(b_caught_up, 30, "member B to consume its partitions", step=0)
        producer_b.begin_transaction()
        producer_b.produce(out, value=b"from-b")
        producer_b.send_offsets_to_transaction(
            b.positions(), b.consumer.consumer_group_metadata(), 30
        )
        producer_b.commit_transaction(30)

        assert values(read_topic(kafka_bootstrap, out)) == [b"from-b"]
        uncommitted = values(read_topic(kafka_bootstrap, out, isolation="read_uncommitted"))
        assert uncommitted == [b"from-a-0", b"from-a-1", b"from-a-2", b"from-b"]
        committed = b.consumer.committed(b.consumer.assignment(), 30)
        assert all(tp.offset == 3 for tp in committed), committed
    finally:
        for member in (a, b):
            leave_and_close(member.consumer, member.name)  # a fenced member: see its docs
        producer_a.flush(5)
        producer_b.flush(5)
