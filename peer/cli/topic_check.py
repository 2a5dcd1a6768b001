"""Which topics a deployment's routes need that do not exist, and what will happen to them.

``routes apply``, ``routes add``, ``init --from-connector`` and ``validate --bootstrap`` name
every target, dead-letter and audit topic that does not exist, and say what the peers will
do about it under their ``topic_creation`` setting (peer.writer.topics): the cluster creates
it on first use (when its brokers allow it: ``auto.create.topics.enable``, asked of the
cluster when it lets us), mdpeer creates it, or its routes stop until it exists.
``--create-topics`` creates them now, with ``topic_partitions`` / ``topic_replication_factor``
(the broker's defaults when -1), as Kafka's own ``kafka-topics --create`` would.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Final

import typer
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from peer.cli.options import Deployment
from peer.control.admin import admin_client
from peer.control.reader import KafkaUnavailableError
from peer.errors import MdpeerError
from peer.kafka.errors import kafka_error_of
from peer.routes.model import Oversize, RouteTable

#: how long a created topic may take to show in the metadata before the command goes on
_CREATED_WAIT_S: Final = 10.0

CreateTopics = Annotated[
    bool,
    typer.Option(
        "--create-topics",
        help="Create the target, dead-letter and audit topics that do not exist yet "
        "(topic_partitions / topic_replication_factor, else the broker's defaults).",
    ),
]


class TopicCreateError(MdpeerError):
    """``--create-topics`` could not create a topic; nothing of the routes was written."""


@dataclass(frozen=True, slots=True)
class MissingTopic:
    topic: str
    #: what uses it: "target of /a/b", "dead-letter of /c/d", "audit"
    used_by: tuple[str, ...]
    #: what the peers will do about it
    fate: str
    #: its routes will stop until someone creates it
    blocking: bool = False
    #: False: it may exist, but this principal may not describe it (no Describe ACL)
    visible: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "used_by": list(self.used_by),
            "fate": self.fate,
            "blocking": self.blocking,
            "visible": self.visible,
        }

    def line(self) -> str:
        users = ", ".join(self.used_by[:3]) + (
            f" (+{len(self.used_by) - 3})" if len(self.used_by) > 3 else ""
        )
        state = "does not exist" if self.visible else "is not visible"
        return f"topic {self.topic} {state} ({users}): {self.fate}"


def needed_topics(table: RouteTable, audit_topic: str | None) -> dict[str, list[str]]:
    """topic -> what uses it, for every route of ``table`` and the audit topic."""
    users: dict[str, list[str]] = {}
    for route in table.routes():
        users.setdefault(route.topic, []).append(f"target of {route.subject}")
        if route.on_oversize is Oversize.DEAD_LETTER and route.dead_letter_topic is not None:
            users.setdefault(route.dead_letter_topic, []).append(f"dead-letter of {route.subject}")
    if audit_topic:
        users.setdefault(audit_topic, []).append("audit")
    return users


def missing_topics(dep: Deployment, table: RouteTable) -> list[MissingTopic]:
    """The topics ``table`` (and the audit topic) need that the cluster does not have."""
    users = needed_topics(table, dep.settings.audit_topic)
    if not users:
        return []
    admin = admin_client(dep.client_conf())
    try:
        # All topics: a lookup naming one would let the cluster create it right now.
        existing = set(admin.list_topics(timeout=dep.timeout).topics)
    except KafkaException as exc:
        err = kafka_error_of(exc)
        detail = err.str() if err is not None else str(exc)
        raise KafkaUnavailableError(dep.bootstrap, dep.timeout, detail) from None
    absent = sorted(t for t in users if t not in existing)
    if not absent:
        return []
    hidden = _hidden(admin, absent, dep.timeout)
    fate, blocking = _fate(dep, admin) if set(absent) - hidden else ("", False)
    unseen = (
        "the admin's principal may not Describe it, so whether it exists cannot be told "
        "(grant Describe on it: docs/SECURITY.md)"
    )
    return [
        MissingTopic(t, tuple(users[t]), unseen, visible=False)
        if t in hidden
        else MissingTopic(t, tuple(users[t]), fate, blocking)
        for t in absent
    ]


def _hidden(admin: AdminClient, topics: list[str], timeout: float) -> set[str]:
    """Of ``topics`` (absent from the metadata), those the cluster will not describe to this
    principal: a topic one may not Describe is left out of the metadata, as a missing one."""
    futures = admin.describe_topics(TopicCollection(topics), request_timeout=timeout)
    hidden = set()
    for topic, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            err = kafka_error_of(exc)
            if err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                hidden.add(topic)
    return hidden


def _fate(dep: Deployment, admin: AdminClient) -> tuple[str, bool]:
    """What the peers will do about a missing topic, and whether its routes will stop."""
    s = dep.settings
    now = "--create-topics creates it now"
    if s.topic_creation == "never":
        why = "its routes stop at their checkpoints until it exists (topic_creation = never)"
        return f"{why}; {now}", True
    if s.topic_creation == "create":
        return "the peers create it on first use (topic_creation = create)", False
    auto = _broker_auto_create(admin, dep.timeout)
    if auto is True:
        return "the cluster creates it on first use (auto.create.topics.enable=true)", False
    if auto is False:
        why = "the cluster will NOT create it (auto.create.topics.enable=false): its routes stop"
        return f"{why} until it exists; {now}", True
    why = "asked of the cluster on first use; created only if its brokers allow it"
    return f"{why} (auto.create.topics.enable: could not tell); {now}", False


def _broker_auto_create(admin: AdminClient, timeout: float) -> bool | None:
    """The brokers' ``auto.create.topics.enable``, or None when they will not tell us."""
    try:
        brokers = admin.list_topics(timeout=timeout).brokers
        broker = min(brokers) if brokers else None
        if broker is None:
            return None
        resource = ConfigResource(ConfigResource.Type.BROKER, str(broker))
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(
            timeout
        )
        return str(entries["auto.create.topics.enable"].value).lower() == "true"
    except (KafkaException, KeyError, ValueError):
        return None  # e.g. no DescribeConfigs ACL on the cluster: say so instead of guessing


