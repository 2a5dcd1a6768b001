"""The peers' consumer group as Kafka's describe API shows it: members and the shards each owns
(for ``mdpeer status``; reading it never joins the group)."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from peer.control.reader import DEFAULT_TIMEOUT, kafka_unavailable
from peer.kafka.errors import is_retriable, kafka_error_of, not_authorized


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One peer in the group. Peers set ``client.id = mdpeer-<peer id>``."""

    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    #: control partitions (shards) assigned to it
    shards: tuple[int, ...]

    @property
    def peer(self) -> str:
        return self.client_id.removeprefix("mdpeer-")


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group: str
    #: the broker's group state (e.g. STABLE, PREPARING_REBALANCE, EMPTY, DEAD)
    state: str
    members: tuple[GroupMember, ...]

    def owners(self) -> dict[int, GroupMember]:
        """shard → member that owns it (shards of no member are absent)."""
        return {s: m for m in self.members for s in m.shards}


def describe_group(
    admin: AdminClient,
    group: str,
    topic: str,
    *,
    bootstrap: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> GroupInfo:
    """Members of the peers' consumer group and the control shards each owns (for status)."""
    # A group that is forming answers NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS at once:
    # retriable, so ask again within the time budget instead of calling Kafka unreachable.
    retrying = Retrying(
        retry=retry_if_exception(is_retriable),
        stop=stop_after_delay(timeout),
        wait=wait_random_exponential(multiplier=0.05, max=0.5),
        reraise=True,
    )
    try:
        desc = retrying(
            lambda: admin.describe_consumer_groups([group], request_timeout=timeout)[group].result(
                timeout
            )
        )
    except KafkaException as exc:
        denied = not_authorized(kafka_error_of(exc), "Describe", group)
        raise denied or kafka_unavailable(bootstrap, timeout, exc) from None
    members = []
    for m in desc.members:
        tps = m.assignment.topic_partitions if m.assignment is not None else []
        shards = tuple(sorted(tp.partition for tp in tps if tp.topic == topic))
        members.append(GroupMember(m.member_id, m.client_id, m.host, m.group_instance_id, shards))
    members.sort(key=lambda m: (m.client_id, m.member_id))
    state = getattr(desc.state, "name", str(desc.state))
    return GroupInfo(group, state, tuple(members))


__all__ = ["GroupInfo", "GroupMember", "describe_group"]
