"""What the cluster lets this peer do: checked at start, named when refused (docs/SECURITY.md).

A peer needs, besides its topics: Read on its group, Read and Write on the control topic,
and Write on its transactional id. Without one of them it can do nothing useful, and no
retry helps: it stops (exit 2) with the missing ACL named, e.g. ``not authorized: Write on
TransactionalId 'g-p1' for User:peer (grant it: mdpeer acls --group g --principal User:peer
--apply)``. The checks here make that quick: the control topic's rights are asked at start
(``describe_topics`` with the principal's authorized operations), rather than found out by
a first commit that would only abort, again and again, while the peer looks healthy.

A target, dead-letter or audit topic is different: its routes stop (``topic_unauthorized``,
:mod:`peer.writer.topics`) and the rest flows.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from peer.config.settings import PeerSettings
from peer.control.reader import ControlTopicMissingError, kafka_unavailable
from peer.kafka.clients import admin_config, principal_of, with_callbacks
from peer.kafka.errors import NotAuthorizedError, not_authorized
from peer.kafka.refusals import list_topics
from peer.writer.topics import TopicCatalog, TopicCreation, TopicPolicy

#: how long the first metadata request of a peer may take
_START_TIMEOUT_S = 30.0


def topic_catalog(producer: Producer, settings: PeerSettings) -> TopicCatalog:
    """The writer's topics, with an admin client that asks the principal's rights."""
    s = settings
    return TopicCatalog(
        producer,
        policy=TopicPolicy(
            TopicCreation(s.topic_creation), s.topic_partitions, s.topic_replication_factor
        ),
        admin=AdminClient(with_callbacks(admin_config(s), "admin")),
        principal=principal_of(s),
    )


def named(exc: NotAuthorizedError, settings: PeerSettings) -> NotAuthorizedError:
    """``exc`` with the names a Kafka error leaves out: transactional id, group, principal."""
    name = {
        "TransactionalId": settings.transactional_id,
        "Group": settings.group,
        "Topic": settings.control_topic,
    }.get(exc.resource_type)
    return exc.named(name=name, principal=principal_of(settings), group=settings.group)


def control_partitions(producer: Producer, topics: TopicCatalog, settings: PeerSettings) -> int:
    """The control topic's partition count, once it is known that this peer may read and
    write it. A login the cluster refuses is named within a second (refusals.list_topics)."""
    topic = settings.control_topic
    try:
        md = list_topics(producer, _START_TIMEOUT_S)
    except KafkaException as exc:
        raise kafka_unavailable(settings.bootstrap, _START_TIMEOUT_S, exc) from None
    ops = topics.operations(topic)
    if ops is not None:
        for needed in ("READ", "WRITE"):
            if needed not in ops:
                denied = NotAuthorizedError(needed.capitalize(), "Topic", topic)
                raise named(denied, settings)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise ControlTopicMissingError(topic)
    return len(meta.partitions)


def consumer_error(err: KafkaError, settings: PeerSettings) -> NotAuthorizedError | None:
    """The group consumer's error as the missing ACL it stands for (None: it is none)."""
    if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        denied = not_authorized(err, "Read", settings.control_topic)
    else:
        denied = not_authorized(err)  # the group: Read
    return named(denied, settings) if denied is not None else None


__all__ = ["consumer_error", "control_partitions", "named", "topic_catalog"]
