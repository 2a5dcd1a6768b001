"""Rebuilding shard state with read_committed: aborted checkpoints never count, and an open
transaction ends the read at the last stable offset instead of hanging."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer

from peer.control import encode_checkpoint, encode_route
from peer.control.reader import (
    ControlReadTimeoutError,
    ControlTopicMissingError,
    ShardStateWithEnd,
    _Progress,
    _take,
    read_shards,
)
from peer.control.shards import shard_of
from peer.control.state import ShardState
from peer.errors import MdpeerError
from peer.kafka.clients import reader_config
from peer.model import Position
from peer.routes.model import Route
from tests.fixtures.kafka import TopicFactory

pytestmark = pytest.mark.kafka

SHARDS = 3
COMPACT = {"cleanup.policy": "compact"}


def subject_on(partition: int, prefix: str = "/s/") -> str:
    """A subject whose shard is ``partition`` of SHARDS."""
    return next(
        f"{prefix}{i}" for i in range(1000) if shard_of(f"{prefix}{i}", SHARDS) == partition
    )


@dataclass(frozen=True)
class ControlLog:
    """A compacted topic of SHARDS partitions standing for a control topic, and a
    transactional producer that writes each record on its subject's shard."""

    topic: str
    producer: Producer
    conf: dict[str, str]

    def produce(self, subject: str, record: tuple[bytes, bytes]) -> None:
        key, value = record
        self.producer.produce(self.topic, key=key, value=value, partition=shard_of(subject, SHARDS))

    def commit(self, subject: str, *records: tuple[bytes, bytes]) -> None:
        """One committed transaction holding ``records``."""
        self.producer.begin_transaction()
        for record in records:
            self.produce(subject, record)
        self.producer.commit_transaction(30)

    def leave_open(self, subject: str, record: tuple[bytes, bytes]) -> None:
        """A transaction holding ``record``, in the log (beyond the LSO) and left open."""
        self.producer.begin_transaction()
        self.produce(subject, record)
        assert self.producer.flush(30) == 0

    def read(
        self, partitions: list[int], timeout: float, **options: Any
    ) -> dict[int, ShardStateWithEnd]:
        return read_shards(self.conf, self.topic, partitions, timeout, **options)


@pytest.fixture
def ctl(kafka_bootstrap: str, unique_topic: TopicFactory) -> Iterator[ControlLog]:
    conf = {"bootstrap.servers": kafka_bootstrap}
    producer = Producer(
        {
            **conf,
            "transactional.id": f"test-ckpt-{uuid.uuid4().hex[:8]}",
            "transaction.timeout.ms": 60000,
        }
    )
    producer.init_transactions(30)
    yield ControlLog(unique_topic(SHARDS, config=COMPACT), producer, conf)
    producer.flush(5)


def test_committed_checkpoints_count_aborted_ones_do_not(ctl: ControlLog) -> None:
    subject = subject_on(1)
    checkpoint = encode_checkpoint(subject, 1, 10, peer="p1")
    ctl.commit(subject, encode_route(Route(subject, "data")), checkpoint)
    ctl.leave_open(subject, encode_checkpoint(subject, 1, 99))
    ctl.producer.abort_transaction(30)

    states = ctl.read([1], timeout=20)
    assert list(states) == [1]
    shard = states[1]
    assert shard.state.routes == {subject: Route(subject, "data")}
    ckpt = shard.state.checkpoints[subject]
    assert ckpt.position == Position(1, 10)
    assert ckpt.meta["peer"] == "p1"
    # 2 records + commit marker + aborted record + abort marker: the read ends past them all
    assert shard.end_offset == 5
    assert shard.state.offset == 1


def test_open_transaction_ends_the_read_at_the_last_stable_offset(ctl: ControlLog) -> None:
    subject = subject_on(2)
    ctl.commit(subject, encode_checkpoint(subject, 3, 5))
    ctl.leave_open(subject, encode_checkpoint(subject, 3, 6))  # beyond the LSO while open
    try:
        started = time.monotonic()
        states = ctl.read([0, 2], timeout=15)
        assert time.monotonic() - started < 15
        assert states[2].state.checkpoints[subject].position == Position(3, 5)
        assert states[2].end_offset == 2  # the open transaction's first record
        assert states[0].end_offset == 0  # an empty partition ends at once
        assert states[0].state.routes == {}
    finally:
        ctl.producer.abort_transaction(30)


