"""Cluster layout, broker settings, state file and jar sources (no broker needed)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from peer.dev.localkafka import free_port_base, resolve_jars
from peer.dev.localkafka.layout import (
    ClusterLayout,
    State,
    broker_settings,
    ensure_ours,
    kafka_uuid,
    load_state,
    port_free,
    render_properties,
    save_state,
)
from peer.dev.localkafka.runtime import _java_major
from peer.errors import ConfigError, LocalKafkaError


def layout(nodes: int, port: int = 19092) -> ClusterLayout:
    return ClusterLayout.new(nodes=nodes, port=port, controller_port=None, kafka_version="4.3.1")


def test_single_node_settings_suit_fast_tests(tmp_path: Path) -> None:
    one = layout(1)
    s = broker_settings(one, one.nodes[0], tmp_path)
    assert s["process.roles"] == "broker,controller"
    assert s["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19192"
    assert s["controller.quorum.bootstrap.servers"] == "127.0.0.1:19192"
    for key in (
        "default.replication.factor",
        "min.insync.replicas",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert s[key] == "1", key
    assert s["group.initial.rebalance.delay.ms"] == "0"
    assert int(s["group.min.session.timeout.ms"]) <= 1000
    assert int(s["group.consumer.min.session.timeout.ms"]) <= 1000
    assert not any("zookeeper" in k for k in s)


def test_three_nodes_replicate_three_ways_and_survive_one_loss(tmp_path: Path) -> None:
    three = layout(3)
    assert three.bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert [n.controller_port for n in three.nodes] == [19192, 19193, 19194]
    for node in three.nodes:
        s = broker_settings(three, node, tmp_path)
        assert s["node.id"] == str(node.id)
        assert s["default.replication.factor"] == "3"
        assert s["offsets.topic.replication.factor"] == "3"
        assert s["transaction.state.log.replication.factor"] == "3"
        assert s["min.insync.replicas"] == "2"
        assert s["transaction.state.log.min.isr"] == "2"
        assert s["controller.quorum.bootstrap.servers"].count(",") == 2
    voters = three.initial_controllers().split(",")
    assert [v.split("@")[0] for v in voters] == ["1", "2", "3"]
    assert all(v.endswith(f":{n.dir_id}") for v, n in zip(voters, three.nodes, strict=True))


def test_layout_refuses_what_kafka_would_not_run() -> None:
    with pytest.raises(ConfigError, match="nodes=2"):
        layout(2)
    with pytest.raises(ConfigError, match="controller_port"):
        ClusterLayout.new(nodes=3, port=19092, controller_port=19093, kafka_version="4")


def test_ids_look_like_kafka_ids() -> None:
    ids = {kafka_uuid() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)


def test_properties_escape_backslashes() -> None:
    text = render_properties({"log.dirs": r"C:\kafka", "a": "b"})
    assert "log.dirs=C:\\\\kafka\n" in text
    assert text.endswith("a=b\n")


def test_state_survives_a_round_trip(tmp_path: Path) -> None:
    state = State(layout(3))
    state.pids = {1: 101, 3: 303}
    state.commands = {1: ["java", "kafka.Kafka", "x"]}
    save_state(tmp_path, state)
    loaded = load_state(tmp_path)
    assert loaded is not None
    assert loaded.layout == state.layout
    assert loaded.pids == {1: 101, 3: 303}
    assert loaded.commands == {1: ["java", "kafka.Kafka", "x"]}
    assert load_state(tmp_path / "nothing") is None
    (tmp_path / "localkafka.json").write_text('{"v": 1, "nodes": "x"}')
    with pytest.raises(LocalKafkaError, match="not readable"):
        load_state(tmp_path)


def test_a_foreign_non_empty_directory_is_refused(tmp_path: Path) -> None:
    ensure_ours(tmp_path / "new")  # absent: fine
    ensure_ours(tmp_path)  # empty: fine
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(LocalKafkaError, match="not created by mdpeer"):
        ensure_ours(tmp_path)


def test_free_port_base_finds_free_client_and_controller_ports() -> None:
    base = free_port_base(3)
    assert all(port_free(p) for p in (base, base + 1, base + 2, base + 100, base + 102))
    with socket.socket() as s:
        s.bind(("127.0.0.1", base))
        s.listen()
        assert not port_free(base)


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "21" 2023-09-19', 21),
        ('openjdk version "1.8.0_392"', 8),
        ("no version here", None),
    ],
)
def test_java_versions_are_read(output: str, major: int | None) -> None:
    assert _java_major(output) == major


def test_kafka_home_is_used_instead_of_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "kafka_2.13-4.1.0.jar").write_bytes(b"")
    (libs / "kafka_2.13-4.1.0-sources.jar").write_bytes(b"")
    monkeypatch.setenv("KAFKA_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "no-maven-here"))
    jars = resolve_jars()
    assert (jars.source, jars.version, jars.libs) == ("KAFKA_HOME", "4.1.0", libs)
    assert jars.classpath == f"{libs}/*"

    (libs / "kafka_2.13-4.1.0.jar").rename(libs / "kafka_2.13-3.9.1.jar")
    with pytest.raises(LocalKafkaError, match=r"3\.9\.1; mdpeer needs 4\.x"):
        resolve_jars()
