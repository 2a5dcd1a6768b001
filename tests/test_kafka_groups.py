"""The broker runs the KIP-848 consumer group protocol (group.protocol=consumer) promptly."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer

from peer.kafka.closing import leave_and_close
from tests.fixtures.kafka import GroupFactory, TopicFactory

pytestmark = pytest.mark.kafka


def kip848_member(bootstrap: str, group: str, name: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": "consumer",
            "client.id": name,
            "enable.auto.commit": False,
        }
    )


def owned(consumer: Consumer) -> set[int]:
    return {tp.partition for tp in consumer.assignment()}


def test_kip848_members_share_partitions_after_a_join(
    kafka_bootstrap: str, unique_topic: TopicFactory, unique_group: GroupFactory
) -> None:
    topic = unique_topic(4)
    group = unique_group()
    first = kip848_member(kafka_bootstrap, group, "first")
    second = kip848_member(kafka_bootstrap, group, "second")
    try:
        first.subscribe([topic])
        deadline = time.monotonic() + 30
        while owned(first) != {0, 1, 2, 3}:
            assert time.monotonic() < deadline, f"first member owns {owned(first)}"
            first.poll(0.1)

        second.subscribe([topic])
        deadline = time.monotonic() + 30
        # The broker computes the assignment; members converge through heartbeats.
        while not (owned(first) and owned(second) and len(owned(first) | owned(second)) == 4):
            assert time.monotonic() < deadline, (owned(first), owned(second))
            first.poll(0.05)
            second.poll(0.05)
        assert owned(first).isdisjoint(owned(second))
    finally:
        leave_and_close(first, "first")  # the second has a rebalance of its own to serve
        leave_and_close(second, "second")
