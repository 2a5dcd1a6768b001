"""The one place librdkafka configurations are built, and where every client gets its callbacks.

Every client mdpeer makes (the peer's transactional producer and group consumer, the
control-topic readers, admin clients and the admin commands' producer) is configured here
from :class:`~peer.config.settings.PeerSettings`: bootstrap, the ``[kafka]`` table and the
role's own table (``[kafka_producer]``, ``[kafka_consumer]``), with the properties
exactly-once depends on set last so nothing overrides them. :func:`with_callbacks` adds a
``logger`` (librdkafka's lines go through Python logging, not stderr) and an ``error_cb`` (a
client-wide error, e.g. all brokers down or an authentication failure, is logged with the
client's role instead of being lost, and a refused login is handed to whoever waits for
Kafka, :mod:`peer.kafka.refusals`). Secrets are revealed in these dicts: never log them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from confluent_kafka import KafkaError

from peer.config.settings import KafkaProps, PeerSettings
from peer.errors import ConfigError
from peer.kafka.refusals import Login, noticed
from peer.secret import Secret

log = logging.getLogger("peer.kafka")

#: a client-wide error of one kind is logged at most this often per client role
_ERROR_EVERY_S: Final = 30.0
#: errors librdkafka recovers from by itself (reconnects): info, not warning
_TRANSIENT: Final = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN})


def with_callbacks(conf: Mapping[str, Any], role: str) -> dict[str, Any]:
    """``conf`` plus the ``logger`` and ``error_cb`` every client gets (see the module doc)."""
    full = dict(conf)
    full.setdefault("logger", log)
    full.setdefault("error_cb", _error_reporter(role, Login.of(conf)))
    return full


def _error_reporter(role: str, login: Login) -> Callable[[KafkaError], None]:
    last: dict[int, float] = {}

    def report(err: KafkaError) -> None:
        noticed(err, login)  # a refused login: named where it is waited for (refusals)
        now = time.monotonic()
        code = err.code()
        if now - last.get(code, -_ERROR_EVERY_S) < _ERROR_EVERY_S:
            return
        last[code] = now
        level = (
            logging.ERROR
            if err.fatal()
            else logging.INFO
            if code in _TRANSIENT
            else logging.WARNING
        )
        log.log(
            level, "kafka client error: %s", err.str(), extra={"client": role, "code": err.name()}
        )

    return report


#: properties that name a file librdkafka reads when a client is created
_FILE_PROPS: Final = frozenset(
    {
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.keystore.location",
        "ssl.crl.location",
        "sasl.kerberos.keytab",
    }
)


def _reveal(props: KafkaProps, section: str = "kafka") -> dict[str, str]:
    out = {k: v.reveal() if isinstance(v, Secret) else v for k, v in props.items()}
    for name in _FILE_PROPS & out.keys():
        # Else librdkafka refuses to create the client with an OpenSSL code ("BIO lib").
        path = Path(out[name])
        if out[name] != "probe" and not path.exists():
            raise ConfigError(f"{section}.{name}", out[name], "no such file or directory")
        if path.exists() and not os.access(path, os.R_OK):
            raise ConfigError(f"{section}.{name}", out[name], "not readable by this user")
    return out


def principal_of(settings: PeerSettings) -> str | None:
    """``User:<name>`` when the settings' login decides it (SASL PLAIN / SCRAM), for naming
    a missing ACL; None for a TLS certificate, Kerberos or OAuth principal."""
    login = {k: str(v) for k, v in settings.kafka.items() if not isinstance(v, Secret)}
    return Login.of({**login, "bootstrap.servers": settings.bootstrap}).principal


def producer_config(settings: PeerSettings) -> dict[str, str | int | bool]:
    """The transactional producer's librdkafka config (secrets revealed: do not log it)."""
    conf: dict[str, str | int | bool] = {
        "client.id": f"mdpeer-{settings.peer_id}",
        # A record is visible only once its transaction commits, and the commit sends what
        # still lingers: batching up to half the commit interval (at most 50 ms) delays no
        # record past its commit and halves librdkafka's work per message in a backlog
        # (docs/PERFORMANCE.md, issue 14).
        "linger.ms": min(50, max(5, settings.commit_interval_ms // 2)),
        # Room for checkpoint and dead-letter records besides the data kept in flight.
        "queue.buffering.max.messages": max(100_000, settings.max_in_flight * 2),
        # The writer sets partitions itself (Java's murmur2); this keeps any record it does
        # not place on the same partition a Java client would choose.
        "partitioner": "murmur2_random",
        # The writer learns a failed delivery from its callback; a successful one needs no
        # Python call per record (the transaction's commit is the proof of delivery).
        "delivery.report.only.error": True,
    }
    conf.update(_reveal(settings.kafka))
    conf.update(_reveal(settings.kafka_producer, "kafka_producer"))
    conf.update(
        {
            "bootstrap.servers": settings.bootstrap,
            "transactional.id": settings.transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "transaction.timeout.ms": settings.transaction_timeout_ms,
            # topic_creation = "cluster": asking for a topic is what lets brokers with
            # auto.create.topics.enable create it (peer.writer.topics); otherwise never.
            "allow.auto.create.topics": settings.topic_creation == "cluster",
        }
    )
    return conf


def consumer_config(settings: PeerSettings) -> dict[str, str | int | bool]:
    """The control-topic consumer's librdkafka config (secrets revealed: do not log it)."""
    conf: dict[str, str | int | bool] = {"client.id": f"mdpeer-{settings.peer_id}"}
    conf.update(_reveal(settings.kafka))
    conf.update(_reveal(settings.kafka_consumer, "kafka_consumer"))
    conf.update(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": settings.group,
            "group.protocol": settings.group_protocol,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
    )
    if settings.group_protocol == "classic":
        # With KIP-848 the broker assigns and times out members; these are refused there.
        conf["partition.assignment.strategy"] = settings.assignment_strategy
        conf["session.timeout.ms"] = settings.session_timeout_ms
        conf["heartbeat.interval.ms"] = min(1000, settings.session_timeout_ms // 3)
    if settings.static_membership:
        conf["group.instance.id"] = settings.peer_id
    return conf


def admin_config(settings: PeerSettings) -> dict[str, str | int | bool]:
    """An AdminClient's librdkafka config: the shared ``[kafka]`` properties (security)
    and the bootstrap servers (secrets revealed: do not log it)."""
    conf: dict[str, str | int | bool] = {"client.id": f"mdpeer-{settings.peer_id}-admin"}
    conf.update(_reveal(settings.kafka))
    conf["bootstrap.servers"] = settings.bootstrap
    return conf


def section_config(settings: PeerSettings, section: str = "kafka") -> dict[str, Any]:
    """An admin command's client: bootstrap, the shared ``[kafka]`` table and ``section``'s
    own (``kafka_producer`` for its producer, ``kafka_consumer`` for its readers)."""
    conf: dict[str, Any] = {"client.id": "mdpeer-admin"}
    conf.update(_reveal(settings.kafka))
    if section != "kafka":
        conf.update(_reveal(getattr(settings, section), section))
    conf["bootstrap.servers"] = settings.bootstrap
    if section == "kafka_consumer":
        conf["group.id"] = settings.group
    return conf


#: group-membership properties a base consumer config may carry that an assign-only reader
#: must not use (a static member id would fence the peer that owns it)
_GROUP_ONLY: Final = frozenset(
    {
        "group.instance.id",
        "group.protocol",
        "group.remote.assignor",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "enable.auto.offset.store",
    }
)


def reader_config(base: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (e.g. ``consumer_config(settings)``) turned into an assign-only reader's."""
    conf = {k: v for k, v in base.items() if k not in _GROUP_ONLY}
    # librdkafka wants a group id even for assign(), and looks up that group's coordinator
    # (FindCoordinator: Describe on the group). The deployment's own group, which its
    # principals may describe anyway: a group of its own would need one more ACL (a prefix)
    # for every reader. An assign-only consumer never joins, commits or leaves the group.
    conf.update(
        {
            "group.id": conf.get("group.id") or "mdpeer",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # never create the control topic by looking it up
            "allow.auto.create.topics": False,
        }
    )
    return with_callbacks(conf, "reader")


#: how long one ``poll`` of :func:`drain` may block
_DRAIN_SLICE_S: Final = 0.1


def drain(producer: Any, timeout: float) -> int:
    """Serve ``producer``'s delivery reports until nothing is queued or ``timeout`` passed;
    how many messages and requests are left. What ``flush`` does, by ``poll``: on a fenced
    transactional producer ``flush`` enters the delivery callbacks with an exception already
    set, and the first call they make into the client raises ``SystemError``
    (docs/RELIABILITY.md, finding 12)."""
    deadline = time.monotonic() + timeout
    while len(producer) > 0:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        producer.poll(min(left, _DRAIN_SLICE_S))
    return len(producer)


__all__ = [
    "admin_config",
    "consumer_config",
    "drain",
    "principal_of",
    "producer_config",
    "reader_config",
    "section_config",
    "with_callbacks",
]
