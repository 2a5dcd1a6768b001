"""The vendor connector JSON, strictly: unknown ``migratorydata.*`` keys, ``--lenient``,
Kafka Connect's topic-creation keys, and server URLs with ``migratorydata.encryption``."""

from __future__ import annotations

import pytest

from peer.config.connector import closest_key
from peer.config.routesfile import load_routes
from peer.errors import ConfigError
from peer.routes.model import Route
from tests.fixtures.config_files import ConnectorFile, assert_refused


@pytest.mark.parametrize(
    ("key", "closest"),
    [
        ("migratorydata.subjects.x", "migratorydata.subject.x"),
        ("migratorydata.subjcet.server.status1", "migratorydata.subject.server.status1"),
        ("migratorydata.keys.a.b", "migratorydata.key.a.b"),
        ("migratorydata.server", "migratorydata.servers"),
        ("migratorydata.Servers", "migratorydata.servers"),
        ("migratorydata.encription", "migratorydata.encryption"),
        ("migratorydata.entitlement.token", "migratorydata.entitlement_token"),
        ("migratorydata.subject", "migratorydata.subject.<path>"),
        ("MigratoryData.subject.a", "migratorydata.subject.a"),
        ("migratorydata.reconnect.policy", None),
    ],
)
def test_the_closest_known_key(key: str, closest: str | None) -> None:
    assert closest_key(key) == closest


def test_an_unknown_migratorydata_key_is_an_error_naming_the_closest(
    connector_file: ConnectorFile,
) -> None:
    path = connector_file(
        {"migratorydata.subject.server.status1": "topic1", "migratorydata.subjects.x": "topic2"}
    )
    with pytest.raises(ConfigError) as err:
        load_routes(path)
    assert str(err.value) == (
        "migratorydata.subjects.x='***': unknown MigratoryData connector key; "
        "did you mean 'migratorydata.subject.x'?"
    )
    assert err.value.hint == (
        f"in {path}; --lenient (MDPEER_LENIENT=true) reports unknown keys as notes instead"
    )


def test_an_unknown_key_without_a_close_one_lists_the_known_ones(
    connector_file: ConnectorFile,
) -> None:
    with pytest.raises(ConfigError) as err:
        load_routes(connector_file({"migratorydata.reconnect.policy": "x"}))
    assert err.value.field == "migratorydata.reconnect.policy"
    assert err.value.reason == (
        "unknown MigratoryData connector key; known: migratorydata.servers, "
        "migratorydata.encryption, migratorydata.entitlement_token, "
        "migratorydata.subject.<path>, migratorydata.key.<path>"
    )


