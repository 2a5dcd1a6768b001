"""Apache Kafka's own command-line tools (``bin/kafka-*.sh``) on the local install's jars.

A Kafka release runs each tool as ``bin/kafka-run-class.sh <main class> "$@"``; the table
below is the main class each of those scripts names. The local install has no ``bin/``
(Maven gives jars only), so :func:`tool_command` builds the same JVM command line on the
jars :func:`~peer.dev.localkafka.runtime.resolve_jars` resolved, with the broker's Java.
"""

from __future__ import annotations

import difflib
import os
import shlex
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from peer.dev.localkafka.runtime import (
    KafkaJars,
    cache_dir,
    cds_archive,
    class_sharing_enabled,
    find_java,
    resolve_jars,
)
from peer.errors import LocalKafkaError


@dataclass(frozen=True, slots=True)
class Tool:
    """One script of a Kafka release's ``bin/`` and the class it runs."""

    name: str
    main_class: str
    #: ``-Xmx`` when ``KAFKA_HEAP_OPTS`` is unset: the script's own, else kafka-run-class's
    heap_mb: int = 256


def _tools(*tools: Tool) -> dict[str, Tool]:
    return {t.name: t for t in tools}


_T = "org.apache.kafka.tools."

#: ``bin/<name>.sh`` of Apache Kafka 4.x -> its main class. AclCommand and DumpLogSegments
#: moved from the core module into org.apache.kafka.tools during 4.x; the scripts of the
#: pinned release name the new classes (the jars hold no other). tests/test_kafka_tool.py
#: checks that every class is in the resolved jars.
TOOLS: Final = _tools(
    Tool("kafka-acls", _T + "AclCommand"),
    Tool("kafka-broker-api-versions", _T + "BrokerApiVersionsCommand"),
    Tool("kafka-client-metrics", _T + "ClientMetricsCommand"),
    Tool("kafka-cluster", _T + "ClusterTool"),
    Tool("kafka-configs", "kafka.admin.ConfigCommand"),
    Tool("kafka-console-consumer", _T + "consumer.ConsoleConsumer"),
    Tool("kafka-console-producer", _T + "ConsoleProducer"),
    Tool("kafka-console-share-consumer", _T + "consumer.ConsoleShareConsumer"),
    Tool("kafka-consumer-groups", _T + "consumer.group.ConsumerGroupCommand"),
    Tool("kafka-consumer-perf-test", _T + "ConsumerPerformance", heap_mb=512),
    Tool("kafka-delegation-tokens", _T + "DelegationTokenCommand"),
    Tool("kafka-delete-records", _T + "DeleteRecordsCommand"),
    Tool("kafka-dump-log", _T + "DumpLogSegments"),
    Tool("kafka-e2e-latency", _T + "EndToEndLatency"),
    Tool("kafka-features", _T + "FeatureCommand"),
    Tool("kafka-get-offsets", _T + "GetOffsetShell"),
    Tool("kafka-groups", _T + "GroupsCommand"),
    Tool("kafka-jmx", _T + "JmxTool"),
    Tool("kafka-leader-election", _T + "LeaderElectionCommand"),
    Tool("kafka-log-dirs", _T + "LogDirsCommand"),
    Tool("kafka-metadata-quorum", _T + "MetadataQuorumCommand"),
    Tool("kafka-metadata-shell", "org.apache.kafka.shell.MetadataShell"),
    Tool("kafka-producer-perf-test", _T + "ProducerPerformance", heap_mb=512),
    Tool("kafka-reassign-partitions", _T + "reassign.ReassignPartitionsCommand"),
    Tool("kafka-replica-verification", _T + "ReplicaVerificationTool"),
    Tool("kafka-share-consumer-perf-test", _T + "ShareConsumerPerformance", heap_mb=512),
    Tool("kafka-share-groups", _T + "consumer.group.ShareGroupCommand"),
    Tool("kafka-storage", "kafka.tools.StorageTool"),
    Tool("kafka-streams-application-reset", _T + "StreamsResetter"),
    Tool("kafka-streams-groups", _T + "streams.StreamsGroupCommand"),
    Tool("kafka-topics", _T + "TopicCommand"),
    Tool("kafka-transactions", _T + "TransactionsCommand"),
    Tool("kafka-verifiable-consumer", _T + "VerifiableConsumer", heap_mb=512),
    Tool("kafka-verifiable-producer", _T + "VerifiableProducer", heap_mb=512),
    Tool("kafka-verifiable-share-consumer", _T + "VerifiableShareConsumer", heap_mb=512),
)

_CONNECT = (
    "Kafka Connect is not offered (mdpeer replaces the connector; scripts/bench.py runs a "
    "worker of `mdpeer kafka install --connect` beside it)"
)
_ZOOKEEPER = "ZooKeeper is gone since Apache Kafka 4.0 (the local Kafka runs KRaft)"
#: scripts of a release that are deliberately not offered, and why
NOT_OFFERED: Final = {
    "kafka-server-start": "the local broker is started with `mdpeer kafka up`",
    "kafka-server-stop": "the local broker is stopped with `mdpeer kafka down`",
    "kafka-run-class": "it runs any class; name one of the tools instead (`--list`)",
    "connect-distributed": _CONNECT,
    "connect-standalone": _CONNECT,
    "connect-mirror-maker": _CONNECT,
    "connect-plugin-path": _CONNECT,
    "trogdor": "Kafka's fault-injection framework is not part of the local install",
    "zookeeper-server-start": _ZOOKEEPER,
    "zookeeper-server-stop": _ZOOKEEPER,
    "zookeeper-shell": _ZOOKEEPER,
}

