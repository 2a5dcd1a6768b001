"""The ACLs a deployment's principals need, found by experiment on a secured Kafka
(docs/SECURITY.md says how), and granting them (``mdpeer acls``).

Two roles:

* ``peer`` -- what ``mdpeer run`` needs: Read on its group; Read and Write on the control
  topic; Write on its transactional ids (``<group>-<peer id>``, by prefix unless the peer ids
  are given); Write on every target, dead-letter and audit topic, and DescribeConfigs on
  the target and dead-letter topics (to learn a topic's ``max.message.bytes`` after it
  refused a batch as too large: without it those subjects stop with ``record_too_large``
  instead). With ``create_topics``: Create on those topics, for ``topic_creation =
  "create"``, or ``"cluster"`` where the brokers create topics on first use.
* ``admin`` -- what the admin commands need: Read on the control topic and Describe on the
  group (every command reads the control topic; ``status`` describes the group); Write on
  the control topic and on the transactional id ``<group>-admin`` (the commands that change
  routes or reset checkpoints); Create and DescribeConfigs on the control topic (``init``);
  Describe on the target topics (to say which are missing); with ``create_topics``, Create on
  them (``--create-topics``).

Not needed, as the experiments showed (docs/SECURITY.md): IdempotentWrite on the cluster
(a transactional producer is authorized by its transactional id), Describe on the group or
the control topic besides Read or Write (Kafka counts Describe in), any ACL on the
consumer-offsets or transaction-state topics.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from peer.errors import MdpeerError
from peer.kafka.errors import kafka_error_of, not_authorized
from peer.routes.model import Oversize, Route

ROLES: Final = ("peer", "admin")
#: how often ``apply`` asks whether the broker authorizes with the ACLs it just created
_IN_FORCE_POLL_S: Final = 0.2
_RESOURCE: Final = {
    "Topic": (ResourceType.TOPIC, "--topic"),
    "Group": (ResourceType.GROUP, "--group"),
    "TransactionalId": (ResourceType.TRANSACTIONAL_ID, "--transactional-id"),
    "Cluster": (ResourceType.BROKER, "--cluster"),
}


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    """One ALLOW ACL for a principal (host ``*``), and why it is needed."""

    resource_type: str
    name: str
    operation: str
    prefixed: bool = False
    why: str = field(default="", compare=False)

    def kafka_acls(self, principal: str, bootstrap: str, command_config: str) -> str:
        """The ``kafka-acls`` command line that adds it (Kafka's own tool)."""
        flag = _RESOURCE[self.resource_type][1]
        resource = flag if self.resource_type == "Cluster" else f"{flag} {_quote(self.name)}"
        pattern = " --resource-pattern-type prefixed" if self.prefixed else ""
        return (
            f"kafka-acls --bootstrap-server {bootstrap} --command-config {command_config} "
            f"--add --allow-principal {principal} --operation {self.operation} "
            f"{resource}{pattern}"
        )

    def binding(self, principal: str) -> AclBinding:
        """The admin API's form (``AdminClient.create_acls``)."""
        return AclBinding(
            _RESOURCE[self.resource_type][0],
            self.name,
            ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL,
            principal,
            "*",
            AclOperation[_snake(self.operation)],
            AclPermissionType.ALLOW,
        )

    def to_dict(self, principal: str, bootstrap: str, command_config: str) -> dict[str, Any]:
        return {
            "resource_type": self.resource_type,
            "name": self.name,
            "pattern": "PREFIXED" if self.prefixed else "LITERAL",
            "operation": self.operation,
            "why": self.why,
            "kafka_acls": self.kafka_acls(principal, bootstrap, command_config),
        }


def route_topics(routes: Iterable[Route]) -> tuple[list[str], list[str]]:
    """(target topics, dead-letter topics) of ``routes``, each once, sorted."""
    targets, dead = set(), set()
    for route in routes:
        targets.add(route.topic)
        if route.on_oversize is Oversize.DEAD_LETTER and route.dead_letter_topic is not None:
            dead.add(route.dead_letter_topic)
    return sorted(targets), sorted(dead - targets)


def peer_acls(
    group: str,
    control_topic: str,
    topics: Sequence[str],
    *,
    audit_topic: str | None = None,
    peer_ids: Sequence[str] = (),
    create_topics: bool = False,
) -> list[Acl]:
    """What ``mdpeer run`` needs (module doc). ``topics``: the target and dead-letter ones."""
    acls = [
        Acl("Group", group, "Read", why="join the group (shard ownership); commit offsets"),
        Acl("Topic", control_topic, "Read", why="rebuild shards; routes and commands"),
        Acl("Topic", control_topic, "Write", why="checkpoints and notes, in each transaction"),
    ]
    if peer_ids:
        acls += [
            Acl("TransactionalId", f"{group}-{p}", "Write", why=f"the producer of peer {p}")
            for p in peer_ids
        ]
    else:
        acls.append(
            Acl(
                "TransactionalId",
                f"{group}-",
                "Write",
                prefixed=True,
                why="the producer <group>-<peer id> of every peer",
            )
        )
    for topic in topics:
        acls.append(Acl("Topic", topic, "Write", why="records of its routes"))
        acls.append(
            Acl("Topic", topic, "DescribeConfigs", why="learn max.message.bytes when refused")
        )
    if audit_topic and audit_topic not in topics:
        acls.append(Acl("Topic", audit_topic, "Write", why="gap audit records"))
    if create_topics:
        every = [*topics, *([audit_topic] if audit_topic and audit_topic not in topics else [])]
        acls += [Acl("Topic", t, "Create", why="create it when missing") for t in every]
    return acls


def admin_acls(
    group: str, control_topic: str, topics: Sequence[str], *, create_topics: bool = False
) -> list[Acl]:
    """What the admin commands need (module doc). ``topics``: every topic routes name."""
    acls = [
        Acl("Topic", control_topic, "Read", why="every command reads the control topic"),
        Acl("Group", group, "Describe", why="reading the control topic; status"),
        Acl("Topic", control_topic, "Write", why="routes apply/add/remove, checkpoints reset"),
        Acl(
            "TransactionalId",
            f"{group}-admin",
            "Write",
            why="the admin commands' transactional producer",
        ),
        Acl("Topic", control_topic, "Create", why="init creates the control topic"),
        Acl("Topic", control_topic, "DescribeConfigs", why="init checks it is compacted"),
    ]
    acls += [Acl("Topic", t, "Describe", why="tell whether it exists") for t in topics]
    if create_topics:
        acls += [Acl("Topic", t, "Create", why="--create-topics") for t in topics]
    return acls


def any_filter(principal: str) -> AclBindingFilter:
    """Every ACL of ``principal``."""
    wildcard: Any = None  # a filter's "any" (the type stubs want a str)
    return AclBindingFilter(
        ResourceType.ANY,
        wildcard,
        ResourcePatternType.ANY,
        principal,
        wildcard,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )


def existing(admin: AdminClient, principal: str, timeout: float) -> set[AclBinding]:
    """The ACLs ``principal`` has (needs Describe on the cluster)."""
    try:
        found = admin.describe_acls(any_filter(principal), request_timeout=timeout).result(timeout)
    except KafkaException as exc:
        raise _refused(exc, "Describe") from None
    return set(found)


def apply(
    admin: AdminClient, principal: str, acls: Iterable[Acl], timeout: float
) -> tuple[list[Acl], list[Acl]]:
    """Create ``acls`` for ``principal`` (needs Alter on the cluster); idempotent.

    Returns (added, already there)."""
    have = existing(admin, principal, timeout)
    wanted = sorted(set(acls))
    missing = [a for a in wanted if a.binding(principal) not in have]
    if missing:
        futures = admin.create_acls(
            [a.binding(principal) for a in missing], request_timeout=timeout
        )
        for future in futures.values():
            try:
                future.result(timeout)
            except KafkaException as exc:
                raise _refused(exc, "Alter") from None
        _wait_in_force(admin, principal, {a.binding(principal) for a in missing}, timeout)
    return missing, [a for a in wanted if a not in missing]


def _wait_in_force(
    admin: AdminClient, principal: str, added: set[AclBinding], timeout: float
) -> None:
    # The controller acknowledges new ACLs once they are in the metadata log; a broker
    # authorizes with them a moment later, when it has applied that log. The next command
    # (`init` right after `acls --apply`) must not be refused in between.
    deadline = time.monotonic() + timeout
    while not added <= existing(admin, principal, timeout):
        if time.monotonic() >= deadline:
            raise MdpeerError(
                f"the ACLs of {principal} were created but the broker did not show them "
                f"within {timeout:g}s",
                hint="run the command again: what is there is not added twice",
            )
        time.sleep(_IN_FORCE_POLL_S)


def _refused(exc: KafkaException, operation: str) -> Exception:
    err = kafka_error_of(exc)
    if not_authorized(err) is None:
        return exc
    # ACLs are the cluster's: seeing them needs Describe on it, adding them Alter (a super
    # user has both). No `mdpeer acls` can grant that: the cluster's own admin does.
    return MdpeerError(
        f"not authorized: {operation} on Cluster 'kafka-cluster' ({err.str() if err else exc})",
        hint="run it as a cluster admin (a super user, or a principal with Describe and Alter "
        "on the cluster), e.g. with --config admin.toml or MDPEER_RDKAFKA_SASL_USERNAME",
    )


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).upper()


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9._-]+", name) else f"'{name}'"


__all__ = [
    "ROLES",
    "Acl",
    "admin_acls",
    "any_filter",
    "apply",
    "existing",
    "peer_acls",
    "route_topics",
]