def test_an_owners_rebuild_waits_for_an_open_transaction_to_commit(ctl: ControlLog) -> None:
    """A zombie's transaction that already holds its offsets may still commit: an owner's
    rebuild (settle=None) must see that commit, never start from the checkpoint before it."""
    subject = subject_on(1)
    ctl.commit(subject, encode_checkpoint(subject, 3, 5))
    ctl.leave_open(subject, encode_checkpoint(subject, 3, 6))
    result: dict[str, Any] = {}

    def rebuild() -> None:
        result["states"] = ctl.read([1], timeout=60, settle=None)

    reader = threading.Thread(target=rebuild)
    reader.start()
    reader.join(4.0)  # twice the default settle: a lenient read would have ended by now
    assert reader.is_alive(), "the rebuild ended while the transaction was open"
    ctl.producer.commit_transaction(30)
    reader.join(30)
    assert not reader.is_alive()
    shard = result["states"][1]
    assert shard.state.checkpoints[subject].position == Position(3, 6)
    assert shard.end_offset == 4  # past the second commit marker


def test_an_owners_rebuild_raises_rather_than_start_before_an_open_transaction(
    ctl: ControlLog,
) -> None:
    subject = subject_on(2)
    ctl.leave_open(subject, encode_checkpoint(subject, 3, 6))
    try:
        with pytest.raises(ControlReadTimeoutError, match="stayed open") as failed:
            ctl.read([2], timeout=3, settle=None)
        assert failed.value.open_transaction
        assert failed.value.pending == {2: None}
    finally:
        ctl.producer.abort_transaction(30)


def test_reader_config_drops_group_membership() -> None:
    base = {
        "bootstrap.servers": "h:1",
        "group.id": "mdpeer",
        "group.instance.id": "peer-a",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10000,
        "isolation.level": "read_uncommitted",
        "enable.auto.commit": True,
        "security.protocol": "SASL_SSL",
    }
    conf = reader_config(base)
    assert "group.instance.id" not in conf
    assert "partition.assignment.strategy" not in conf
    assert conf["group.id"] == "mdpeer"  # the deployment's group: its Describe ACL suffices
    assert conf["isolation.level"] == "read_committed"
    assert conf["enable.auto.commit"] is False
    assert conf["security.protocol"] == "SASL_SSL"


def test_missing_control_topic(kafka_bootstrap: str) -> None:
    with pytest.raises(ControlTopicMissingError, match="does not exist") as info:
        read_shards(
            {"bootstrap.servers": kafka_bootstrap}, f"nope.{uuid.uuid4().hex[:8]}", timeout=10
        )
    assert info.value.hint is not None
    assert "mdpeer init" in info.value.hint


def test_a_read_right_after_a_commit_sees_it(ctl: ControlLog) -> None:
    # The commit is acknowledged before its markers are written: the read must wait for them.
    subject = subject_on(0)
    for seq in range(1, 6):
        ctl.commit(subject, encode_checkpoint(subject, 1, seq))
        states = ctl.read([0], timeout=15)
        assert states[0].state.checkpoints[subject].position == Position(1, seq)
        assert states[0].end_offset == 2 * seq  # record + commit marker per transaction


def test_an_error_of_the_whole_consumer_is_looked_at_before_its_partition() -> None:
    """Errors like "all brokers down" carry no partition or offset: a transient one is waited
    out (the read's deadline bounds it), any other names the topic; neither is an
    AssertionError (the reader once asserted the partition before looking at the error)."""
    topic = "t.control"
    pending = {0: _Progress(target=5)}
    states = {0: ShardStateWithEnd(ShardState(0, 1), 0)}
    _take(Message(error=KafkaError(KafkaError._ALL_BROKERS_DOWN)), topic, pending, states)
    assert 0 in pending  # nothing learned, nothing lost
    refusal = Message(error=KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED))
    with pytest.raises(MdpeerError, match=r"control topic 't\.control': ") as refused:
        _take(refusal, topic, pending, states)
    assert "partition" not in str(refused.value)
    # a partition's end still ends the read of that partition
    end = Message(topic=topic, partition=0, offset=5, error=KafkaError(KafkaError._PARTITION_EOF))
    _take(end, topic, pending, states)
    assert pending[0].eof == 5