#: exit code for a tool name that is not one (like a usage error)
UNKNOWN_TOOL_EXIT: Final = 2


class UnknownToolError(LocalKafkaError):
    """The name given is not one of Kafka's tools offered here."""

    def __init__(self, name: str, message: str, *, hint: str) -> None:
        self.name = name
        super().__init__(message, hint=hint)


def find_tool(name: str) -> Tool:
    """The tool called ``name``, with or without ``.sh`` (``kafka-topics``, ``kafka-topics.sh``)."""
    if name.startswith("-"):
        raise UnknownToolError(
            name,
            f"{name!r} comes before the tool's name: name the tool first; every argument "
            "after it goes to the tool",
            hint="e.g. mdpeer kafka tool kafka-topics --bootstrap-server localhost:9092 --list",
        )
    bare = name.removesuffix(".sh")
    tool = TOOLS.get(bare)
    if tool is not None:
        return tool
    if bare in NOT_OFFERED:
        raise UnknownToolError(
            name,
            f"{name!r} is not offered by `mdpeer kafka tool`: {NOT_OFFERED[bare]}",
            hint="`mdpeer kafka tool --list` lists the tools",
        )
    closest = closest_tool(bare)
    raise UnknownToolError(
        name,
        f"unknown Kafka tool {name!r}; the closest is {closest!r}",
        hint="`mdpeer kafka tool --list` lists the tools",
    )


def closest_tool(name: str) -> str:
    """The known tool name most like ``name`` (``topics`` -> ``kafka-topics``)."""
    names = sorted(TOOLS)
    for candidate in (name, f"kafka-{name}"):
        match = difflib.get_close_matches(candidate, names, n=1, cutoff=0.6)
        if match:
            return match[0]
    return max(names, key=lambda n: difflib.SequenceMatcher(None, name, n).ratio())


def missing_class(tool: Tool, jars: KafkaJars) -> bool:
    """Whether no jar of ``jars`` holds the tool's main class (a KAFKA_HOME of another 4.x)."""
    entry = tool.main_class.replace(".", "/") + ".class"
    for jar in sorted(jars.libs.glob("*.jar")):
        try:
            with zipfile.ZipFile(jar) as archive:
                archive.getinfo(entry)
                return False
        except (KeyError, OSError, zipfile.BadZipFile):
            continue
    return True


# Kafka's tools log through log4j2; without a configuration they print WARN lines (and the
# default configuration writes to stdout, which the console consumer's output shares).
def console_log4j2(purpose: str, level: str, target: str) -> str:
    """A log4j2 configuration that prints ``level`` and above on ``target`` (``SYSTEM_OUT``
    or ``SYSTEM_ERR``), one line an event."""
    return f"""\
# generated by mdpeer {purpose}
status = error
appender.console.type = Console
appender.console.name = CONSOLE
appender.console.target = {target}
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.console.ref = CONSOLE
"""


_LOG4J2_TOOLS: Final = console_log4j2("for `mdpeer kafka tool`: errors only", "error", "SYSTEM_ERR")


def tools_log4j_config() -> Path:
    """The tools' log4j2 configuration file in the cache, written when missing or different."""
    path = cache_dir() / "tools-log4j2.properties"
    try:
        if path.read_text(encoding="utf-8") == _LOG4J2_TOOLS:
            return path
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(_LOG4J2_TOOLS, encoding="utf-8")
    os.replace(partial, path)  # a parallel caller never reads half a file
    return path


def tool_command(name: str, args: Sequence[str]) -> list[str]:
    """The command line that runs tool ``name`` with ``args`` exactly as given.

    Like ``kafka-run-class.sh``: ``KAFKA_HEAP_OPTS`` replaces the default heap and
    ``KAFKA_OPTS`` adds JVM flags (last, so they win). Raises :class:`UnknownToolError`
    for a name that is not a tool, :class:`LocalKafkaError` when Java or the jars are not
    there or lack the tool's class.
    """
    tool = find_tool(name)
    jars = resolve_jars()
    java = find_java()
    if missing_class(tool, jars):
        raise LocalKafkaError(
            f"{tool.name}: its main class {tool.main_class} is not in {jars.libs} "
            f"(Apache Kafka {jars.version} from {jars.source})",
            hint="unset KAFKA_HOME to use the pinned release, or run `mdpeer kafka install`",
        )
    heap = shlex.split(os.environ.get("KAFKA_HEAP_OPTS", "")) or [f"-Xmx{tool.heap_mb}m"]
    sharing: list[str] = []
    archive = cds_archive(jars, java)
    if class_sharing_enabled() and archive.is_file():
        # The broker's class-data-sharing archive holds most classes a tool loads too: a
        # third less start-up time.
        sharing = [f"-XX:SharedArchiveFile={archive}"]
    return [
        java.path,
        *heap,
        # Short-lived clients: the serial collector and C1 start fastest on a small machine.
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-XX:-UsePerfData",
        # The JVM's own warnings (e.g. a stale archive) go to stdout by default, where they
        # would mix with the tool's output.
        "-Xlog:disable",
        "-Xlog:all=warning:stderr",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={tools_log4j_config()}",
        *sharing,
        *shlex.split(os.environ.get("KAFKA_OPTS", "")),
        "-cp",
        jars.classpath,
        tool.main_class,
        *args,
    ]
