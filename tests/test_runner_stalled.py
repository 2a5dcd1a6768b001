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

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from peer.control import encode_checkpoint
from peer.control.shards import shard_of
from peer.dev.sim.server import SimServer
from peer.kafka.closing import leave_and_close
from peer.model import Message, StartPolicy
from peer.routes.model import Route
from peer.testing import PeerProcess, wait_until
from peer.writer.records import java_partition, message_headers, partition_basis
from tests.fixtures.deploy import Deploy
from tests.fixtures.kafka import TopicFactory
from tests.peers import Deployment, check_exactly_once, read_committed

pytestmark = [pytest.mark.kafka, pytest.mark.sim, pytest.mark.slow]

#: longer than the old settle (transaction timeout 10 s + 2 s) plus a group join
STALL_S = 16.0
#: how long the new owner is watched not starting while the old owner's offsets are pending
PENDING_S = 8.0


@dataclass
class Scene:
    """Peer "a" bridged five messages and stopped; three more are published, and the stalled
    owner (``zombie``) holds an open transaction with exactly the records a peer would have
    written for them (nothing in the control topic yet)."""

    dep: Deployment
    sim: SimServer
    subject: str
    topic: str
    published: list[tuple[int, int]]
    stalled: list[tuple[int, int]]
    zombie: Producer

    def checkpoint_stalled(self) -> None:
        """The stalled owner's checkpoint covering its three messages."""
        key, value = encode_checkpoint(self.subject, *self.stalled[-1])
        partition = shard_of(self.subject, self.dep.shards)
        self.zombie.produce(self.dep.control, value, key, partition=partition)

    def assert_not_started(self, peer: PeerProcess, seconds: float) -> None:
        """For ``seconds`` from its start ``peer`` works on no shard (its /readyz), and by
        then it holds the shard and waits: it cannot know where to start yet."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # watched, not slept: any moment of work fails
            assert_not_working(peer)
            time.sleep(0.05)
        wait_until(lambda: waiting_for_the_shard(peer), 60, "the new owner given the shard")
        assert_not_working(peer)

    def finish(self, peer: PeerProcess) -> None:
        """``peer`` takes over, bridges one more message, and nothing was written twice."""
        wait_until(lambda: peer.owned() == {0}, 60, "the new owner working on the shard")
        self.published.append(self.sim.publish(self.subject, "c"))
        wait_until(
            lambda: len(read_committed(self.dep.bootstrap, [self.topic])) >= len(self.published),
            60,
            "the new owner bridging after the stalled transaction",
        )
        check_exactly_once(
            read_committed(self.dep.bootstrap, [self.topic]), {self.subject: self.published}
        )
        assert peer.stop() == 0


def assert_not_working(peer: PeerProcess) -> None:
    peer.check_alive()
    state = peer.readiness()
    assert state is None or not state.working, f"{peer.name} started too early: {state}"


def waiting_for_the_shard(peer: PeerProcess) -> bool:
    """It owns the (only) shard and is still rebuilding it: waiting on a transaction."""
    state = peer.readiness()
    return state is not None and 0 in state.rebuilding


@contextlib.contextmanager
def stalled_scene(deploy: Deploy, topic: str, sim: SimServer, subject: str) -> Iterator[Scene]:
    route = Route(subject, topic, start=StartPolicy.parse("history:1000"))
    with deploy(f"127.0.0.1:{sim.port}", [route], shards=1) as dep:
        published = [sim.publish(subject, f"a{i}") for i in range(5)]
        first = dep.start_peer("a")
        wait_until(lambda: len(read_committed(dep.bootstrap, [topic])) >= 5, 60, "a bridging")
        assert first.stop() == 0
        stalled = [sim.publish(subject, f"b{i}") for i in range(3)]
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
        yield Scene(dep, sim, subject, topic, published + stalled, stalled, zombie)


StalledOwner = Callable[[str], contextlib.AbstractContextManager[Scene]]


@pytest.fixture
def stalled_owner(
    deploy: Deploy, unique_topic: TopicFactory, sim_factory: Callable[..., SimServer]
) -> StalledOwner:
    """``with stalled_owner(subject) as scene:`` a one-shard deployment of ``subject`` whose
    old owner left an open transaction (:class:`Scene`)."""
    sim = sim_factory(cache_size=10_000)
    return lambda subject: stalled_scene(deploy, unique_topic(2), sim, subject)


def test_a_new_owner_waits_for_a_stalled_owners_transaction_and_writes_nothing_twice(
    stalled_owner: StalledOwner,
) -> None:
    with stalled_owner("/stalled/s1") as scene:
        scene.checkpoint_stalled()  # its checkpoint is in the control topic, uncommitted
        assert scene.zombie.flush(30) == 0
        second = scene.dep.start_peer("b")
        # While the transaction is open the new owner must not start: it cannot know where.
        scene.assert_not_started(second, STALL_S)
        scene.zombie.commit_transaction(30)
        scene.finish(second)


def test_a_new_owner_waits_for_offsets_a_stalled_owner_sent_before_its_checkpoints(
    stalled_owner: StalledOwner,
) -> None:
    """Regression (chaos harness, 3 nodes, seed 112401: 7 duplicates). The old owner had
    written data and sent its offsets (its generation still current), then stopped before its
    checkpoint reached the control topic. Nothing of that transaction was in the control
    partitions, so the new owner's rebuild saw no open transaction, started from the older
    checkpoint and wrote the same messages the old owner committed when it woke up."""
    with stalled_owner("/pending/s1") as scene:
        dep = scene.dep
        # The old owner was a group member: its offsets go with its data, then it stalls.
        member = Consumer(
            {
                "bootstrap.servers": dep.bootstrap,
                "group.id": dep.group,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        member.subscribe([dep.control])
        wait_until(lambda: bool(member.poll(0.2) or member.assignment()), 60, "member assigned")
        _low, high = member.get_watermark_offsets(TopicPartition(dep.control, 0), timeout=30)
        scene.zombie.send_offsets_to_transaction(
            [TopicPartition(dep.control, 0, high)], member.consumer_group_metadata(), 30
        )
        assert scene.zombie.flush(30) == 0
        leave_and_close(member, "member")  # its offsets stay pending with the transaction

        waiting = dep.start_peer("b")
        scene.assert_not_started(waiting, PENDING_S)
        # A peer waiting for them still acts on SIGTERM: it leaves, having taken nothing on
        # (watched on its /readyz until it is gone). Its exit within 10 s is the wait's
        # deadline; the old single wait took up to 50 s.
        waiting.terminate()

        def gone() -> bool:
            state = waiting.readiness()
            assert state is None or not state.working, f"b took the shard on: {state}"
            return not waiting.alive()

        wait_until(gone, 10, "b leaving on SIGTERM")
        assert waiting.wait(1) == 0

        second = dep.start_peer("c")
        # c holds the shard and waits on the pending offsets when the old owner wakes up
        wait_until(lambda: waiting_for_the_shard(second), 60, "c waiting on the offsets")
        # The old owner wakes up: its checkpoint, then its commit (which still succeeds).
        scene.checkpoint_stalled()
        scene.zombie.commit_transaction(30)
        scene.finish(second)
