"""The shape of a local cluster: nodes, ports, ids, broker configs and the state file.

A data directory holds one cluster::

    <data>/localkafka.json        state: layout + pids (read by `down`/`status` from any shell)
    <data>/log4j2.properties      shared logging config
    <data>/node-<id>/server.properties
    <data>/node-<id>/data/        log.dirs (the KRaft metadata log lives here too)
    <data>/node-<id>/logs/        server.log (log4j2) and stdout.log (JVM output)
    <data>/secure/                a secured cluster's CA, key and passwords (secure.py)
"""

from __future__ import annotations

import base64
import errno
import json
import os
import random
import socket
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from peer.errors import ConfigError, LocalKafkaError

STATE_FILE: Final = "localkafka.json"
LOG4J_FILE: Final = "log4j2.properties"
STATE_VERSION: Final = 1
HOST: Final = "127.0.0.1"
#: controller (KRaft quorum) ports default to the client port plus this
CONTROLLER_PORT_OFFSET: Final = 100
#: a secured cluster's inter-broker (INTERNAL) listener: the client port plus this
INTERNAL_PORT_OFFSET: Final = 200
MAX_HEAP_MB: Final = 512


class PortInUseError(LocalKafkaError):
    """A port the cluster needs is already taken."""

    def __init__(self, port: int, role: str) -> None:
        self.port = port
        self.role = role
        super().__init__(
            f"port {port} ({role}) on {HOST} is already in use",
            hint="stop what listens there (`mdpeer kafka down` if it is an earlier local "
            "Kafka), or pick other ports with --port",
        )


