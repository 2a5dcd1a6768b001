"""Peer settings: defaults < config file < ``MDPEER_*`` environment < command-line flags.

The config file is TOML (see docs/CONFIG.md) or the vendor connector's JSON (its
``migratorydata.*`` source settings are used). Every value is checked when the settings are
built; an error names the setting as the operator wrote it (TOML key, env var or flag) and the
value. Secrets (entitlement token, Kafka passwords) come from a value or a file, are held as
:class:`peer.secret.Secret` and are revealed only inside the librdkafka dicts built here.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from peer.config import servers as source_servers
from peer.config.connector import (
    MAX_REPLICATION_FACTOR,
    MAX_TOPIC_PARTITIONS,
    check_topic_count,
    parse_servers,
)
from peer.config.servers import check_ca_file
from peer.errors import ConfigError
from peer.routes.model import validate_topic
from peer.secret import Secret

ENV_PREFIX: Final = "MDPEER_"
#: librdkafka properties from the environment: MDPEER_RDKAFKA_SASL_PASSWORD -> sasl.password
KAFKA_ENV_PREFIX: Final = "MDPEER_RDKAFKA_"
HIDDEN: Final = "***"
_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,200}")
_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: what a peer does about a target, dead-letter or audit topic that does not exist
TOPIC_CREATION_MODES: Final = ("cluster", "create", "never")
KAFKA_SECTIONS: Final = ("kafka", "kafka_producer", "kafka_consumer")
#: whether a peer uses MigratoryData's Python client as a doorbell (peer/source/doorbell.py)
DOORBELL_MODES: Final = ("auto", "on", "off")
#: the module name the vendor's Python client is downloaded as
DEFAULT_DOORBELL_MODULE: Final = "migratorydata_client_python"
_MODULE_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

#: librdkafka properties mdpeer sets itself; overriding them would break exactly-once or
#: the shard protocol, so the passthrough tables refuse them and say what to use instead.
MANAGED_KAFKA: Final = MappingProxyType(
    {
        "bootstrap.servers": "use the 'bootstrap' setting",
        "metadata.broker.list": "use the 'bootstrap' setting",
        "group.id": "use the 'group' setting",
        "transactional.id": "derived from 'group' and 'peer_id'",
        "group.instance.id": "use 'static_membership' (the peer id becomes the instance id)",
        "group.protocol": "use the 'group_protocol' setting",
        "partition.assignment.strategy": "use the 'assignment_strategy' setting",
        "session.timeout.ms": "use the 'session_timeout_ms' setting",
        "transaction.timeout.ms": "use the 'transaction_timeout_ms' setting",
        "enable.idempotence": "always true: exactly-once needs it",
        "acks": "always 'all': exactly-once needs it",
        "request.required.acks": "always 'all': exactly-once needs it",
        "isolation.level": "always read_committed: shard state must never see aborted records",
        "enable.auto.commit": "always false: offsets commit inside the transaction",
        "enable.auto.offset.store": "always false: offsets commit inside the transaction",
        "auto.offset.reset": "always earliest: shard state is rebuilt from the beginning",
    }
)


def is_secret_property(name: str) -> bool:
    """librdkafka properties whose values must never be shown."""
    return (
        "password" in name
        or "secret" in name
        or name in ("ssl.key.pem", "sasl.oauthbearer.config")
        or name.endswith("private.key.pem")
    )


KafkaProps = Mapping[str, str | Secret]


# --- the settings -----------------------------------------------------------------------------


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(name, value, "expected an integer")
    if not low <= value <= high:
        raise ConfigError(name, value, f"expected {low} to {high}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(name, value, f"expected one of: {', '.join(choices)}")


def _check_name(name: str, value: object, what: str) -> None:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ConfigError(name, value, f"{what}: 1 to 200 of ASCII letters, digits, '.', '_', '-'")


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """How to reach MigratoryData (the ``[source]`` table)."""

    servers: tuple[str, ...] = ()
    #: None: not given; the servers' scheme decides (see :attr:`effective_encryption`)
    encryption: bool | None = None
    token: Secret | None = None
    #: CA certificates (PEM) to verify the servers with, instead of the system's
    tls_ca_file: Path | None = None
    #: an idle subject is polled at growing intervals up to this
    poll_idle_max_ms: int = 1000
    request_timeout_ms: int = 10_000
    #: REST requests in flight at once
    max_concurrency: int = 16
    #: messages the source buffers before it stops fetching (backpressure)
    max_buffered_messages: int = 10_000
    #: MigratoryData's client as a doorbell: "auto" (when it imports), "on" (required), "off"
    doorbell: str = "auto"
    #: the module the client is imported from
    doorbell_module: str = DEFAULT_DOORBELL_MODULE
    #: with the doorbell working, an idle subject is still fetched this often
    poll_safety_interval_ms: int = 30_000

    def __post_init__(self) -> None:
        if self.servers:
            given: object = self.servers  # a "host:port,..." string is welcome too
            given = given if isinstance(given, str) else list(self.servers)
            object.__setattr__(self, "servers", parse_servers(given, "source.servers"))
        if self.encryption is not None and not isinstance(self.encryption, bool):
            raise ConfigError("source.encryption", self.encryption, "expected true or false")
        source_servers.resolve_encryption(
            source_servers.parse_servers(self.servers) if self.servers else (),
            self.encryption,
            encryption_field="source.encryption",
            servers_field="source.servers",
        )
        if self.token is not None and not isinstance(self.token, Secret):
            raise ConfigError("source.token", HIDDEN, "expected a Secret")
        if self.tls_ca_file is not None:
            object.__setattr__(
                self, "tls_ca_file", check_ca_file(self.tls_ca_file, "source.tls_ca_file")
            )
        _check_int("source.poll_idle_max_ms", self.poll_idle_max_ms, 50, 60_000)
        _check_int("source.request_timeout_ms", self.request_timeout_ms, 100, 300_000)
        _check_int("source.max_concurrency", self.max_concurrency, 1, 1024)
        _check_int("source.max_buffered_messages", self.max_buffered_messages, 1, 10_000_000)
        _check_choice("source.doorbell", self.doorbell, DOORBELL_MODES)
        if (
            not isinstance(self.doorbell_module, str)
            or len(self.doorbell_module) > 200
            or not _MODULE_RE.fullmatch(self.doorbell_module)
        ):
            raise ConfigError(
                "source.doorbell_module",
                self.doorbell_module,
                "expected a Python module name, e.g. migratorydata_client_python",
            )
        _check_int("source.poll_safety_interval_ms", self.poll_safety_interval_ms, 1000, 3_600_000)
        if self.poll_safety_interval_ms < self.poll_idle_max_ms:
            raise ConfigError(
                "source.poll_safety_interval_ms",
                self.poll_safety_interval_ms,
                f"must be at least poll_idle_max_ms ({self.poll_idle_max_ms}): the doorbell "
                "may only make idle polling rarer",
            )

    @property
    def effective_encryption(self) -> bool:
        """HTTPS or not: ``encryption`` when given, else the servers' scheme, else false."""
        servers = source_servers.parse_servers(self.servers) if self.servers else ()
        return source_servers.resolve_encryption(servers, self.encryption)

    def rest_settings(self) -> dict[str, object]:
        """The same settings in the names and units of ``RestSourceConfig.from_settings``.

        Every REST client (``mdpeer run``'s source, ``mdpeer status``'s head queries) is built
        from this, so they agree on the scheme.
        """
        return {
            "servers": list(self.servers),
            "encryption": self.effective_encryption,
            "token": self.token,
            "tls_ca_file": self.tls_ca_file,
            "max_concurrency": self.max_concurrency,
            "poll_idle_max": self.poll_idle_max_ms / 1000,
            "request_timeout": self.request_timeout_ms / 1000,
            "max_buffered_messages": self.max_buffered_messages,
        }