def create_topics(dep: Deployment, missing: Iterable[MissingTopic]) -> list[str]:
    """Create ``missing`` (all or an error naming the first that failed); waits until each
    shows in the metadata. Returns the topics created."""
    names = [m.topic for m in missing]
    if not names:
        return []
    s = dep.settings
    admin = admin_client(dep.client_conf())
    specs = [
        NewTopic(
            name,
            num_partitions=s.topic_partitions,
            replication_factor=s.topic_replication_factor,
        )
        for name in names
    ]
    futures = admin.create_topics(specs, request_timeout=dep.timeout)
    for name in names:
        try:
            futures[name].result(dep.timeout)
        except KafkaException as exc:
            err = kafka_error_of(exc)
            if err is not None and err.name() == "TOPIC_ALREADY_EXISTS":
                continue
            raise TopicCreateError(
                f"topic {name!r} could not be created: {err.str() if err else exc}",
                hint="check topic_partitions / topic_replication_factor and the principal's "
                "Create ACL; nothing of the routes was written",
            ) from None
    deadline = time.monotonic() + _CREATED_WAIT_S
    while time.monotonic() < deadline:
        shown = admin.list_topics(timeout=dep.timeout).topics
        if all(name in shown and shown[name].partitions for name in names):
            break
        time.sleep(0.1)
    return names


def check_and_report(
    dep: Deployment, table: RouteTable, *, create: bool, dry_run: bool, json_out: bool
) -> dict[str, Any]:
    """Name the missing topics on stderr (or in the JSON result); create them if asked."""
    missing = missing_topics(dep, table)
    created: list[str] = []
    if create and not dry_run:
        created = create_topics(dep, missing)
    if not json_out:
        for m in missing:
            if m.topic in created:
                typer.echo(f"created topic {m.topic} ({', '.join(m.used_by[:3])})", err=True)
            else:
                typer.echo(f"{'warning' if m.blocking else 'note'}: {m.line()}", err=True)
    return {
        "missing_topics": [m.to_dict() for m in missing if m.topic not in created],
        "created_topics": created,
    }


__all__ = [
    "CreateTopics",
    "MissingTopic",
    "TopicCreateError",
    "check_and_report",
    "create_topics",
    "missing_topics",
    "needed_topics",
]
