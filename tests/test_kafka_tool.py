"""`mdpeer kafka tool`: Apache Kafka's own command-line tools, run against a real broker.

The tools run as real subprocesses (`mdpeer kafka tool` replaces itself with the JVM), so
what is checked is what a user sees: the tool's stdout, stderr and exit code.
"""

from __future__ import annotations

import subprocess
import uuid
import zipfile

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from typer.testing import CliRunner

from peer.cli import app
from peer.dev.localkafka import resolve_jars
from peer.dev.localkafka.tools import TOOLS, closest_tool, find_tool
from peer.testing import mdpeer_argv
from tests.fixtures.kafka import GroupFactory, TopicFactory

#: a tool's JVM starts in about a second here; the rest is the broker's answer
_TOOL_DEADLINE_S = 60.0


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*mdpeer_argv(), "kafka", "tool", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=_TOOL_DEADLINE_S,
        check=False,
    )


def test_list_names_every_tool_and_its_class() -> None:
    result = CliRunner().invoke(app, ["kafka", "tool", "--list"])
    assert result.exit_code == 0, result.output
    listed = dict(line.split() for line in result.stdout.splitlines())
    assert listed == {name: tool.main_class for name, tool in TOOLS.items()}
    assert "kafka-console-consumer" in listed
    assert "kafka-transactions" in listed


def test_a_name_is_accepted_with_or_without_sh() -> None:
    assert find_tool("kafka-topics.sh") is find_tool("kafka-topics")
    assert closest_tool("topics") == "kafka-topics"
    assert closest_tool("kafka-consumer-group") == "kafka-consumer-groups"


def test_an_unknown_name_exits_2_naming_it_and_the_closest() -> None:
    result = CliRunner().invoke(app, ["kafka", "tool", "kafka-topic", "--list"])
    assert result.exit_code == 2
    assert "unknown Kafka tool 'kafka-topic'; the closest is 'kafka-topics'" in result.stderr
    assert "--list" in result.stderr


def test_an_option_before_the_name_is_refused_with_the_right_order() -> None:
    result = CliRunner().invoke(
        app, ["kafka", "tool", "--bootstrap-server", "localhost:9092", "kafka-topics", "--list"]
    )
    assert result.exit_code == 2
    assert "'--bootstrap-server' comes before the tool's name" in result.stderr


def test_a_script_that_is_not_offered_says_why() -> None:
    result = CliRunner().invoke(app, ["kafka", "tool", "kafka-server-start.sh", "x.properties"])
    assert result.exit_code == 2
    assert "mdpeer kafka up" in result.stderr


@pytest.mark.kafka
def test_every_main_class_is_in_the_resolved_jars() -> None:
    jars = resolve_jars()
    entries: set[str] = set()
    for jar in jars.libs.glob("*.jar"):
        with zipfile.ZipFile(jar) as archive:
            entries.update(archive.namelist())
    missing = [
        t.name for t in TOOLS.values() if t.main_class.replace(".", "/") + ".class" not in entries
    ]
    assert not missing, f"main class not in {jars.libs}: {missing}"


@pytest.mark.kafka
def test_topics_list_shows_a_topic(kafka_bootstrap: str, unique_topic: TopicFactory) -> None:
    topic = unique_topic()
    result = run_tool("kafka-topics.sh", "--bootstrap-server", kafka_bootstrap, "--list")
    assert result.returncode == 0, result.stderr
    assert topic in result.stdout.splitlines()
    assert "WARN" not in result.stderr  # log4j is quiet


@pytest.mark.kafka
def test_help_after_the_name_goes_to_the_tool() -> None:
    result = run_tool("kafka-topics", "--help")
    assert "--bootstrap-server" in result.stdout + result.stderr
    assert "mdpeer" not in result.stdout + result.stderr


@pytest.mark.kafka
def test_consumer_groups_describe_an_existing_group(
    kafka_bootstrap: str, unique_topic: TopicFactory, unique_group: GroupFactory
) -> None:
    topic, group = unique_topic(), unique_group()
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        consumer.close()
    result = run_tool(
        "kafka-consumer-groups",
        "--bootstrap-server",
        kafka_bootstrap,
        "--describe",
        "--group",
        group,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [group, topic, "0", "0"] in [row[:4] for row in rows], result.stdout


@pytest.mark.kafka
def test_console_consumer_reads_committed_records_only(
    kafka_bootstrap: str, unique_topic: TopicFactory
) -> None:
    topic = unique_topic()
    txn_id = f"tool-test-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": txn_id})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted")
    producer.abort_transaction(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, f"committed-{i}".encode())
    producer.commit_transaction(30)

    result = run_tool(
        "kafka-console-consumer",
        "--bootstrap-server",
        kafka_bootstrap,
        "--topic",
        topic,
        "--from-beginning",
        "--isolation-level",
        "read_committed",
        "--max-messages",
        "3",
        "--timeout-ms",
        "30000",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["committed-0", "committed-1", "committed-2"]

    listed = run_tool("kafka-transactions", "--bootstrap-server", kafka_bootstrap, "list")
    assert listed.returncode == 0, listed.stderr
    assert txn_id in listed.stdout
