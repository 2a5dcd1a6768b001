"""peer.writer against the session's real broker: atomic data + checkpoints, fencing, oversize.

Every assertion reads back what a ``read_committed`` consumer (or the group coordinator) sees.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    Producer,
)
from confluent_kafka.admin import AdminClient

from peer.config.settings import PeerSettings
from peer.control import CheckpointRecord, decode
from peer.control.shards import murmur2, shard_of, to_positive
from peer.errors import FaultReason
from peer.kafka.clients import producer_config
from peer.kafka.closing import leave_and_close
from peer.kafka.errors import (
    AbortRequiredError,
    FencedError,
    GroupFencedError,
    OversizeError,
    RecordsRefusedError,
    TopicCreatingError,
    TopicLimitError,
    TopicMissingError,
)
from peer.model import Message, Position
from peer.routes.model import Oversize, Route
from peer.testing import wait_until
from peer.writer import TransactionalWriter, WriteOutcome
from peer.writer.topics import TopicCatalog, TopicCreation, TopicPolicy
from tests.fixtures.kafka import GroupFactory, TopicFactory, eager_member, read_records

pytestmark = pytest.mark.kafka

CONTROL_PARTITIONS = 4


def java_partition_of(data: bytes, partitions: int) -> int:
    # Kafka's Java default partitioner for a keyed record, spelled out here independently.
    return to_positive(murmur2(data)) % partitions


def msg(subject: str, seq: int, content: bytes = b"", **kw: Any) -> Message:
    return Message(
        subject=subject,
        content=content or f"{subject}#{seq}".encode(),
        epoch=kw.pop("epoch", 7),
        seq=seq,
        message_type=kw.pop("message_type", "UPDATE"),
        **kw,
    )


@dataclass
class Env:
    bootstrap: str
    control: str
    writers: list[tuple[TransactionalWriter, Producer]]

    def writer(
        self,
        txn_id: str | None = None,
        *,
        producer: dict[str, str] | None = None,
        policy: TopicPolicy | None = None,
        admin: bool = True,
        **kw: Any,
    ) -> tuple[TransactionalWriter, Producer]:
        policy = policy or TopicPolicy()
        settings = PeerSettings(
            bootstrap=self.bootstrap,
            group="wtest",
            peer_id=txn_id or uuid.uuid4().hex[:10],
            control_topic=self.control,
            kafka_producer=producer or {},
            topic_creation=policy.creation.value,
        )
        prod = Producer(producer_config(settings))
        kw.setdefault("operation_timeout", 20.0)
        topics = TopicCatalog(
            prod,
            policy=policy,
            admin=AdminClient({"bootstrap.servers": self.bootstrap}) if admin else None,
        )
        w = TransactionalWriter(
            prod,
            control_topic=self.control,
            control_partitions=CONTROL_PARTITIONS,
            transactional_id=settings.transactional_id,
            topics=topics,
            **kw,
        )
        w.init()
        self.writers.append((w, prod))
        return w, prod

    def checkpoints(self, isolation: str = "read_committed") -> list[tuple[int, CheckpointRecord]]:
        out = []
        for rec in read_records(self.bootstrap, self.control, isolation=isolation):
            assert rec.key is not None
            if not rec.key.startswith(b"ckpt:"):
                continue
            decoded = decode(rec.key, rec.value)
            assert isinstance(decoded, CheckpointRecord)
            out.append((rec.partition, decoded))
        return out


@pytest.fixture
def env(kafka_bootstrap: str, unique_topic: TopicFactory) -> Iterator[Env]:
    e = Env(kafka_bootstrap, unique_topic(CONTROL_PARTITIONS), [])
    yield e
    for _w, prod in e.writers:
        prod.flush(1)  # fenced or aborted ones have nothing left to send


def test_committed_batch_is_visible_with_partition_headers_and_last_checkpoints(
    env: Env, unique_topic: TopicFactory
) -> None:
    keyless_topic, keyed_topic = unique_topic(6), unique_topic(6)
    subjects = [f"/live/s{i}" for i in range(8)]
    routes = {s: Route(s, keyless_topic) for s in subjects}
    routes["/live/keyed"] = Route("/live/keyed", keyed_topic, key="user-42")
    w, _ = env.writer()

    w.begin()
    written = []
    for seq in (1, 2, 3):
        for subject, route in routes.items():
            m = msg(subject, seq, closure=f"c{seq}" if seq == 2 else None, qos="guaranteed")
            assert w.write(m, route) is WriteOutcome.WRITTEN
            w.checkpoint(subject, m.position, cmd_id="cmd-1" if seq == 1 else None)
            written.append(m)
    assert w.transaction_open
    assert w.transaction_records == len(written)
    # Before the commit nothing is visible, not even a checkpoint.
    assert env.checkpoints("read_uncommitted") == []
    stats = w.commit([], None)
    assert (stats.records, stats.checkpoints, stats.skipped) == (len(written), len(routes), 0)
    assert (w.transaction_open, w.transaction_records) == (False, 0)

    data = read_records(env.bootstrap, keyless_topic) + read_records(env.bootstrap, keyed_topic)
    assert len(data) == len(written)
    by_id = {(r.headers["md.subject"], r.headers["md.seq"]): r for r in data}
    for m in written:
        rec = by_id[(m.subject.encode(), str(m.seq).encode())]
        route = routes[m.subject]
        assert rec.value == m.content
        basis = route.key if route.key is not None else m.subject
        assert rec.key == (route.key.encode() if route.key else None)
        assert rec.partition == java_partition_of(basis.encode(), 6)
        expected = {
            "md.subject": m.subject.encode(),
            "md.epoch": b"7",
            "md.seq": str(m.seq).encode(),
            "md.type": b"UPDATE",
            "md.retained": b"true",
            "md.qos": b"guaranteed",
        }
        if m.closure is not None:
            expected["md.closure"] = m.closure.encode()
        assert rec.headers == expected
    # Subjects really spread over partitions, and each keeps its order in its one partition.
    assert len({r.partition for r in data}) > 1
    for subject in routes:
        seqs = [
            int(r.headers["md.seq"]) for r in data if r.headers["md.subject"] == subject.encode()
        ]
        assert seqs == [1, 2, 3]

    ckpts = env.checkpoints("read_uncommitted")  # coalesced: nothing else was ever written
    assert sorted(c.subject for _p, c in ckpts) == sorted(routes)
    for partition, c in ckpts:
        assert partition == shard_of(c.subject, CONTROL_PARTITIONS)
        assert c.position == Position(7, 3)
        assert c.cmd == "cmd-1"  # acknowledged in the transaction, kept by the last checkpoint


def test_abort_makes_nothing_visible(env: Env, unique_topic: TopicFactory) -> None:
    topic = unique_topic(3)
    w, producer = env.writer()
    w.begin()
    for seq in range(1, 6):
        m = msg("/abort/me", seq)
        w.write(m, Route("/abort/me", topic))
        w.checkpoint(m.subject, m.position)
    assert producer.flush(30) == 0  # the data is really in the log ...
    w.abort()
    assert (w.transaction_open, w.transaction_records) == (False, 0)

    assert read_records(env.bootstrap, topic) == []
    assert env.checkpoints() == []
    # ... only hidden; and no checkpoint was ever produced for it (I2).
    assert len(read_records(env.bootstrap, topic, isolation="read_uncommitted")) == 5
    assert env.checkpoints("read_uncommitted") == []


def seed_control(bootstrap: str, control: str, per_partition: int) -> None:
    seed = Producer({"bootstrap.servers": bootstrap})
    for p in range(CONTROL_PARTITIONS):
        for i in range(per_partition):
            seed.produce(control, key=f"seed:{p}:{i}".encode(), value=b"{}", partition=p)
    assert seed.flush(30) == 0


def consume_all(consumer: Consumer, count: int, timeout: float) -> None:
    seen = 0

    def done() -> bool:
        nonlocal seen
        m = consumer.poll(0.1)
        if m is not None and m.error() is None:
            seen += 1
        return seen >= count

    wait_until(done, timeout, f"{count} control records consumed", step=0)  # done() polls


def test_offsets_commit_atomically_and_a_topic_limit_is_learned_then_applied_per_record(
    env: Env, unique_topic: TopicFactory, unique_group: GroupFactory
) -> None:
    seed_control(env.bootstrap, env.control, 2)
    # The broker refuses records over 2000 bytes on this topic; the producer would accept them.
    small = unique_topic(1, config={"max.message.bytes": "2000"})
    member = eager_member(env.bootstrap, unique_group(), "member")
    try:
        member.subscribe([env.control])
        consume_all(member, 2 * CONTROL_PARTITIONS, 30)
        positions = member.position(member.assignment())
        assert sorted(tp.offset for tp in positions) == [2] * CONTROL_PARTITIONS
        metadata = member.consumer_group_metadata()

        def committed() -> list[int]:
            return [tp.offset for tp in member.committed(member.assignment(), 30)]

        assert all(o < 0 for o in committed())  # nothing committed yet

        w, _ = env.writer()
        route = Route("/big/one", small, on_oversize=Oversize.SKIP)
        big = msg("/big/one", 1, b"x" * 5000)  # fits the producer; only the broker refuses it
        w.begin()
        assert w.write(msg("/big/one", 0), route) is WriteOutcome.WRITTEN
        assert w.write(big, route) is WriteOutcome.WRITTEN
        w.checkpoint("/big/one", big.position)
        with pytest.raises(AbortRequiredError) as failed:
            w.commit(positions, metadata)
        # The topic's own limit is learned: a plain redo, not a fault of the route (yet).
        assert not isinstance(failed.value, RecordsRefusedError)
        assert w.limit_of(small) == 2000
        w.abort()
        # The offsets went nowhere, nor did the data or the checkpoint.
        assert all(o < 0 for o in committed())
        assert read_records(env.bootstrap, small) == []
        assert env.checkpoints() == []

        # The redo applies the route's oversize policy to the big record up front, and the
        # same offsets commit together with the rest. After a refused batch librdkafka may
        # need one more failed transaction (OUT_OF_ORDER_SEQUENCE_NUMBER) to bump its
        # producer epoch: as the runner does, an abortable failure is aborted and redone.
        for _attempt in range(3):
            w.begin()
            assert w.write(msg("/big/one", 0), route) is WriteOutcome.WRITTEN
            assert w.write(big, route) is WriteOutcome.SKIPPED
            w.checkpoint("/big/one", big.position)
            try:
                stats = w.commit(positions, metadata)
                break
            except AbortRequiredError:
                w.abort()
                assert all(o < 0 for o in committed())  # a failed commit commits no offset
        else:
            raise AssertionError("the redo did not commit in 3 attempts")
        assert (stats.records, stats.skipped, stats.offsets) == (1, 1, CONTROL_PARTITIONS)
        assert committed() == [2] * CONTROL_PARTITIONS
        assert [r.value for r in read_records(env.bootstrap, small)] == [b"/big/one#0"]
        assert [c.position for _p, c in env.checkpoints()] == [big.position]
    finally:
        leave_and_close(member, "member")


def test_records_refused_within_a_known_topic_limit_name_the_route_at_fault(
    env: Env, unique_topic: TopicFactory
) -> None:
    # No admin client: the topic's limit cannot be learned, so the refused batch is the
    # topic's fault at once, and the error names the subject and topic to stop.
    small = unique_topic(1, config={"max.message.bytes": "2000"})
    ok = unique_topic(1)
    w, _ = env.writer(admin=False)
    w.begin()
    w.write(msg("/fine/a", 1), Route("/fine/a", ok))
    w.write(msg("/big/one", 1, b"x" * 5000), Route("/big/one", small))
    w.checkpoint("/fine/a", Position(7, 1))
    with pytest.raises(RecordsRefusedError) as refused:
        w.commit([], None)
    assert [(f.subject, f.topic) for f in refused.value.faults] == [("/big/one", small)]
    fault = refused.value.faults[0]
    assert isinstance(fault, TopicLimitError)
    assert fault.reason is FaultReason.RECORD_TOO_LARGE
    assert fault.topic_wide
    w.abort()
    assert read_records(env.bootstrap, ok) == []  # all or nothing: the good record too
    assert env.checkpoints() == []


def test_a_newer_instance_fences_the_older_one(env: Env, unique_topic: TopicFactory) -> None:
    topic = unique_topic(2)
    txn_id = f"fence-{uuid.uuid4().hex[:8]}"
    old, _ = env.writer(txn_id)
    old.begin()
    for seq in (1, 2):
        old.write(msg("/zombie/a", seq), Route("/zombie/a", topic))
    old.checkpoint("/zombie/a", Position(7, 2))

    new, _ = env.writer(txn_id)  # init() fences the old instance
    with pytest.raises(FencedError) as fenced:
        old.commit([], None)
    assert fenced.value.code in {"_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH"}

    new.begin()
    new.write(msg("/zombie/a", 1), Route("/zombie/a", topic))
    new.checkpoint("/zombie/a", Position(7, 1))
    new.commit([], None)
    assert [r.value for r in read_records(env.bootstrap, topic)] == [b"/zombie/a#1"]
    assert [c.position for _p, c in env.checkpoints()] == [Position(7, 1)]


def test_a_stale_group_generation_cannot_commit(
    env: Env, unique_topic: TopicFactory, unique_group: GroupFactory
) -> None:
    seed_control(env.bootstrap, env.control, 1)
    topic = unique_topic(1)
    group = unique_group()
    a = eager_member(env.bootstrap, group, "member-a")
    b = eager_member(env.bootstrap, group, "member-b")
    try:
        a.subscribe([env.control])
        consume_all(a, CONTROL_PARTITIONS, 30)
        stale_positions = a.position(a.assignment())
        stale_metadata = a.consumer_group_metadata()
        w, _ = env.writer()
        w.begin()
        w.write(msg("/stale/s", 1), Route("/stale/s", topic))
        w.checkpoint("/stale/s", Position(7, 1))

        # A stops polling (a paused zombie); B joins and gets the shards in a new generation.
        b.subscribe([env.control])

        def b_owns() -> bool:
            b.poll(0.1)
            return bool(b.assignment())

        wait_until(b_owns, 30, "member B to be assigned", step=0)  # b_owns() polls
        with pytest.raises(GroupFencedError) as fenced:
            w.commit(stale_positions, stale_metadata)
        assert fenced.value.code in {"ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID"}
        assert isinstance(fenced.value, AbortRequiredError)  # the caller aborts and lets go
        w.abort()
        assert read_records(env.bootstrap, topic) == []
        assert env.checkpoints() == []
        assert all(tp.offset < 0 for tp in b.committed(b.assignment(), 30))
    finally:
        leave_and_close(a, "zombie member a")  # a fenced member: see peer.kafka.closing
        leave_and_close(b, "member b")


def test_oversize_policies(env: Env, unique_topic: TopicFactory) -> None:
    topic, dlq = unique_topic(2), unique_topic(2)
    limit = 2000
    # The producer's own limit is the writer's: the dead-letter copy must pass librdkafka's check.
    w, _ = env.writer(message_max_bytes=limit, producer={"message.max.bytes": str(limit)})
    fail = Route("/o/fail", topic)
    skip = Route("/o/skip", topic, on_oversize=Oversize.SKIP)
    dead = Route(
        "/o/dead", topic, key="k1", on_oversize=Oversize.DEAD_LETTER, dead_letter_topic=dlq
    )
    big = bytes(range(256)) * 12  # 3072 bytes

    w.begin()
    with pytest.raises(OversizeError) as too_big:
        w.write(msg("/o/fail", 5, big), fail)
    e = too_big.value
    assert (e.subject, e.epoch, e.seq, e.limit, e.topic) == ("/o/fail", 7, 5, limit, topic)
    assert e.size > len(big)
    assert "/o/fail" in str(e)

    assert w.write(msg("/o/skip", 1), skip) is WriteOutcome.WRITTEN
    assert w.write(msg("/o/skip", 2, big), skip) is WriteOutcome.SKIPPED
    w.checkpoint("/o/skip", Position(7, 2))  # the skipped message is checkpointed past
    assert w.write(msg("/o/dead", 1, big), dead) is WriteOutcome.DEAD_LETTERED
    assert w.write(msg("/o/dead", 2), dead) is WriteOutcome.WRITTEN
    w.checkpoint("/o/dead", Position(7, 2))
    stats = w.commit([], None)
    assert (stats.skipped, stats.dead_lettered, stats.records) == (1, 1, 3)
    assert (w.stats.skipped_oversize, w.stats.dead_lettered) == (1, 1)

    data = read_records(env.bootstrap, topic)
    assert sorted(r.value for r in data if r.value is not None) == [b"/o/dead#2", b"/o/skip#1"]
    [dead_rec] = read_records(env.bootstrap, dlq)
    assert dead_rec.key == b"k1"
    assert dead_rec.partition == java_partition_of(b"k1", 2)
    h = dead_rec.headers
    assert h["md.subject"] == b"/o/dead"
    assert (h["md.epoch"], h["md.seq"]) == (b"7", b"1")
    assert h["md.reason"] == b"oversize"
    assert h["md.original-topic"] == topic.encode()
    assert h["md.limit"] == str(limit).encode()
    assert int(h["md.size"]) > len(big)
    assert dead_rec.value is not None
    # Truncated to fit: a prefix of the content, the whole record under the limit.
    assert 0 < len(dead_rec.value) < len(big)
    assert big.startswith(dead_rec.value)
    assert int(h["md.truncated"]) == len(dead_rec.value)
    record_bytes = len(dead_rec.value) + 2 + sum(len(k) + len(v) for k, v in h.items())
    assert record_bytes <= limit
    assert {c.subject: c.position for _p, c in env.checkpoints()} == {
        "/o/skip": Position(7, 2),
        "/o/dead": Position(7, 2),
    }


def test_a_batch_stops_right_before_the_first_message_its_route_cannot_take(
    env: Env, unique_topic: TopicFactory
) -> None:
    topic = unique_topic(2)
    limit = 2000
    w, _ = env.writer(message_max_bytes=limit, producer={"message.max.bytes": str(limit)})
    big = b"x" * 3000
    fail = Route("/b/fail", topic)
    skip = Route("/b/skip", topic, on_oversize=Oversize.SKIP)
    w.begin()
    stopped = w.write_batch(
        [msg("/b/fail", 1), msg("/b/fail", 2), msg("/b/fail", 3, big), msg("/b/fail", 4)], fail
    )
    # the two before it are produced; nothing of the oversize one nor of what follows it
    assert (stopped.done, stopped.written) == (2, 2)
    assert isinstance(stopped.fault, OversizeError)
    assert stopped.fault.seq == 3
    skipped = w.write_batch([msg("/b/skip", 1), msg("/b/skip", 2, big), msg("/b/skip", 3)], skip)
    assert (skipped.done, skipped.written, skipped.skipped, skipped.fault) == (3, 2, 1, None)
    stats = w.commit([], None)
    assert (stats.records, stats.skipped) == (4, 1)
    assert w.stats.written == 4
    data = read_records(env.bootstrap, topic)
    assert {
        s: [r.value for r in data if r.headers["md.subject"] == s.encode()]
        for s in ("/b/fail", "/b/skip")
    } == {
        "/b/fail": [b"/b/fail#1", b"/b/fail#2"],
        "/b/skip": [b"/b/skip#1", b"/b/skip#3"],
    }


def test_a_batch_waits_below_max_in_flight_and_keeps_its_order(
    env: Env, unique_topic: TopicFactory
) -> None:
    topic = unique_topic(1)
    w, _ = env.writer(max_in_flight=20)
    w.begin()
    done = w.write_batch([msg("/b/many", seq) for seq in range(1, 201)], Route("/b/many", topic))
    assert (done.done, done.written, done.fault) == (200, 200, None)
    assert w.stats.queue_waits > 0  # the bound was reached inside the batch, and waited on
    w.checkpoint("/b/many", Position(7, 200))
    assert w.commit([], None).records == 200
    assert [int(r.headers["md.seq"]) for r in read_records(env.bootstrap, topic)] == list(
        range(1, 201)
    )


def test_missing_topic_under_never_is_refused_naming_topic_and_subject(
    env: Env, unique_topic: TopicFactory, kafka_admin: AdminClient
) -> None:
    good = unique_topic(1)
    missing = f"t.missing.{uuid.uuid4().hex[:8]}"
    w, _ = env.writer(policy=TopicPolicy(TopicCreation.NEVER))
    w.begin()
    w.write(msg("/ok/s", 1), Route("/ok/s", good))
    w.checkpoint("/ok/s", Position(7, 1))
    with pytest.raises(TopicMissingError) as refused:
        w.write(msg("/nowhere/s", 1), Route("/nowhere/s", missing))
    assert type(refused.value) is TopicMissingError
    assert (refused.value.topic, refused.value.subject) == (missing, "/nowhere/s")
    assert refused.value.reason is FaultReason.TOPIC_MISSING
    assert refused.value.topic_wide
    assert missing in str(refused.value)
    assert "/nowhere/s" in str(refused.value)
    # Refused before anything was produced: the transaction goes on with the rest.
    stats = w.commit([], None)
    assert stats.records == 1
    assert [r.value for r in read_records(env.bootstrap, good)] == [b"/ok/s#1"]
    # Looking the topic up did not create it.
    assert missing not in kafka_admin.list_topics(timeout=10).topics


def test_missing_topic_under_cluster_is_asked_of_the_cluster_which_creates_it(
    env: Env, kafka_admin: AdminClient
) -> None:
    # The session broker keeps Apache Kafka's default auto.create.topics.enable=true.
    topic = f"t.auto.{uuid.uuid4().hex[:8]}"
    w, _ = env.writer()  # topic_creation = "cluster", the default
    w.begin()
    with pytest.raises(TopicCreatingError) as creating:
        w.write(msg("/auto/s", 1), Route("/auto/s", topic))
    assert (creating.value.topic, creating.value.subject) == (topic, "/auto/s")
    assert creating.value.reason is FaultReason.TOPIC_CREATING

    def ready() -> bool:
        try:
            return w.topics.probe(topic, "/auto/s") >= 1
        except TopicCreatingError:
            return False

    wait_until(ready, 30, "the cluster to create the topic")
    assert w.write(msg("/auto/s", 1), Route("/auto/s", topic)) is WriteOutcome.WRITTEN
    w.commit([], None)
    assert [r.value for r in read_records(env.bootstrap, topic)] == [b"/auto/s#1"]
    kafka_admin.delete_topics([topic])


def test_missing_topic_under_create_is_created_with_the_configured_shape(
    env: Env, kafka_admin: AdminClient
) -> None:
    topic = f"t.create.{uuid.uuid4().hex[:8]}"
    w, _ = env.writer(policy=TopicPolicy(TopicCreation.CREATE, partitions=3))
    w.begin()
    with pytest.raises(TopicCreatingError):
        w.write(msg("/made/s", 1), Route("/made/s", topic))

    def ready() -> bool:
        try:
            return w.topics.probe(topic, "/made/s") == 3
        except TopicCreatingError:
            return False

    wait_until(ready, 30, "mdpeer to create the topic")
    assert len(kafka_admin.list_topics(topic=topic, timeout=10).topics[topic].partitions) == 3
    assert w.write(msg("/made/s", 1), Route("/made/s", topic)) is WriteOutcome.WRITTEN
    w.commit([], None)
    kafka_admin.delete_topics([topic])


def test_a_full_local_queue_waits_and_drops_nothing(env: Env, unique_topic: TopicFactory) -> None:
    topic = unique_topic(3)
    w, _ = env.writer(producer={"queue.buffering.max.messages": "10"}, max_in_flight=1000)
    subjects = [f"/bp/s{i}" for i in range(5)]
    w.begin()
    most = 0
    for seq in range(1, 61):
        for s in subjects:
            assert w.write(msg(s, seq), Route(s, topic)) is WriteOutcome.WRITTEN
            most = max(most, w.in_flight())
        for s in subjects:
            w.checkpoint(s, Position(7, seq))
    stats = w.commit([], None)
    assert stats.records == 300
    # bounded by the local queue (plus delivery reports not yet served), not by the 300 written
    assert most < 50
    assert w.stats.queue_waits > 0  # the queue really was full, and write() waited

    data = read_records(env.bootstrap, topic)
    assert len(data) == 300
    for s in subjects:
        seqs = [int(r.headers["md.seq"]) for r in data if r.headers["md.subject"] == s.encode()]
        assert seqs == list(range(1, 61))
    assert {c.subject: c.position for _p, c in env.checkpoints()} == {
        s: Position(7, 60) for s in subjects
    }
