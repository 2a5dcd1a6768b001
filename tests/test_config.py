"""peer.config.settings: settings layers, validation, secrets, and the librdkafka dicts."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.config.load import load_settings
from peer.config.settings import MANAGED_KAFKA, PeerSettings, SourceSettings
from peer.errors import ConfigError
from peer.kafka.clients import consumer_config, producer_config
from peer.secret import Secret
from tests.fixtures.config_files import BOOT, write

DATA = Path(__file__).parent / "data"


# --- the dataclass ----------------------------------------------------------------------------


def test_defaults() -> None:
    s = PeerSettings(bootstrap="localhost:9092")
    assert s.group == "mdpeer"
    assert s.control_topic == "mdpeer.control"
    assert s.peer_id == socket.gethostname()
    assert s.transactional_id == f"mdpeer-{socket.gethostname()}"
    assert s.static_membership is False
    assert s.group_protocol == "classic"
    assert s.assignment_strategy == "cooperative-sticky"
    assert s.commit_interval_ms == 100
    assert s.max_batch == 10_000
    assert s.max_in_flight == 50_000
    assert s.header_prefix == "md."
    assert s.audit_topic is None
    assert s.metrics_port == 0
    assert s.log_level == "INFO"
    assert s.log_format == "json"
    assert s.source == SourceSettings()
    assert dict(s.kafka) == {}


def test_control_topic_follows_the_group() -> None:
    s = PeerSettings(bootstrap="k:1", group="bridge-eu")
    assert s.control_topic == "bridge-eu.control"
    assert PeerSettings(bootstrap="k:1", control_topic="ctl").control_topic == "ctl"


def test_settings_are_frozen_and_kafka_tables_read_only() -> None:
    s = PeerSettings(bootstrap="k:1", kafka={"client.rack": "r1"})
    with pytest.raises(AttributeError):
        s.group = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.kafka["client.rack"] = "r2"  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "field", "value", "reason"),
    [
        ({"bootstrap": ""}, "bootstrap", "", "bootstrap servers are needed"),
        ({"bootstrap": "a:1, ,b:2"}, "bootstrap", "a:1, ,b:2", "host:port"),
        ({"group": "my group"}, "group", "my group", "a group id"),
        ({"group": ""}, "group", "", "a group id"),
        ({"control_topic": "bad topic"}, "control_topic", "bad topic", "ASCII"),
        ({"peer_id": "peer 1"}, "peer_id", "peer 1", "a peer id"),
        ({"group_protocol": "eager"}, "group_protocol", "eager", "classic, consumer"),
        ({"assignment_strategy": "sticky"}, "assignment_strategy", "sticky", "cooperative-sticky"),
        ({"session_timeout_ms": 500}, "session_timeout_ms", 500, "1000 to"),
        ({"commit_interval_ms": 0}, "commit_interval_ms", 0, "1 to 60000"),
        ({"commit_interval_ms": "100"}, "commit_interval_ms", "100", "an integer"),
        ({"commit_interval_ms": True}, "commit_interval_ms", True, "an integer"),
        (
            {"commit_interval_ms": 3000, "transaction_timeout_ms": 5000},
            "commit_interval_ms",
            3000,
            "at most half of transaction_timeout_ms (5000)",
        ),
        ({"transaction_timeout_ms": 900_001}, "transaction_timeout_ms", 900_001, "1000 to 900000"),
        (
            {"on_revoke_budget_ms": 60_000},
            "on_revoke_budget_ms",
            60_000,
            "below transaction_timeout_ms",
        ),
        ({"max_batch": 0}, "max_batch", 0, "1 to 1000000"),
        ({"max_in_flight": 10}, "max_in_flight", 10, "at least max_batch (10000)"),
        ({"header_prefix": "md "}, "header_prefix", "md ", "no spaces"),
        ({"audit_topic": "x y"}, "audit_topic", "x y", "ASCII"),
        ({"audit_topic": "mdpeer.control"}, "audit_topic", "mdpeer.control", "control topic"),
        ({"metrics_port": 70000}, "metrics_port", 70000, "0 to 65535"),
        ({"log_level": "LOUD"}, "log_level", "LOUD", "DEBUG, INFO"),
        ({"log_format": "xml"}, "log_format", "xml", "json, text"),
        ({"static_membership": "yes"}, "static_membership", "yes", "true or false"),
        ({"routes_file": "r.toml"}, "routes_file", "r.toml", "a path"),
    ],
)
def test_validation_names_field_and_value(
    kwargs: dict[str, object], field: str, value: object, reason: str
) -> None:
    args: dict[str, object] = {"bootstrap": "localhost:9092", **kwargs}
    with pytest.raises(ConfigError) as err:
        PeerSettings(**args)  # type: ignore[arg-type]
    assert err.value.field == field
    assert err.value.value == value
    assert reason in err.value.reason


@pytest.mark.parametrize(
    ("kwargs", "field", "reason"),
    [
        ({"servers": ("nohost",)}, "source.servers", "host:port"),
        ({"encryption": "true"}, "source.encryption", "true or false"),
        ({"poll_idle_max_ms": 10}, "source.poll_idle_max_ms", "50 to"),
        ({"request_timeout_ms": 10}, "source.request_timeout_ms", "100 to"),
        ({"max_concurrency": 0}, "source.max_concurrency", "1 to 1024"),
        ({"max_buffered_messages": 0}, "source.max_buffered_messages", "1 to"),
        ({"doorbell": "yes"}, "source.doorbell", "auto, on, off"),
        ({"doorbell_module": "not a module"}, "source.doorbell_module", "module name"),
        ({"doorbell_module": "a..b"}, "source.doorbell_module", "module name"),
        ({"poll_safety_interval_ms": 999}, "source.poll_safety_interval_ms", "1000 to"),
        (
            {"poll_safety_interval_ms": 2000, "poll_idle_max_ms": 5000},
            "source.poll_safety_interval_ms",
            "at least poll_idle_max_ms (5000)",
        ),
    ],
)
def test_source_validation(kwargs: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        SourceSettings(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field
    assert reason in err.value.reason


def test_doorbell_settings_from_file_and_environment_name_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.toml",
        'bootstrap = "k:1"\n[source]\ndoorbell = "off"\ndoorbell_module = "my.client"\n'
        "poll_safety_interval_ms = 60000\n",
    )
    source = load_settings(path, {}, {}).source
    assert (source.doorbell, source.doorbell_module) == ("off", "my.client")
    assert source.poll_safety_interval_ms == 60000
    assert "doorbell" not in source.rest_settings()  # the REST source takes none of them
    default = load_settings(None, {"MDPEER_BOOTSTRAP": "k:1"}, {}).source
    assert (default.doorbell, default.doorbell_module) == ("auto", "migratorydata_client_python")
    assert default.poll_safety_interval_ms == 30000
    with pytest.raises(ConfigError) as err:
        load_settings(path, {"MDPEER_DOORBELL": "sometimes"}, {})
    assert err.value.field == "MDPEER_DOORBELL"
    assert err.value.hint == "from the environment"


def test_log_level_is_case_insensitive() -> None:
    assert PeerSettings(bootstrap="k:1", log_level="debug").log_level == "DEBUG"


def test_require_source() -> None:
    with pytest.raises(ConfigError, match="no MigratoryData server"):
        PeerSettings(bootstrap="k:1").require_source()
    PeerSettings(bootstrap="k:1", source=SourceSettings(servers=("h:1",))).require_source()


@pytest.mark.parametrize("prop", sorted(MANAGED_KAFKA))
def test_managed_kafka_properties_cannot_be_overridden(prop: str) -> None:
    for section in ("kafka", "kafka_producer", "kafka_consumer"):
        with pytest.raises(ConfigError) as err:
            PeerSettings(bootstrap="k:1", **{section: {prop: "x"}})  # type: ignore[arg-type]
        assert err.value.field == f"{section}.{prop}"
        assert "set by mdpeer" in err.value.reason


# --- loading: the file ------------------------------------------------------------------------


def test_peer_toml_fixture() -> None:
    s = load_settings(DATA / "peer.toml", {}, {})
    assert s.bootstrap == "kafka1:9092,kafka2:9092"
    assert s.group == "bridge"
    assert s.control_topic == "bridge.control"
    assert s.peer_id == "peer-1"
    assert s.static_membership is True
    assert s.commit_interval_ms == 200
    assert s.max_batch == 5000
    assert s.header_prefix == "mig."
    assert s.audit_topic == "bridge.audit"
    assert s.metrics_port == 9464
    assert s.log_level == "DEBUG"
    assert s.log_format == "text"
    # Files named in the config are relative to it, not to the working directory.
    assert s.routes_file == DATA / "routes.toml"
    assert s.source.servers == ("push1.example.com:443", "50 push2.example.com:443")
    assert s.source.encryption is True
    assert s.source.token == Secret("fixture-md-token")
    # [kafka] keys written as dotted TOML keys come back as librdkafka property names.
    assert s.kafka["security.protocol"] == "SASL_SSL"
    assert s.kafka["sasl.username"] == "mdpeer"
    assert s.kafka["sasl.password"] == Secret("fixture-kafka-password")
    assert dict(s.kafka_producer) == {"linger.ms": "20", "compression.type": "lz4"}


def test_unknown_keys_in_the_file_are_errors_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "peer.toml", 'bootstrap = "k:1"\ncomit_interval_ms = 5\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path, {}, {})
    assert err.value.field == "comit_interval_ms"
    assert "unknown setting; did you mean 'commit_interval_ms'?" in err.value.reason
    assert err.value.hint == f"in {path}"
    path = write(tmp_path, "peer.toml", 'bootstrap = "k:1"\n[source]\nserver = "a:1"\n')
    with pytest.raises(ConfigError, match="did you mean 'servers'") as err:
        load_settings(path, {}, {})
    assert err.value.field == "source.server"
    path = write(tmp_path, "peer.toml", 'bootstrap = "k:1"\n[metrics]\nport = 1\n')
    with pytest.raises(ConfigError, match="unknown setting") as err:
        load_settings(path, {}, {})
    assert err.value.field == "metrics"


def test_kafka_tables_pass_anything_through(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "peer.toml",
        'bootstrap = "k:1"\n[kafka]\n"socket.keepalive.enable" = true\nfetch.max.bytes = 1048576\n'
        "[kafka_consumer]\nfetch.wait.max.ms = 50\n",
    )
    s = load_settings(path, {}, {})
    assert dict(s.kafka) == {"socket.keepalive.enable": "true", "fetch.max.bytes": "1048576"}
    assert dict(s.kafka_consumer) == {"fetch.wait.max.ms": "50"}


def test_file_errors_name_the_toml_key(tmp_path: Path) -> None:
    path = write(tmp_path, "peer.toml", 'bootstrap = "k:1"\nmax_batch = "lots"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path, {}, {})
    assert (err.value.field, err.value.value) == ("max_batch", "lots")
    assert err.value.hint == f"in {path}"
    path = write(tmp_path, "peer.toml", 'bootstrap = "k:1"\n[source]\nmax_concurrency = 0\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path, {}, {})
    assert (err.value.field, err.value.value) == ("source.max_concurrency", 0)
    assert err.value.hint == f"in {path}"


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "p.toml", "bootstrap = \n"), {}, {})
    with pytest.raises(ConfigError, match=r"expected a \.toml file or a connector \.json"):
        load_settings(write(tmp_path, "p.ini", ""), {}, {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", {}, {})
    with pytest.raises(ConfigError, match="no such file") as err:
        load_settings(write(tmp_path, "p.toml", 'routes_file = "nope.toml"\n'), BOOT, {})
    assert err.value.field == "routes_file"


def test_bootstrap_is_required() -> None:
    with pytest.raises(ConfigError, match="--bootstrap, MDPEER_BOOTSTRAP") as err:
        load_settings(None, {}, {})
    assert err.value.field == "bootstrap"


def test_the_vendor_connector_json_as_config_file() -> None:
    s = load_settings(DATA / "connector.json", BOOT, {})
    assert s.source.servers == ("localhost:8800",)
    assert s.source.encryption is False
    assert s.source.token is not None
    assert s.source.token.reveal() == "some-token"
    assert s.routes_file == DATA / "connector.json"
    assert any("connector.class" in n for n in s.notes)
    # Flags still win over the connector's values.
    s = load_settings(DATA / "connector.json", BOOT, {"servers": "md:8801", "token": "t2"})
    assert s.source.servers == ("md:8801",)
    assert s.source.token == Secret("t2")


def test_config_file_from_environment() -> None:
    s = load_settings(None, {"MDPEER_CONFIG": str(DATA / "peer.toml")}, {})
    assert s.group == "bridge"


# --- loading: precedence ----------------------------------------------------------------------


def test_flags_beat_env_beat_file_beat_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "peer.toml",
        'bootstrap = "file:1"\ngroup = "g-file"\npeer_id = "p-file"\nmax_batch = 7\n'
        "max_in_flight = 7\n",
    )
    env = {"MDPEER_BOOTSTRAP": "env:1", "MDPEER_GROUP": "g-env", "MDPEER_METRICS_PORT": "9100"}
    flags: dict[str, object] = {"bootstrap": "flag:1", "peer_id": None, "metrics_port": 9200}
    s = load_settings(path, env, flags)
    assert s.bootstrap == "flag:1"  # flag > env > file
    assert s.group == "g-env"  # env > file
    assert s.peer_id == "p-file"  # a None flag is an unset flag
    assert s.max_batch == 7  # file > default
    assert s.metrics_port == 9200
    assert s.commit_interval_ms == 100  # default
    assert s.control_topic == "g-env.control"


@settings(deadline=None)  # file I/O on a shared machine
@given(
    st.integers(1, 10_000),
    st.one_of(st.none(), st.integers(1, 10_000)),
    st.one_of(st.none(), st.integers(1, 10_000)),
)
def test_the_highest_layer_that_sets_a_value_wins(
    in_file: int, in_env: int | None, in_flag: int | None
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "peer.toml"
        path.write_text(f'bootstrap = "k:1"\nmetrics_port = {in_file}\n')
        env = {} if in_env is None else {"MDPEER_METRICS_PORT": str(in_env)}
        s = load_settings(path, env, {"metrics_port": in_flag})
    expected = in_flag if in_flag is not None else in_env if in_env is not None else in_file
    assert s.metrics_port == expected


def test_env_values_are_parsed_and_empty_means_unset() -> None:
    env = {
        **BOOT,
        "MDPEER_STATIC_MEMBERSHIP": "true",
        "MDPEER_ENCRYPTION": "1",
        "MDPEER_SERVERS": "a:1, 50 b:2",
        "MDPEER_MAX_BATCH": "500",
        "MDPEER_GROUP": "",
        "MDPEER_AUDIT_TOPIC": "audit",
        "MDPEER_LOG_LEVEL": "warning",
    }
    s = load_settings(None, env, {})
    assert s.static_membership is True
    assert s.source.encryption is True
    assert s.source.servers == ("a:1", "50 b:2")
    assert s.max_batch == 500
    assert s.group == "mdpeer"
    assert s.audit_topic == "audit"
    assert s.log_level == "WARNING"


def test_errors_name_the_env_var_or_flag() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, {**BOOT, "MDPEER_MAX_BATCH": "ten"}, {})
    assert (err.value.field, err.value.value) == ("MDPEER_MAX_BATCH", "ten")
    assert err.value.hint == "from the environment"
    # A cross-field check is reported against the setting the operator gave.
    with pytest.raises(ConfigError) as err:
        load_settings(None, {**BOOT, "MDPEER_MAX_IN_FLIGHT": "10"}, {})
    assert err.value.field == "MDPEER_MAX_IN_FLIGHT"
    assert "at least max_batch" in err.value.reason
    with pytest.raises(ConfigError) as err:
        load_settings(None, BOOT, {"metrics_port": -1})
    assert (err.value.field, err.value.value) == ("--metrics-port", -1)
    assert err.value.hint == "from the command line"
    with pytest.raises(ConfigError) as err:
        load_settings(None, BOOT, {"peer_id": "has space"})
    assert err.value.field == "--peer-id"
    with pytest.raises(ConfigError, match="not a setting"):
        load_settings(None, BOOT, {"colour": "blue"})


def test_kafka_properties_from_env(tmp_path: Path) -> None:
    pw = write(tmp_path, "pw", "from-file\n")
    env = {
        **BOOT,
        "MDPEER_RDKAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "MDPEER_RDKAFKA_SASL_PASSWORD_FILE": str(pw),
    }
    s = load_settings(None, env, {})
    assert s.kafka["security.protocol"] == "SASL_SSL"
    assert s.kafka["sasl.password"] == Secret("from-file")


# --- secrets ----------------------------------------------------------------------------------

TOKEN = "TOPSECRET-md-token-1"
PASSWORD = "TOPSECRET-kafka-pw-2"


def secret_settings(tmp_path: Path) -> PeerSettings:
    path = write(
        tmp_path,
        "peer.toml",
        f'bootstrap = "k:1"\n[source]\nservers = "h:1"\ntoken = "{TOKEN}"\n'
        f'[kafka]\nsasl.password = "{PASSWORD}"\nssl.key.password = "{PASSWORD}"\n',
    )
    return load_settings(path, {}, {})


def test_secrets_never_show(tmp_path: Path) -> None:
    s = secret_settings(tmp_path)
    for text in (repr(s), str(s), str(s.to_dict()), repr(s.source), repr(dict(s.kafka))):
        assert TOKEN not in text
        assert PASSWORD not in text
    assert s.to_dict()["source"]["token"] == "***"
    assert s.to_dict()["kafka"]["sasl.password"] == "***"
    revealed = s.to_dict(redact=False)
    assert revealed["source"]["token"] == TOKEN
    assert revealed["kafka"]["sasl.password"] == PASSWORD


def test_secrets_only_revealed_in_librdkafka_dicts(tmp_path: Path) -> None:
    s = secret_settings(tmp_path)
    assert producer_config(s)["sasl.password"] == PASSWORD
    assert consumer_config(s)["ssl.key.password"] == PASSWORD


def test_secrets_never_in_error_messages(tmp_path: Path) -> None:
    cases = [
        f'bootstrap = "k:1"\ntokn = "{TOKEN}"\n',  # a typo'd key holding the secret
        f'bootstrap = "k:1"\n[source]\ntoken = ["{TOKEN}"]\n',
        f'bootstrap = "k:1"\n[kafka]\nsasl.password = ["{PASSWORD}"]\n',
        f'bootstrap = "k:1"\n[kafka]\nsasl.password = "{PASSWORD}"\nsasl.password_file = "/x"\n',
    ]
    for text in cases:
        with pytest.raises(ConfigError) as err:
            load_settings(write(tmp_path, "p.toml", text), {}, {})
        assert TOKEN not in str(err.value)
        assert PASSWORD not in str(err.value)
    with pytest.raises(ConfigError) as err:
        PeerSettings(bootstrap="k:1", kafka={"sasl.password": 5})  # type: ignore[dict-item]
    assert "5" not in str(err.value)


def test_token_from_value_or_file(tmp_path: Path) -> None:
    tok = write(tmp_path, "token", "  from-file \n")
    assert load_settings(None, {**BOOT, "MDPEER_TOKEN_FILE": str(tok)}, {}).source.token == (
        Secret("from-file")
    )
    # A higher layer's value replaces a lower layer's file, and the other way round.
    s = load_settings(None, {**BOOT, "MDPEER_TOKEN_FILE": str(tok)}, {"token": "flag"})
    assert s.source.token == Secret("flag")
    s = load_settings(None, {**BOOT, "MDPEER_TOKEN": "env"}, {"token_file": str(tok)})
    assert s.source.token == Secret("from-file")
    with pytest.raises(ConfigError, match="give token or token_file, not both"):
        load_settings(None, {**BOOT, "MDPEER_TOKEN": "a", "MDPEER_TOKEN_FILE": str(tok)}, {})
    with pytest.raises(ConfigError, match="cannot read") as err:
        load_settings(None, {**BOOT, "MDPEER_TOKEN_FILE": str(tmp_path / "nope")}, {})
    assert err.value.field == "MDPEER_TOKEN_FILE"
    with pytest.raises(ConfigError, match="the file is empty"):
        load_settings(None, {**BOOT, "MDPEER_TOKEN_FILE": str(write(tmp_path, "e", "\n"))}, {})


def test_kafka_secret_from_file_rules(tmp_path: Path) -> None:
    pw = write(tmp_path, "pw", "p")
    both = f'bootstrap = "k:1"\n[kafka]\nsasl.password = "x"\n"sasl.password_file" = "{pw}"\n'
    with pytest.raises(ConfigError, match="not both"):
        load_settings(write(tmp_path, "p.toml", both), {}, {})
    plain = f'bootstrap = "k:1"\n[kafka]\n"client.id_file" = "{pw}"\n'
    with pytest.raises(ConfigError, match="only secret properties come from a file"):
        load_settings(write(tmp_path, "p.toml", plain), {}, {})
    # The environment's file replaces the config file's value.
    over = 'bootstrap = "k:1"\n[kafka]\nsasl.password = "x"\n'
    s = load_settings(
        write(tmp_path, "p.toml", over), {"MDPEER_RDKAFKA_SASL_PASSWORD_FILE": str(pw)}, {}
    )
    assert s.kafka["sasl.password"] == Secret("p")


# --- librdkafka dicts -------------------------------------------------------------------------


def test_producer_config() -> None:
    s = PeerSettings(
        bootstrap="k:1",
        group="g",
        peer_id="p1",
        transaction_timeout_ms=30_000,
        kafka={"client.rack": "r1"},
        kafka_producer={"linger.ms": "20"},
    )
    conf = producer_config(s)
    assert conf["bootstrap.servers"] == "k:1"
    assert conf["transactional.id"] == "g-p1"
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["transaction.timeout.ms"] == 30_000
    assert conf["linger.ms"] == "20"  # the passthrough wins over mdpeer's default
    assert producer_config(replace(s, kafka_producer={}))["linger.ms"] == 50
    assert conf["client.rack"] == "r1"
    assert conf["client.id"] == "mdpeer-p1"
    assert conf["partitioner"] == "murmur2_random"  # Java-compatible placement
    # topic_creation = "cluster" (default): asking for a topic lets the cluster create it
    assert conf["allow.auto.create.topics"] is True
    assert conf["delivery.report.only.error"] is True  # no Python call per delivered record
    for mode in ("create", "never"):  # mdpeer creates it, or nobody does: never by asking
        conf = producer_config(PeerSettings(bootstrap="k:1", peer_id="p1", topic_creation=mode))
        assert conf["allow.auto.create.topics"] is False


def test_producer_linger_is_half_the_commit_interval_within_5_to_50_ms() -> None:
    def linger(interval_ms: int) -> object:
        s = PeerSettings(bootstrap="k:1", group="g", peer_id="p1", commit_interval_ms=interval_ms)
        return producer_config(s)["linger.ms"]

    assert [linger(ms) for ms in (1, 10, 40, 100, 1000)] == [5, 5, 20, 50, 50]


def test_peer_id_admin_is_reserved() -> None:
    with pytest.raises(ConfigError, match="peer_id='admin': reserved"):
        PeerSettings(bootstrap="k:1", peer_id="admin")


def test_consumer_config_classic() -> None:
    s = PeerSettings(
        bootstrap="k:1", group="g", peer_id="p1", kafka_consumer={"fetch.wait.max.ms": "50"}
    )
    conf = consumer_config(s)
    assert conf["group.id"] == "g"
    assert conf["isolation.level"] == "read_committed"
    assert conf["enable.auto.commit"] is False
    assert conf["auto.offset.reset"] == "earliest"
    assert conf["group.protocol"] == "classic"
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"
    assert conf["session.timeout.ms"] == 10_000
    assert conf["heartbeat.interval.ms"] == 1000
    assert conf["fetch.wait.max.ms"] == "50"
    assert "group.instance.id" not in conf
    assert "transactional.id" not in conf


def test_consumer_config_kip848_and_static_membership() -> None:
    s = PeerSettings(
        bootstrap="k:1", peer_id="p7", group_protocol="consumer", static_membership=True
    )
    conf = consumer_config(s)
    assert conf["group.protocol"] == "consumer"
    assert "partition.assignment.strategy" not in conf
    assert "session.timeout.ms" not in conf
    assert conf["group.instance.id"] == "p7"


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_librdkafka_accepts_the_dicts(protocol: str) -> None:
    # Building clients checks every property name and value; nothing connects (port 1).
    s = PeerSettings(
        bootstrap="127.0.0.1:1",
        peer_id="p1",
        group_protocol=protocol,
        static_membership=True,
        kafka={"socket.keepalive.enable": "true", "log_level": "0"},
    )
    Producer(producer_config(s)).flush(0)
    Consumer(consumer_config(s)).close()


def test_librdkafka_refuses_unknown_passthrough() -> None:
    s = PeerSettings(bootstrap="127.0.0.1:1", peer_id="p1", kafka={"no.such.property": "1"})
    with pytest.raises(KafkaException, match="No such configuration property"):
        Producer(producer_config(s))


def test_every_setting_is_documented() -> None:
    from peer.config.load import SETTINGS

    doc = (Path(__file__).parent.parent / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    for name in SETTINGS:
        assert f"| `{name}` | `MDPEER_{name.upper()}` |" in doc, name
    for prop in MANAGED_KAFKA:
        assert f"`{prop}`" in doc, prop


def test_source_settings_feed_the_rest_source() -> None:
    rest_config = pytest.importorskip("peer.source.rest_config")
    tok = Secret("t")
    source = SourceSettings(
        servers=("100 a.example.com:443", "50 b.example.com:443"),
        encryption=True,
        token=tok,
        max_concurrency=4,
        poll_idle_max_ms=2500,
        request_timeout_ms=3000,
        max_buffered_messages=777,
    )
    conf = rest_config.RestSourceConfig.from_settings(source.rest_settings())
    assert [str(s) for s in conf.servers] == ["a.example.com:443", "50 b.example.com:443"]
    assert conf.encryption is True
    assert conf.token == tok
    assert conf.max_concurrency == 4
    assert conf.poll_idle_max == 2.5
    assert conf.request_timeout == 3.0
    assert conf.max_buffered_messages == 777
