"""A 3-node quorum (replication 3, min ISR 2) keeps transactions working when a node is killed."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from peer.dev.localkafka import Cluster
from peer.testing import create_topics, mdpeer_argv
from tests.fixtures.kafka import read_topic, values

pytestmark = [pytest.mark.kafka, pytest.mark.kafka3, pytest.mark.slow]


def commit_batch(producer: Producer, topic: str, batch: list[bytes], timeout: float = 60) -> None:
    """One transaction; retriable errors (a coordinator or leader moving) are retried."""
    producer.begin_transaction()
    for value in batch:
        producer.produce(topic, value=value)
    deadline = time.monotonic() + timeout
    while True:
        try:
            producer.commit_transaction(max(deadline - time.monotonic(), 1))
            return
        except KafkaException as exc:
            error = exc.args[0]
            if not error.retriable() or time.monotonic() >= deadline:
                raise


def leader_of(admin: AdminClient, topic: str, partition: int = 0) -> int:
    md = admin.list_topics(topic=topic, timeout=10)
    return int(md.topics[topic].partitions[partition].leader)


def cli_status(cluster: Cluster) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [*mdpeer_argv(), "kafka", "status", "--json", "--data-dir", str(cluster.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


def test_transactions_commit_after_sigkill_of_the_leader(kafka3: Cluster) -> None:
    admin = AdminClient({"bootstrap.servers": kafka3.bootstrap})
    topic = f"quorum.{uuid.uuid4().hex[:8]}"
    create_topics(admin, [topic], 1)  # broker defaults: replication 3, min ISR 2
    replicas = admin.list_topics(topic=topic, timeout=10).topics[topic].partitions[0].replicas
    assert sorted(replicas) == [1, 2, 3]

    producer = Producer(
        {
            "bootstrap.servers": kafka3.bootstrap,
            "transactional.id": f"quorum-{topic}",
            "transaction.timeout.ms": 60000,
        }
    )
    producer.init_transactions(60)
    before = [f"before-{i}".encode() for i in range(5)]
    commit_batch(producer, topic, before)

    victim = leader_of(admin, topic)
    kafka3.kill(victim)
    try:
        assert kafka3.pid(victim) is None
        code, status = cli_status(kafka3)
        assert code == 1  # not every node answers
        answering = {n["id"]: n["answering"] for n in status["nodes"]}
        assert answering == {i: i != victim for i in (1, 2, 3)}

        # The same producer goes on, and a new one (a new transactional id, whose
        # coordinator may have been on the dead node) starts and commits too.
        after = [f"after-{i}".encode() for i in range(5)]
        commit_batch(producer, topic, after)
        newcomer = Producer(
            {"bootstrap.servers": kafka3.bootstrap, "transactional.id": f"late-{topic}"}
        )
        newcomer.init_transactions(60)
        commit_batch(newcomer, topic, [b"late"])

        assert leader_of(admin, topic) != victim
        assert values(read_topic(kafka3.bootstrap, topic, timeout=60)) == [*before, *after, b"late"]
    finally:
        kafka3.restart(victim)
    assert all(n.answering for n in kafka3.status())
