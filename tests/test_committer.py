"""The committer's last resort against the real broker: a producer that cannot abort is
replaced in-process by a new one of the same transactional.id, a bounded number of times.

The fault is injected in the one place it occurs (``abort_transaction`` refused, as a chaos
run saw: "Producer attempted a transactional operation in an invalid state"); the producers,
the transactions and the fencing are Kafka's own.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from peer.config.servers import parse_servers
from peer.config.settings import PeerSettings
from peer.errors import PeerFatalError
from peer.kafka.clients import producer_config
from peer.model import Message
from peer.ops.health import Health
from peer.ops.metrics import PeerMetrics
from peer.routes.model import Route
from peer.runner.committer import REPLACE_MAX, Committer
from peer.runner.containment import Containment
from peer.runner.quarantine import Quarantine
from peer.runner.shardset import ShardSet
from peer.runner.sourcewatch import SourceWatch
from peer.source.rest import RestSource, RestSourceConfig
from peer.writer import TransactionalWriter
from tests.fixtures.kafka import TopicFactory, read_records

pytestmark = pytest.mark.kafka


class AbortRefusingProducer(Producer):
    """A real producer whose ``abort_transaction`` is refused, as librdkafka refuses it in
    an invalid transactional state."""

    def abort_transaction(self, *args: Any) -> None:
        raise KafkaException(
            KafkaError(
                KafkaError._STATE,
                "Producer attempted a transactional operation in an invalid state",
            )
        )


def test_a_producer_that_cannot_abort_is_replaced_and_the_work_redone_once(
    kafka_bootstrap: str, unique_topic: TopicFactory
) -> None:
    control, data = unique_topic(2), unique_topic(1)
    settings = PeerSettings(
        bootstrap=kafka_bootstrap,
        group="ctest",
        peer_id=uuid.uuid4().hex[:8],
        control_topic=control,
    )
    conf = producer_config(settings)
    made: list[Producer] = []

    def new_producer() -> Producer:
        made.append(AbortRefusingProducer(conf))  # every replacement refuses too: the bound
        return made[-1]

    writer = TransactionalWriter(
        AbortRefusingProducer(conf),
        control_topic=control,
        control_partitions=2,
        transactional_id=settings.transactional_id,
        operation_timeout=20.0,
    )
    writer.init()
    source = RestSource(RestSourceConfig(servers=parse_servers("127.0.0.1:9")))  # not started
    owned = ShardSet()
    metrics = PeerMetrics()
    containment = Containment(
        source=source,
        owned=lambda: owned,
        writer=lambda: writer,
        peer_id=settings.peer_id,
        quarantine=Quarantine(),
    )
    committer = Committer(
        settings=settings,
        writer=writer,
        new_producer=new_producer,
        watch=SourceWatch(
            source, peer_id=settings.peer_id, health=Health(), metrics=metrics, unready_after=60
        ),
        owned=owned,
        source=source,
        containment=containment,
        metrics=metrics,
        context={},
    )
    route = Route("/r/a", data)
    message = Message("/r/a", b"lost", 1, 1, "UPDATE")

    committer.ensure_txn()
    writer.write(message, route)
    committer.abort_and_redo()  # the abort is refused: a new producer takes over
    assert len(made) == 1
    assert metrics.value("mdpeer_producer_replacements_total") == 1
    assert not writer.transaction_open
    # The new producer works: its init_transactions fenced the old one and aborted what it
    # had open, so only the redone record becomes visible.
    committer.ensure_txn()
    writer.write(Message("/r/a", b"redone", 1, 1, "UPDATE"), route)
    writer.commit([], None)
    assert [r.value for r in read_records(kafka_bootstrap, data)] == [b"redone"]

    # Bounded: failing again and again within the window, the peer gives up (exit 2).
    for _ in range(REPLACE_MAX - 1):  # the replacements left in the window
        committer.ensure_txn()
        committer.abort_and_redo()
    assert len(made) == REPLACE_MAX
    committer.ensure_txn()
    with pytest.raises(PeerFatalError, match=f"failed {REPLACE_MAX} times"):
        committer.abort_and_redo()
    assert len(made) == REPLACE_MAX  # no fourth producer
