"""Control topic administration against the real broker: create, check, write routes/commands."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from peer.control import Command, decode
from peer.control.admin import (
    ControlTopicConfigError,
    ControlWriteError,
    RouteRemoval,
    ShardCountMismatchError,
    admin_client,
    admin_producer,
    describe_control_topic,
    describe_existing_control_topic,
    ensure_control_topic,
    write_command,
    write_routes,
)
from peer.control.group import describe_group
from peer.control.reader import (
    ControlTopicMissingError,
    KafkaUnavailableError,
    read_control_topic,
    read_shards,
)
from peer.control.shards import shard_of
from peer.routes.model import Route, RouteTable
from peer.testing import free_port
from tests.fixtures.kafka import GroupFactory, TopicFactory, read_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
def control_name(kafka_admin: AdminClient) -> Iterator[Callable[[], str]]:
    """Names for control topics the code under test creates; deleted afterwards."""
    names: list[str] = []

    def make() -> str:
        names.append(f"ctl.{uuid.uuid4().hex[:10]}.control")
        return names[-1]

    yield make
    if names:
        for future in kafka_admin.delete_topics(names, operation_timeout=10).values():
            with contextlib.suppress(Exception):
                future.result(10)


@dataclass(frozen=True)
class Control:
    """A control topic of ``shards`` partitions, made by ``ensure_control_topic``."""

    topic: str
    shards: int
    #: librdkafka properties of the admin commands' clients
    conf: dict[str, str]

    def producer(self, group: str | None = None) -> Producer:
        """An admin producer (of a new group unless ``group``)."""
        return admin_producer(self.conf, group or f"g{uuid.uuid4().hex[:8]}")


@pytest.fixture
def new_control(
    kafka_admin: AdminClient, kafka_bootstrap: str, control_name: Callable[[], str]
) -> Callable[[int], Control]:
    """``new_control(shards) -> Control``, deleted afterwards."""

    def make(shards: int) -> Control:
        topic = control_name()
        ensure_control_topic(kafka_admin, topic, shards, None)
        return Control(topic, shards, {"bootstrap.servers": kafka_bootstrap})

    return make


def test_ensure_creates_compacted_topic_idempotently(
    kafka_admin: AdminClient, kafka_bootstrap: str, control_name: Callable[[], str]
) -> None:
    topic = control_name()
    first = ensure_control_topic(kafka_admin, topic, 6, None, bootstrap=kafka_bootstrap)
    assert (first.created, first.partitions) == (True, 6)
    assert first.config["cleanup.policy"] == "compact"
    assert first.config["segment.ms"] == "600000"
    again = ensure_control_topic(kafka_admin, topic, 6, None, bootstrap=kafka_bootstrap)
    assert (again.created, again.partitions) == (False, 6)
    described = describe_control_topic(kafka_admin, topic)
    assert described.partitions == 6
    assert described.replication_factor >= 1


def test_other_shard_count_is_refused_with_the_reason(
    kafka_admin: AdminClient, control_name: Callable[[], str]
) -> None:
    topic = control_name()
    ensure_control_topic(kafka_admin, topic, 3, None)
    with pytest.raises(ShardCountMismatchError) as info:
        ensure_control_topic(kafka_admin, topic, 12, None)
    err = info.value
    assert (err.existing, err.wanted) == (3, 12)
    assert "cannot change" in str(err)
    assert "murmur2" in str(err)
    assert err.hint is not None
    assert "new group" in err.hint


def test_a_topic_that_is_not_compacted_is_refused(
    kafka_admin: AdminClient, unique_topic: TopicFactory
) -> None:
    topic = unique_topic(3, config={"cleanup.policy": "delete"})
    with pytest.raises(ControlTopicConfigError, match=r"cleanup\.policy='delete'"):
        ensure_control_topic(kafka_admin, topic, 3, None)


def test_a_topic_that_brokers_learn_of_late_is_waited_for_not_reported_missing(
    kafka_admin: AdminClient, kafka_bootstrap: str, control_name: Callable[[], str]
) -> None:
    """Regression (chaos harness, 3 nodes): ``mdpeer init`` created the control topic, then
    a broker that did not know it yet made init report it missing. Here the topic appears
    only after the wait began."""
    topic = control_name()
    created = threading.Timer(
        1.0,
        lambda: ensure_control_topic(
            admin_client({"bootstrap.servers": kafka_bootstrap}), topic, 3, None
        ),
    )
    created.start()
    started = time.monotonic()
    try:
        info = describe_existing_control_topic(
            kafka_admin, topic, kafka_bootstrap, started + 30, 30, created=True
        )
    finally:
        created.join(30)
    assert time.monotonic() - started >= 0.9  # it did wait for the topic
    assert (info.topic, info.partitions) == (topic, 3)
    # with nothing to wait for, the deadline ends it with a clear cause
    with pytest.raises(KafkaUnavailableError, match="not every broker knows it yet"):
        describe_existing_control_topic(
            kafka_admin, f"missing.{uuid.uuid4().hex[:8]}", kafka_bootstrap,
            time.monotonic() + 0.5, 0.5,
        )  # fmt: skip


def test_describe_a_missing_topic(kafka_admin: AdminClient) -> None:
    with pytest.raises(ControlTopicMissingError, match="does not exist"):
        describe_control_topic(kafka_admin, f"missing.{uuid.uuid4().hex[:8]}")


def test_write_routes_then_read_back_on_their_shards(
    kafka_bootstrap: str, new_control: Callable[[int], Control]
) -> None:
    ctl = new_control(5)
    topic, shards, conf = ctl.topic, ctl.shards, ctl.conf
    producer = ctl.producer()
    routes = [Route(f"/s/{i}", f"topic{i % 3}", key="k" if i % 2 else None) for i in range(20)]
    assert write_routes(producer, topic, shards, routes) == 20
    # one removal, one change
    changed = Route("/s/1", "other")
    assert write_routes(producer, topic, shards, [RouteRemoval("/s/0"), changed]) == 2

    states = read_shards(conf, topic, timeout=20)
    assert sorted(states) == list(range(shards))
    expected = {r.subject: r for r in routes[1:]} | {"/s/1": changed}
    for p, shard in states.items():
        assert shard.problems == []
        assert shard.state.routes == {s: r for s, r in expected.items() if shard_of(s, shards) == p}
    # every record sits on its subject's shard; the removal is a real tombstone
    records = read_topic(kafka_bootstrap, topic)
    assert len(records) == 22
    for partition, key, value in records:
        assert key is not None
        assert partition == shard_of(decode(key, value).subject, shards)
    assert [(k, v) for _, k, v in records if k == b"route:/s/0"][-1][1] is None

    snapshot = read_control_topic(conf, topic, timeout=20)
    assert snapshot.partitions == shards
    assert snapshot.routes() == RouteTable(expected.values())


def test_write_routes_from_a_diff_and_a_command(new_control: Callable[[int], Control]) -> None:
    ctl = new_control(2)
    producer = ctl.producer()
    current = RouteTable([Route("/a", "ta"), Route("/b", "tb")])
    write_routes(producer, ctl.topic, 2, current.routes())
    desired = RouteTable([Route("/b", "tb2"), Route("/c", "tc")])
    write_routes(producer, ctl.topic, 2, current.diff(desired))
    command = Command.reset("7:42")
    write_command(producer, ctl.topic, 2, "/b", command, by="test")

    snapshot = read_control_topic(ctl.conf, ctl.topic, timeout=20)
    assert snapshot.routes() == desired
    pending = snapshot.pending_commands()
    assert list(pending) == ["/b"]
    assert pending["/b"].command == command
    assert pending["/b"].meta["by"] == "test"


def test_thousand_routes_rebuild_exactly(new_control: Callable[[int], Control]) -> None:
    ctl = new_control(8)
    routes = [Route(f"/load/{i:04d}", f"t{i % 7}", key=f"k{i}") for i in range(1000)]
    write_routes(ctl.producer(), ctl.topic, ctl.shards, routes, timeout=30)
    snapshot = read_control_topic(ctl.conf, ctl.topic, timeout=30)
    assert snapshot.routes() == RouteTable(routes)
    assert sum(s.end_offset for s in snapshot.shards.values()) >= 1000
    for p, shard in snapshot.shards.items():
        assert all(shard_of(s, ctl.shards) == p for s in shard.state.routes)


def _dead_bootstrap() -> str:
    # A port nothing listens on: bound then closed (connections are refused).
    return f"127.0.0.1:{free_port()}"


def test_unreachable_kafka_is_a_clear_error_in_bounded_time() -> None:
    bootstrap = _dead_bootstrap()
    conf = {"bootstrap.servers": bootstrap}
    calls: list[Callable[[], object]] = [
        lambda: ensure_control_topic(
            admin_client(conf), "x.control", 3, None, bootstrap=bootstrap, timeout=2
        ),
        lambda: read_shards(conf, "x.control", timeout=2),
        lambda: admin_producer(conf, "g", timeout=2),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(KafkaUnavailableError) as info:
            call()
        assert time.monotonic() - started < 10
        assert bootstrap in str(info.value)
        assert info.value.hint is not None


def test_a_failed_write_applies_nothing(new_control: Callable[[int], Control]) -> None:
    ctl = new_control(2)
    topic, conf = ctl.topic, ctl.conf
    producer = ctl.producer()
    # Told the topic has 10 partitions: some records aim at partitions that do not exist.
    routes = [Route(f"/x/{i}", "t") for i in range(20)]
    assert any(shard_of(r.subject, 10) >= 2 for r in routes)
    assert any(shard_of(r.subject, 10) < 2 for r in routes)
    with pytest.raises(ControlWriteError, match="nothing applied"):
        write_routes(producer, topic, 10, routes, timeout=10)
    assert read_control_topic(conf, topic, timeout=20).routes() == RouteTable()
    # the producer is still usable for the next (valid) batch
    write_routes(producer, topic, 2, routes[:3])
    assert len(read_control_topic(conf, topic, timeout=20).routes()) == 3


def test_a_newer_admin_command_fences_an_older_one(new_control: Callable[[int], Control]) -> None:
    ctl = new_control(2)
    group = f"g{uuid.uuid4().hex[:8]}"
    older = ctl.producer(group)
    newer = ctl.producer(group)
    with pytest.raises(ControlWriteError, match="fenced"):
        write_routes(older, ctl.topic, 2, [Route("/old", "t")])
    write_routes(newer, ctl.topic, 2, [Route("/new", "t")])
    assert list(read_control_topic(ctl.conf, ctl.topic, timeout=20).routes()) == ["/new"]


def test_describe_group_shows_who_owns_which_shard(
    kafka_admin: AdminClient,
    kafka_bootstrap: str,
    control_name: Callable[[], str],
    unique_group: GroupFactory,
) -> None:
    topic = control_name()
    ensure_control_topic(kafka_admin, topic, 4, None)
    group = unique_group()
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "client.id": "mdpeer-peer-a",
            "session.timeout.ms": 6000,
        }
    )
    try:
        assigned: list[int] = []

        def on_assign(_: Consumer, tps: list[TopicPartition]) -> None:
            assigned.extend(tp.partition for tp in tps)

        consumer.subscribe([topic], on_assign=on_assign)
        deadline = time.monotonic() + 30
        while len(assigned) < 4:
            assert time.monotonic() < deadline, "no assignment within 30s"
            consumer.poll(0.2)
        info = describe_group(kafka_admin, group, topic)
        assert [m.peer for m in info.members] == ["peer-a"]
        assert info.members[0].shards == (0, 1, 2, 3)
        assert set(info.owners()) == {0, 1, 2, 3}
        assert info.state == "STABLE"
    finally:
        consumer.close()
