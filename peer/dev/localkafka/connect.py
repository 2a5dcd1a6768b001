"""Kafka Connect of the broker's own release, on demand: a distributed worker's class path,
configuration and command line (``scripts/bench.py`` runs one beside mdpeer).

mdpeer replaces a source connector rather than running one, so the broker's install leaves
the Connect runtime out. The benchmark still wants to measure what users would otherwise run:
``connect-runtime`` and ``connect-file`` (``FileStreamSourceConnector``) of
:data:`~peer.dev.localkafka.runtime.KAFKA_VERSION`, resolved by Maven like the broker's jars
into ``<cache>/kafka-<version>/connect-libs``, the first time they are asked for
(``mdpeer kafka install --connect``, or the benchmark itself). With ``KAFKA_HOME`` the
release's ``libs/`` holds them already.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from peer.dev.localkafka.runtime import (
    KAFKA_VERSION,
    JarSet,
    KafkaJars,
    Progress,
    maven_dependency,
    maven_pom,
    resolve_jar_set,
    resolve_jars,
    stderr_progress,
)
from peer.dev.localkafka.tools import console_log4j2
from peer.errors import LocalKafkaError

#: what ``bin/connect-distributed.sh`` runs
WORKER_CLASS: Final = "org.apache.kafka.connect.cli.ConnectDistributed"
FILE_SOURCE: Final = "org.apache.kafka.connect.file.FileStreamSourceConnector"
STRING_CONVERTER: Final = "org.apache.kafka.connect.storage.StringConverter"

_CONNECT_DEPENDENCIES: Final = (
    maven_dependency("connect-runtime")
    # FileStreamSourceConnector / FileStreamSinkConnector
    + maven_dependency("connect-file")
)

#: the Connect runtime: not part of ``mdpeer kafka install`` unless ``--connect`` asks
CONNECT_JARS: Final = JarSet(
    prefix="connect-",
    pom=maven_pom(
        "connect-runtime",
        "the class path of a Kafka Connect worker of the broker's release",
        _CONNECT_DEPENDENCIES,
    ),
    what=f"org.apache.kafka:connect-runtime:{KAFKA_VERSION} and connect-file",
)


def resolve_connect_jars(*, progress: Progress = stderr_progress) -> KafkaJars:
    """The jars of a Connect worker, downloaded with Maven the first time (``KAFKA_HOME``: the
    release's ``libs/``, which ships them)."""
    if os.environ.get("KAFKA_HOME"):
        jars = resolve_jars(progress=progress)
        for name in ("connect-runtime", "connect-file"):
            if not list(jars.libs.glob(f"{name}-*.jar")):
                raise LocalKafkaError(
                    f"no {name} jar in {jars.libs} (KAFKA_HOME)",
                    hint="point KAFKA_HOME at a full Apache Kafka release, or unset it to use "
                    "the Maven-resolved jars",
                )
        return jars
    return resolve_jar_set(CONNECT_JARS, progress=progress)


@dataclass(frozen=True, slots=True)
class WorkerTopics:
    """A distributed worker group's internal topics (configs: 1 partition, compacted)."""

    configs: str
    offsets: str
    status: str

    @classmethod
    def of(cls, group: str) -> WorkerTopics:
        return cls(f"{group}.configs", f"{group}.offsets", f"{group}.status")


def worker_properties(
    bootstrap: str,
    group: str,
    rest_port: int,
    *,
    exactly_once: bool,
    extra: Mapping[str, str] | None = None,
) -> str:
    """``connect-distributed.properties`` of one worker: String converters (a record's value
    is the text as UTF-8), its group's topics of :class:`WorkerTopics` with replication 1 (a
    1-node broker), REST on loopback, and ``exactly.once.source.support``."""
    topics = WorkerTopics.of(group)
    settings = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "key.converter": STRING_CONVERTER,
        "value.converter": STRING_CONVERTER,
        "config.storage.topic": topics.configs,
        "offset.storage.topic": topics.offsets,
        "status.storage.topic": topics.status,
        "config.storage.replication.factor": "1",
        "offset.storage.replication.factor": "1",
        "status.storage.replication.factor": "1",
        "listeners": f"http://127.0.0.1:{rest_port}",
        "rest.advertised.host.name": "127.0.0.1",
        "rest.advertised.port": str(rest_port),
        # Kafka's own plugins carry service manifests: no scan of the whole class path
        "plugin.discovery": "service_load",
        "exactly.once.source.support": "enabled" if exactly_once else "disabled",
        **(extra or {}),
    }
    return "\n".join(f"{k}={v}" for k, v in settings.items()) + "\n"


#: the worker logs to stdout, which its process harness keeps in one log file
WORKER_LOG4J2: Final = console_log4j2("for a Kafka Connect worker", "INFO", "SYSTEM_OUT")

#: ``connect-distributed.sh``'s heap and ``kafka-run-class.sh``'s default JVM flags: a
#: worker as Kafka's scripts start it (C2 JIT, G1), not the broker's start-up-lean flags
WORKER_JVM: Final = (
    "-Xms256M",
    "-Xmx2G",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)


def worker_command(java: str, jars: KafkaJars, properties: Path, log4j: Path) -> list[str]:
    """The command line of ``bin/connect-distributed.sh properties`` on ``jars``."""
    return [
        java,
        *WORKER_JVM,
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        jars.classpath,
        WORKER_CLASS,
        str(properties),
    ]


__all__ = [
    "CONNECT_JARS",
    "FILE_SOURCE",
    "STRING_CONVERTER",
    "WORKER_CLASS",
    "WORKER_JVM",
    "WORKER_LOG4J2",
    "WorkerTopics",
    "resolve_connect_jars",
    "worker_command",
    "worker_properties",
]