@dataclass(frozen=True, slots=True)
class PeerSettings:
    """Everything ``mdpeer run`` needs. Empty ``control_topic``/``peer_id`` take defaults."""

    bootstrap: str
    group: str = "mdpeer"
    control_topic: str = ""  # default f"{group}.control"
    peer_id: str = ""  # default: the host name
    static_membership: bool = False
    group_protocol: str = "classic"
    assignment_strategy: str = "cooperative-sticky"
    session_timeout_ms: int = 10_000
    source: SourceSettings = field(default_factory=SourceSettings)
    commit_interval_ms: int = 100
    max_batch: int = 10_000
    max_in_flight: int = 50_000
    transaction_timeout_ms: int = 10_000
    on_revoke_budget_ms: int = 5_000
    header_prefix: str = "md."
    audit_topic: str | None = None
    #: a missing target/dead-letter/audit topic: "cluster" (the brokers' auto-creation
    #: decides), "create" (mdpeer creates it) or "never" (the route stops until it exists)
    topic_creation: str = "cluster"
    #: partitions / replication factor of the topics mdpeer creates; -1: the broker's default
    topic_partitions: int = -1
    topic_replication_factor: int = -1
    #: the longest backoff between retries of a stopped (quarantined) subject
    blocked_retry_max_ms: int = 60_000
    #: with no MigratoryData server answering for this long, the peer reports not-ready
    source_unready_after_ms: int = 60_000
    metrics_port: int = 0
    metrics_host: str = "0.0.0.0"  # health checks come from outside the container
    log_level: str = "INFO"
    log_format: str = "json"
    routes_file: Path | None = None
    kafka: KafkaProps = field(default_factory=dict)
    kafka_producer: KafkaProps = field(default_factory=dict)
    kafka_consumer: KafkaProps = field(default_factory=dict)
    #: things the loader noticed and the CLI should print (e.g. ignored connector keys)
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.bootstrap, str) or not self.bootstrap.strip():
            raise ConfigError("bootstrap", self.bootstrap, "Kafka's bootstrap servers are needed")
        if any(not part.strip() or " " in part.strip() for part in self.bootstrap.split(",")):
            raise ConfigError("bootstrap", self.bootstrap, "expected host:port[,host:port...]")
        _check_name("group", self.group, "a group id")
        set_ = object.__setattr__
        if not self.control_topic:
            set_(self, "control_topic", f"{self.group}.control")
        validate_topic(self.control_topic, "control_topic")
        if not self.peer_id:
            set_(self, "peer_id", socket.gethostname())
        _check_name("peer_id", self.peer_id, "a peer id")
        if self.peer_id == "admin":
            # <group>-admin is the transactional id of the admin commands (peer.control.admin)
            raise ConfigError("peer_id", self.peer_id, "reserved for the admin commands")
        if not isinstance(self.static_membership, bool):
            raise ConfigError("static_membership", self.static_membership, "expected true or false")
        _check_choice("group_protocol", self.group_protocol, ("classic", "consumer"))
        _check_choice(
            "assignment_strategy",
            self.assignment_strategy,
            ("cooperative-sticky", "range", "roundrobin"),
        )
        _check_int("session_timeout_ms", self.session_timeout_ms, 1000, 3_600_000)
        if not isinstance(self.source, SourceSettings):
            raise ConfigError("source", self.source, "expected SourceSettings")
        _check_int("transaction_timeout_ms", self.transaction_timeout_ms, 1000, 900_000)
        _check_int("commit_interval_ms", self.commit_interval_ms, 1, 60_000)
        if self.commit_interval_ms * 2 > self.transaction_timeout_ms:
            raise ConfigError(
                "commit_interval_ms",
                self.commit_interval_ms,
                f"must be at most half of transaction_timeout_ms ({self.transaction_timeout_ms})"
                " so a transaction never outlives its timeout",
            )
        _check_int("on_revoke_budget_ms", self.on_revoke_budget_ms, 100, 900_000)
        if self.on_revoke_budget_ms >= self.transaction_timeout_ms:
            raise ConfigError(
                "on_revoke_budget_ms",
                self.on_revoke_budget_ms,
                f"must be below transaction_timeout_ms ({self.transaction_timeout_ms})",
            )
        _check_int("max_batch", self.max_batch, 1, 1_000_000)
        _check_int("max_in_flight", self.max_in_flight, 1, 10_000_000)
        if self.max_in_flight < self.max_batch:
            raise ConfigError(
                "max_in_flight",
                self.max_in_flight,
                f"must be at least max_batch ({self.max_batch}) or no batch could fill",
            )
        if (
            not isinstance(self.header_prefix, str)
            or len(self.header_prefix) > 64
            or any(c.isspace() or not c.isprintable() for c in self.header_prefix)
        ):
            raise ConfigError(
                "header_prefix", self.header_prefix, "up to 64 printable characters, no spaces"
            )
        if self.audit_topic is not None:
            validate_topic(self.audit_topic, "audit_topic")
            if self.audit_topic == self.control_topic:
                raise ConfigError("audit_topic", self.audit_topic, "must not be the control topic")
        _check_choice("topic_creation", self.topic_creation, TOPIC_CREATION_MODES)
        check_topic_count(self.topic_partitions, "topic_partitions", MAX_TOPIC_PARTITIONS)
        check_topic_count(
            self.topic_replication_factor, "topic_replication_factor", MAX_REPLICATION_FACTOR
        )
        _check_int("blocked_retry_max_ms", self.blocked_retry_max_ms, 1000, 3_600_000)
        _check_int("source_unready_after_ms", self.source_unready_after_ms, 1000, 3_600_000)
        _check_int("metrics_port", self.metrics_port, 0, 65535)
        if not isinstance(self.metrics_host, str) or not self.metrics_host:
            raise ConfigError("metrics_host", self.metrics_host, "expected a host or address")
        level = self.log_level.upper() if isinstance(self.log_level, str) else self.log_level
        _check_choice("log_level", level, _LOG_LEVELS)
        set_(self, "log_level", level)
        _check_choice("log_format", self.log_format, ("json", "text"))
        if self.routes_file is not None and not isinstance(self.routes_file, Path):
            raise ConfigError("routes_file", self.routes_file, "expected a path")
        for section in KAFKA_SECTIONS:
            set_(self, section, MappingProxyType(_check_kafka(section, getattr(self, section))))

    @property
    def transactional_id(self) -> str:
        return f"{self.group}-{self.peer_id}"

    def require_source(self) -> None:
        """``mdpeer run`` needs MigratoryData servers; admin commands do not."""
        if not self.source.servers:
            raise ConfigError(
                "source.servers",
                (),
                "no MigratoryData server: set --servers, MDPEER_SERVERS or [source] servers",
            )

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """Plain values (for ``mdpeer validate`` / status); secrets masked unless redact=False."""

        def plain(value: object) -> object:
            if isinstance(value, Secret):
                return HIDDEN if redact else value.reveal()
            if isinstance(value, SourceSettings):
                return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            if isinstance(value, Path):
                return str(value)
            return value

        return {f.name: plain(getattr(self, f.name)) for f in fields(self) if f.name != "notes"}


def _check_kafka(section: str, props: object) -> dict[str, str | Secret]:
    if not isinstance(props, Mapping):
        raise ConfigError(section, props, "expected a table of librdkafka properties")
    out: dict[str, str | Secret] = {}
    for name, value in props.items():
        label = f"{section}.{name}"
        if not isinstance(name, str) or not name or name != name.strip():
            raise ConfigError(section, name, "a librdkafka property name")
        if name in MANAGED_KAFKA:
            raise ConfigError(label, _shown(name, value), f"set by mdpeer: {MANAGED_KAFKA[name]}")
        if is_secret_property(name):
            if isinstance(value, str):
                out[name] = Secret(value, source=label)
            elif isinstance(value, Secret):
                out[name] = value
            else:
                raise ConfigError(label, HIDDEN, "expected a string")
        elif isinstance(value, str):
            out[name] = value
        else:
            raise ConfigError(label, value, "expected a string (the loader converts numbers)")
    return out


def _shown(name: str, value: object) -> object:
    return HIDDEN if is_secret_property(name) else value