def kafka_uuid() -> str:
    """A random id in Kafka's text form (url-safe base64, no padding, not starting with '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Like Kafka's own ids: one starting with '-' would read as a flag to the storage tool.
        if not text.startswith("-"):
            return text


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One combined broker+controller node."""

    id: int
    port: int
    controller_port: int
    #: the directory id of its metadata log dir (needed by --initial-controllers)
    dir_id: str
    #: a secured cluster's inter-broker listener (None: the client listener serves it)
    internal_port: int | None = None

    def __post_init__(self) -> None:
        for name in ("port", "controller_port", "internal_port"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 65535:
                raise ConfigError(f"node {self.id} {name}", value, "must be in 1..65535")

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """Everything fixed when storage is formatted. Reused as long as it is unchanged."""

    cluster_id: str
    kafka_version: str
    nodes: tuple[NodeSpec, ...]

    def __post_init__(self) -> None:
        if len(self.nodes) not in (1, 3):
            raise ConfigError("nodes", len(self.nodes), "must be 1 or 3")

    @classmethod
    def new(
        cls,
        *,
        nodes: int,
        port: int,
        controller_port: int | None,
        kafka_version: str,
        secure: bool = False,
    ) -> ClusterLayout:
        """A fresh layout: node ids 1..n on consecutive client and controller ports.

        ``secure``: nodes also get an inter-broker port each, from ``port + 200``.
        """
        if nodes not in (1, 3):
            raise ConfigError("nodes", nodes, "must be 1 (single node) or 3 (a real quorum)")
        cport = port + CONTROLLER_PORT_OFFSET if controller_port is None else controller_port
        clients = set(range(port, port + nodes))
        controllers = set(range(cport, cport + nodes))
        if clients & controllers:
            raise ConfigError(
                "controller_port", cport, f"overlaps the client ports {port}..{port + nodes - 1}"
            )
        iport = port + INTERNAL_PORT_OFFSET
        if secure and set(range(iport, iport + nodes)) & controllers:
            raise ConfigError(
                "controller_port",
                cport,
                f"overlaps the internal ports {iport}..{iport + nodes - 1} of a secured cluster",
            )
        specs = tuple(
            NodeSpec(
                id=i + 1,
                port=port + i,
                controller_port=cport + i,
                dir_id=kafka_uuid(),
                internal_port=iport + i if secure else None,
            )
            for i in range(nodes)
        )
        return cls(cluster_id=kafka_uuid(), kafka_version=kafka_version, nodes=specs)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def node(self, node_id: int) -> NodeSpec:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise LocalKafkaError(
            f"node {node_id} is not part of this cluster (nodes: "
            f"{', '.join(str(n.id) for n in self.nodes)})"
        )

    def same_shape(self, other: ClusterLayout) -> bool:
        """Whether ``other`` asks for the same nodes on the same ports (ids aside)."""
        return [(n.id, n.port, n.controller_port, n.internal_port) for n in self.nodes] == [
            (n.id, n.port, n.controller_port, n.internal_port) for n in other.nodes
        ]

    @property
    def secure(self) -> bool:
        """Whether this is a secured cluster's layout (internal listeners of their own)."""
        return any(n.internal_port is not None for n in self.nodes)

    def initial_controllers(self) -> str:
        """The ``--initial-controllers`` argument of ``kafka-storage format``."""
        return ",".join(f"{n.id}@{HOST}:{n.controller_port}:{n.dir_id}" for n in self.nodes)


def broker_settings(layout: ClusterLayout, node: NodeSpec, data_dir: Path) -> dict[str, str]:
    """The ``server.properties`` of one node, tuned for fast local tests."""
    n = len(layout.nodes)
    replicated = n >= 3
    rf = "3" if replicated else "1"
    min_isr = "2" if replicated else "1"
    return {
        # KRaft combined mode: every node is a broker and a quorum voter.
        "process.roles": "broker,controller",
        "node.id": str(node.id),
        "controller.quorum.bootstrap.servers": ",".join(
            f"{HOST}:{x.controller_port}" for x in layout.nodes
        ),
        "listeners": f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(node_dir(data_dir, node.id) / "data"),
        # Durability: with 3 nodes one may die and acks=all / transactions keep working.
        "default.replication.factor": rf,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        # Few internal partitions: creating 50 of each costs seconds on the first group/txn.
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.num.partitions": "8",
        "num.partitions": "1",
        # Groups: no join delay, short sessions allowed (classic and KIP-848 protocols).
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "500",
        "group.consumer.min.session.timeout.ms": "1000",
        "group.consumer.session.timeout.ms": "10000",
        "group.consumer.min.heartbeat.interval.ms": "500",
        "group.consumer.heartbeat.interval.ms": "1000",
        # Transactions: abort timed-out ones and expire ids promptly in tests.
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "2000",
        # Node failure is detected in seconds, so a killed node's partitions move quickly.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "4000",
        "replica.lag.time.max.ms": "10000",
        # Small footprint on a small machine.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.replica.fetchers": "1",
        "num.recovery.threads.per.data.dir": "1",
        "log.segment.bytes": str(64 * 1024 * 1024),
        "log.retention.check.interval.ms": "60000",
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
    }


def render_properties(settings: Mapping[str, str]) -> str:
    """Java properties text (values are plain; backslashes escaped)."""
    lines = ["# generated by mdpeer (peer.dev.localkafka); rewritten on every start"]
    lines += [f"{k}={v.replace(chr(92), chr(92) * 2)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


LOG4J2_PROPERTIES: Final = """\
# generated by mdpeer: each node logs to <node>/logs/server.log (kafka.logs.dir)
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.network.name = kafka.network.RequestChannel$
logger.network.level = WARN
"""


def node_dir(data_dir: Path, node_id: int) -> Path:
    return data_dir / f"node-{node_id}"


def config_path(data_dir: Path, node_id: int) -> Path:
    return node_dir(data_dir, node_id) / "server.properties"


def logs_dir(data_dir: Path, node_id: int) -> Path:
    return node_dir(data_dir, node_id) / "logs"


def is_formatted(data_dir: Path, node_id: int) -> bool:
    return (node_dir(data_dir, node_id) / "data" / "meta.properties").is_file()


def port_free(port: int) -> bool:
    """Whether a listener could bind ``HOST:port`` now (SO_REUSEADDR, as the JVM sets it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def check_ports_free(layout: ClusterLayout) -> None:
    """Raise :class:`PortInUseError` for the first port of ``layout`` that is taken."""
    for n in layout.nodes:
        if not port_free(n.port):
            raise PortInUseError(n.port, f"client port of node {n.id}")
        if not port_free(n.controller_port):
            raise PortInUseError(n.controller_port, f"controller port of node {n.id}")
        if n.internal_port is not None and not port_free(n.internal_port):
            raise PortInUseError(n.internal_port, f"internal port of node {n.id}")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port_base(nodes: int, *, attempts: int = 200) -> int:
    """A first client port such that the ports of a ``nodes``-node cluster are all free now.

    The ports a secured cluster adds (``port + 200 ..``) are checked too.

    Picked at random *outside* the OS's ephemeral range: there no outgoing connection can
    take a port between this check and the broker's bind, and tests of other engineers
    (which bind port 0) never land. Callers should still handle :class:`PortInUseError`.
    """
    low, high = _ephemeral_range()
    span = INTERNAL_PORT_OFFSET + nodes
    ranges = [(r0, r1 - span) for r0, r1 in ((10000, low), (high + 1, 65536)) if r1 - span > r0]
    rng = random.SystemRandom()
    for _ in range(attempts):
        if ranges:
            r0, r1 = rng.choice(ranges)
            base = rng.randrange(r0, r1)
        else:  # the ephemeral range covers everything: take one the OS hands out
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((HOST, 0))
                base = int(s.getsockname()[1])
        wanted = [base + i for i in range(nodes)]
        wanted += [base + CONTROLLER_PORT_OFFSET + i for i in range(nodes)]
        wanted += [base + INTERNAL_PORT_OFFSET + i for i in range(nodes)]
        if max(wanted) <= 65535 and all(port_free(p) for p in wanted):
            return base
    raise LocalKafkaError(f"found no {3 * nodes} free ports on {HOST}")


@dataclass(slots=True)
class State:
    """The state file: the layout plus how and where each node was last started."""

    layout: ClusterLayout
    #: node id -> pid of the running JVM (absent when stopped)
    pids: dict[int, int] = field(default_factory=dict)
    #: the full command line used to start each node, so any shell can restart it
    commands: dict[int, list[str]] = field(default_factory=dict)
    #: a secured cluster: where its client files are (``secure.Security.to_json``), or None
    security: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "bootstrap": self.layout.bootstrap,
            "cluster_id": self.layout.cluster_id,
            "kafka_version": self.layout.kafka_version,
            "nodes": [
                {
                    **asdict(n),
                    "pid": self.pids.get(n.id),
                    "command": self.commands.get(n.id),
                }
                for n in self.layout.nodes
            ],
            "security": self.security,
        }

    @classmethod
    def from_json(cls, data: Any, source: Path) -> State:
        try:
            if data["v"] != STATE_VERSION:
                raise ValueError(f"unknown state version {data['v']!r}")
            nodes = tuple(
                NodeSpec(
                    id=int(n["id"]),
                    port=int(n["port"]),
                    controller_port=int(n["controller_port"]),
                    dir_id=str(n["dir_id"]),
                    internal_port=(
                        None if n.get("internal_port") is None else int(n["internal_port"])
                    ),
                )
                for n in data["nodes"]
            )
            layout = ClusterLayout(
                cluster_id=str(data["cluster_id"]),
                kafka_version=str(data["kafka_version"]),
                nodes=nodes,
            )
            pids = {int(n["id"]): int(n["pid"]) for n in data["nodes"] if n.get("pid")}
            commands = {
                int(n["id"]): [str(a) for a in n["command"]]
                for n in data["nodes"]
                if n.get("command")
            }
            security = data.get("security")
            if security is not None and not isinstance(security, dict):
                raise TypeError("security is not an object")
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise LocalKafkaError(
                f"state file {source} is not readable: {exc}",
                hint="stop any java processes it started by hand, then start again with --fresh",
            ) from None
        return cls(layout=layout, pids=pids, commands=commands, security=security)


def load_state(data_dir: Path) -> State | None:
    """The state in ``data_dir``, or None when nothing was ever started there."""
    path = data_dir / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LocalKafkaError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LocalKafkaError(f"state file {path} is not JSON: {exc}") from None
    return State.from_json(data, path)


def save_state(data_dir: Path, state: State) -> None:
    """Write the state file atomically (a reader never sees half of it)."""
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def ensure_ours(data_dir: Path) -> None:
    """Refuse a non-empty directory that holds no state file: it is not ours to format."""
    if not data_dir.exists():
        return
    if not data_dir.is_dir():
        raise LocalKafkaError(f"data dir {data_dir} exists and is not a directory")
    if (data_dir / STATE_FILE).exists():
        return
    if any(p.name != ".lock" for p in data_dir.iterdir()):
        raise LocalKafkaError(
            f"data dir {data_dir} is not empty and was not created by mdpeer",
            hint="pass an empty or new directory with --data-dir",
        )