@pytest.mark.parametrize(
    ("key", "closest"),
    [
        ("migratorydata.entitlement.token", "migratorydata.entitlement_token"),
        ("MigratoryData.subject.a", "migratorydata.subject.a"),
        ("migratorydat.servers", "migratorydata.servers"),
    ],
)
def test_misspelt_keys_and_prefixes_are_caught_and_their_value_hidden(
    connector_file: ConnectorFile, key: str, closest: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_routes(connector_file({key: "s3cr3t-token"}))
    assert err.value.field == key
    assert f"did you mean {closest!r}?" in err.value.reason
    assert "s3cr3t-token" not in str(err.value)


def test_lenient_turns_unknown_keys_into_notes(connector_file: ConnectorFile) -> None:
    path = connector_file(
        {
            "migratorydata.subject.a": "t",
            "migratorydata.subjects.b": "t2",
            "migratorydata.reconnect.policy": "x",
        }
    )
    loaded = load_routes(path, lenient=True)
    assert loaded.table.routes() == (Route("/a", "t"),)
    typo, unknown = loaded.notes
    assert typo == (
        "migratorydata.subjects.b: not a MigratoryData connector key mdpeer knows "
        "(did you mean 'migratorydata.subject.b'?); ignored"
    )
    assert unknown == (
        "migratorydata.reconnect.policy: not a MigratoryData connector key mdpeer knows; ignored"
    )


def test_a_vendor_key_outside_config_of_a_rest_body(connector_file: ConnectorFile) -> None:
    body = {
        "name": "md",
        "migratorydata.subject.b": "t2",
        "config": {"migratorydata.subject.a": "t"},
    }
    path = connector_file(body)
    with pytest.raises(ConfigError) as err:
        load_routes(path)
    assert err.value.field == "migratorydata.subject.b"
    assert err.value.reason.startswith('outside "config" of a Connect request body')
    loaded = load_routes(path, lenient=True)
    assert loaded.table.routes() == (Route("/a", "t"),)
    assert loaded.notes == ("migratorydata.subject.b: not part of a Connect request body; ignored",)


# --- Kafka Connect's topic creation -----------------------------------------------------------


def test_topic_creation_keys_are_read(connector_file: ConnectorFile) -> None:
    loaded = load_routes(
        connector_file(
            {
                "migratorydata.subject.a": "t",
                "topic.creation.default.partitions": "6",
                "topic.creation.default.replication.factor": 3,
                "topic.creation.default.cleanup.policy": "compact",
                "topic.creation.groups": "g",
            }
        )
    )
    assert (loaded.topic_partitions, loaded.topic_replication_factor) == (6, 3)
    assert [n.split(":")[0] for n in loaded.notes] == [
        "topic.creation.default.cleanup.policy",
        "topic.creation.groups",
    ]
    assert "mdpeer takes only topic.creation.default.partitions" in loaded.notes[0]
    broker_defaults = load_routes(
        connector_file(
            {"migratorydata.subject.a": "t", "topic.creation.default.replication.factor": "-1"}
        )
    )
    assert broker_defaults.topic_replication_factor == -1
    assert broker_defaults.topic_partitions is None
    plain = load_routes(connector_file({"migratorydata.subject.a": "t"}))
    assert (plain.topic_partitions, plain.topic_replication_factor) == (None, None)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("topic.creation.default.partitions", "0", "expected -1 (the broker's default) or 1 to"),
        ("topic.creation.default.partitions", "10001", "or 1 to 10000"),
        ("topic.creation.default.partitions", "six", "expected an integer"),
        ("topic.creation.default.partitions", True, "expected an integer"),
        ("topic.creation.default.replication.factor", -2, "or 1 to 32767"),
        ("topic.creation.default.replication.factor", "32768", "or 1 to 32767"),
    ],
)
def test_bad_topic_creation_values_name_the_key(
    connector_file: ConnectorFile, key: str, value: object, reason: str
) -> None:
    assert_refused(connector_file({"migratorydata.subject.a": "t", key: value}), key, reason)


# --- servers as URLs ---------------------------------------------------------------------------


def test_server_urls_in_the_connector(connector_file: ConnectorFile) -> None:
    loaded = load_routes(
        connector_file(
            {
                "migratorydata.servers": "https://push1.example.com,50 https://push2.example.com:443",
                "migratorydata.encryption": "true",
            }
        )
    )
    assert loaded.source is not None
    assert loaded.source.servers == (
        "https://push1.example.com:443",
        "50 https://push2.example.com:443",
    )


@pytest.mark.parametrize(
    ("servers", "encryption", "entry"),
    [
        ("https://push1.example.com:443", "false", "https://push1.example.com:443"),
        ("localhost:8801, http://localhost:8800", "true", "http://localhost:8800"),
    ],
)
def test_encryption_against_the_servers_scheme_names_both_keys(
    connector_file: ConnectorFile, servers: str, encryption: str, entry: str
) -> None:
    path = connector_file(
        {"migratorydata.servers": servers, "migratorydata.encryption": encryption}
    )
    with pytest.raises(ConfigError) as err:
        load_routes(path)
    assert err.value.field == "migratorydata.encryption"
    assert err.value.value == encryption
    assert f"contradicts the migratorydata.servers entry '{entry}'" in err.value.reason
    assert err.value.hint == f"in {path}"


def test_mixed_schemes_in_the_connector_are_refused(connector_file: ConnectorFile) -> None:
    path = connector_file({"migratorydata.servers": "http://a:8800,https://b"})
    with pytest.raises(ConfigError) as err:
        load_routes(path)
    assert err.value.field == "migratorydata.servers"
    assert "mixes http:// (http://a:8800) and https:// (https://b:443)" in err.value.reason
