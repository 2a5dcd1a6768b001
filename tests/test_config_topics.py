"""Peer settings of topic creation, quarantine backoff and source readiness: defaults,
validation, every layer, and what a connector JSON's ``topic.creation.default.*`` sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peer.config.load import load_settings
from peer.config.settings import PeerSettings
from peer.errors import ConfigError
from tests.fixtures.config_files import BOOT


def test_defaults() -> None:
    s = PeerSettings(bootstrap="k:1")
    assert s.topic_creation == "cluster"
    assert s.topic_partitions == -1
    assert s.topic_replication_factor == -1
    assert s.blocked_retry_max_ms == 60_000
    assert s.source_unready_after_ms == 60_000


BROKER_DEFAULT = "expected -1 (the broker's default) or 1 to"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"topic_creation": "auto"}, "topic_creation='auto': expected one of: cluster, create"),
        ({"topic_creation": "Create"}, "topic_creation='Create': expected one of"),
        ({"topic_partitions": 0}, f"topic_partitions=0: {BROKER_DEFAULT} 10000"),
        ({"topic_partitions": 10_001}, f"topic_partitions=10001: {BROKER_DEFAULT} 10000"),
        ({"topic_partitions": "3"}, "topic_partitions='3': expected an integer"),
        ({"topic_replication_factor": -2}, f"topic_replication_factor=-2: {BROKER_DEFAULT} 32767"),
        ({"topic_replication_factor": 32_768}, "topic_replication_factor=32768: expected -1"),
        ({"topic_replication_factor": True}, "topic_replication_factor=True: expected an integer"),
        ({"blocked_retry_max_ms": 999}, "blocked_retry_max_ms=999: expected 1000 to 3600000"),
        ({"blocked_retry_max_ms": 3_600_001}, "blocked_retry_max_ms=3600001: expected 1000 to"),
        ({"source_unready_after_ms": 0}, "source_unready_after_ms=0: expected 1000 to 3600000"),
        ({"source_unready_after_ms": 1.5}, "source_unready_after_ms=1.5: expected an integer"),
    ],
)
def test_validation_names_field_and_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        PeerSettings(bootstrap="k:1", **kwargs)  # type: ignore[arg-type]
    assert str(err.value).startswith(message)


def test_bounds_are_accepted() -> None:
    s = PeerSettings(
        bootstrap="k:1",
        topic_creation="never",
        topic_partitions=10_000,
        topic_replication_factor=32_767,
        blocked_retry_max_ms=1000,
        source_unready_after_ms=3_600_000,
    )
    assert (s.topic_partitions, s.topic_replication_factor) == (10_000, 32_767)
    low = PeerSettings(bootstrap="k:1", topic_partitions=1, topic_replication_factor=1)
    assert (low.topic_partitions, low.topic_replication_factor) == (1, 1)


def test_every_layer_and_its_labels(tmp_path: Path) -> None:
    toml = tmp_path / "peer.toml"
    toml.write_text(
        'bootstrap = "k:1"\ntopic_creation = "create"\ntopic_partitions = 6\n'
        "topic_replication_factor = 3\nblocked_retry_max_ms = 5000\n"
        "source_unready_after_ms = 20000\n"
    )
    s = load_settings(toml, {}, {})
    assert (s.topic_creation, s.topic_partitions, s.topic_replication_factor) == ("create", 6, 3)
    assert (s.blocked_retry_max_ms, s.source_unready_after_ms) == (5000, 20_000)
    env = {
        "MDPEER_TOPIC_CREATION": "never",
        "MDPEER_TOPIC_PARTITIONS": "-1",
        "MDPEER_BLOCKED_RETRY_MAX_MS": "120000",
    }
    s = load_settings(toml, env, {"source_unready_after_ms": 9000, "topic_replication_factor": 2})
    assert (s.topic_creation, s.topic_partitions, s.topic_replication_factor) == ("never", -1, 2)
    assert (s.blocked_retry_max_ms, s.source_unready_after_ms) == (120_000, 9000)

    with pytest.raises(ConfigError) as err:
        load_settings(None, {**BOOT, "MDPEER_TOPIC_PARTITIONS": "many"}, {})
    assert str(err.value) == "MDPEER_TOPIC_PARTITIONS='many': expected an integer"
    with pytest.raises(ConfigError) as err:
        load_settings(toml, {"MDPEER_SOURCE_UNREADY_AFTER_MS": "10"}, {})
    assert err.value.field == "MDPEER_SOURCE_UNREADY_AFTER_MS"
    assert err.value.hint == "from the environment"
    with pytest.raises(ConfigError) as err:
        load_settings(toml, {}, {"topic_creation": "always"})
    assert err.value.field == "--topic-creation"
    bad = tmp_path / "bad.toml"
    bad.write_text('bootstrap = "k:1"\ntopic_replication_factor = 0\n')
    with pytest.raises(ConfigError) as err:
        load_settings(bad, {}, {})
    assert err.value.field == "topic_replication_factor"
    assert err.value.hint == f"in {bad}"


def connector(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "connector.json"
    path.write_text(json.dumps({"migratorydata.servers": "md:8800", **config}))
    return path


def test_connector_topic_creation_keys_become_settings_and_mode_create(tmp_path: Path) -> None:
    path = connector(
        tmp_path,
        {
            "topic.creation.default.partitions": "6",
            "topic.creation.default.replication.factor": "3",
        },
    )
    s = load_settings(path, BOOT, {})
    assert (s.topic_creation, s.topic_partitions, s.topic_replication_factor) == ("create", 6, 3)
    # an explicit topic_creation decides; the counts stay
    s = load_settings(path, {**BOOT, "MDPEER_TOPIC_CREATION": "never"}, {})
    assert (s.topic_creation, s.topic_partitions) == ("never", 6)
    s = load_settings(path, BOOT, {"topic_creation": "cluster", "topic_partitions": 12})
    assert (s.topic_creation, s.topic_partitions, s.topic_replication_factor) == ("cluster", 12, 3)


def test_one_connector_topic_creation_key_is_enough(tmp_path: Path) -> None:
    s = load_settings(
        connector(tmp_path, {"topic.creation.default.replication.factor": -1}), BOOT, {}
    )
    assert (s.topic_creation, s.topic_partitions, s.topic_replication_factor) == ("create", -1, -1)
    plain = load_settings(connector(tmp_path, {}), BOOT, {})
    assert plain.topic_creation == "cluster"


def test_bad_connector_topic_creation_values_name_the_connector_key(tmp_path: Path) -> None:
    path = connector(tmp_path, {"topic.creation.default.partitions": "0"})
    with pytest.raises(ConfigError) as err:
        load_settings(path, BOOT, {})
    assert err.value.field == "topic.creation.default.partitions"
    assert err.value.hint == f"in {path}"
