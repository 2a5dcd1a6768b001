"""Peer settings: server URLs and the encryption they imply through every layer (file, env,
flags, connector JSON), and reading a connector JSON config strictly or leniently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peer.config.load import lenient_setting, load_settings
from peer.config.settings import SourceSettings
from peer.errors import ConfigError
from peer.source.rest_config import RestSourceConfig
from tests.fixtures.config_files import BOOT, write


def test_source_settings_keep_encryption_unset_and_resolve_it() -> None:
    plain = SourceSettings(servers=("http://localhost:8800/",))
    assert plain.servers == ("http://localhost:8800",)
    assert plain.encryption is None
    assert plain.effective_encryption is False
    tls = SourceSettings(servers=("https://push1.example.com", "50 push2.example.com:443"))
    assert tls.encryption is None
    assert tls.effective_encryption is True
    assert tls.rest_settings()["encryption"] is True
    assert SourceSettings(servers=("a:1",)).effective_encryption is False
    assert SourceSettings(servers=("a:1",), encryption=True).effective_encryption is True
    assert SourceSettings().effective_encryption is False


def test_source_settings_refuse_a_contradicting_encryption() -> None:
    with pytest.raises(ConfigError) as err:
        SourceSettings(servers=("https://md",), encryption=False)
    assert err.value.field == "source.encryption"
    assert "contradicts the source.servers entry 'https://md:443'" in err.value.reason


@pytest.mark.parametrize(
    ("servers", "tls"),
    [
        ("http://localhost:8800", False),
        ("http://localhost:8800/", False),
        ("https://push1.example.com", True),
        ("50 https://push1.example.com:443, https://push2.example.com", True),
        ("localhost:8800", False),
    ],
)
def test_every_layer_takes_urls_and_run_and_status_agree(
    tmp_path: Path, servers: str, tls: bool
) -> None:
    from_env = load_settings(None, {**BOOT, "MDPEER_SERVERS": servers}, {})
    from_flag = load_settings(None, BOOT, {"servers": servers})
    toml = write(tmp_path, "peer.toml", f'bootstrap = "k:1"\n[source]\nservers = "{servers}"\n')
    from_file = load_settings(toml, {}, {})
    conn = write(tmp_path, "c.json", json.dumps({"migratorydata.servers": servers}))
    from_connector = load_settings(conn, BOOT, {})
    expected = RestSourceConfig(servers=servers).servers  # type: ignore[arg-type]
    for settings in (from_env, from_flag, from_file, from_connector):
        assert settings.source.effective_encryption is tls
        # `mdpeer run` (peer.runner) and `mdpeer status` both build their client from this
        rest = RestSourceConfig.from_settings(settings.source.rest_settings())
        assert rest.scheme == ("https" if tls else "http")
        assert rest.servers == expected


def test_a_conflict_names_both_settings_as_written_and_where(tmp_path: Path) -> None:
    env = {**BOOT, "MDPEER_SERVERS": "https://md.example.com", "MDPEER_ENCRYPTION": "false"}
    with pytest.raises(ConfigError) as err:
        load_settings(None, env, {})
    assert str(err.value) == (
        "MDPEER_ENCRYPTION='false': contradicts the MDPEER_SERVERS entry "
        "'https://md.example.com:443' (https:// means TLS); drop one of the two or make them agree"
    )
    assert err.value.hint == "from the environment"

    toml = write(tmp_path, "peer.toml", 'bootstrap = "k:1"\n[source]\nencryption = true\n')
    with pytest.raises(ConfigError) as err:
        load_settings(toml, {"MDPEER_SERVERS": "http://localhost:8800"}, {})
    assert err.value.field == "source.encryption"
    assert err.value.value is True
    assert "the MDPEER_SERVERS entry 'http://localhost:8800' (http:// means no TLS)" in str(
        err.value
    )
    assert err.value.hint == f"source.encryption in {toml}, MDPEER_SERVERS from the environment"
    # the flag's servers replace the file's: no conflict with the file's encryption then
    ok = load_settings(toml, {}, {"servers": "md:443"})
    assert ok.source.effective_encryption is True


def test_a_connector_encryption_against_servers_from_the_environment(tmp_path: Path) -> None:
    conn = write(
        tmp_path,
        "c.json",
        json.dumps({"migratorydata.servers": "md:8800", "migratorydata.encryption": "false"}),
    )
    with pytest.raises(ConfigError) as err:
        load_settings(conn, {**BOOT, "MDPEER_SERVERS": "https://md2"}, {})
    assert err.value.field == "migratorydata.encryption"
    assert "contradicts the MDPEER_SERVERS entry 'https://md2:443'" in err.value.reason
    settings = load_settings(
        conn, {**BOOT, "MDPEER_SERVERS": "https://md2", "MDPEER_ENCRYPTION": "true"}, {}
    )
    assert settings.source.effective_encryption is True


def test_mixed_schemes_and_bad_urls_name_the_setting(tmp_path: Path) -> None:
    toml = write(
        tmp_path,
        "peer.toml",
        'bootstrap = "k:1"\n[source]\nservers = ["http://a:8800", "https://b"]\n',
    )
    with pytest.raises(ConfigError) as err:
        load_settings(toml, {}, {})
    assert err.value.field == "source.servers"
    assert err.value.reason.startswith("mixes http:// (http://a:8800) and https:// (https://b:443)")
    with pytest.raises(ConfigError) as err:
        load_settings(None, {**BOOT, "MDPEER_SERVERS": "http://md:8800/rest"}, {})
    assert err.value.field == "MDPEER_SERVERS"
    assert err.value.value == "http://md:8800/rest"
    assert "a path ('/rest') is not allowed" in err.value.reason
    with pytest.raises(ConfigError) as err:
        load_settings(None, BOOT, {"servers": "localhost"})
    assert err.value.field == "--servers"
    assert "no port" in err.value.reason


# --- a connector JSON config: strict unless lenient ---------------------------------------------


@pytest.fixture
def typo_connector(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        "connector.json",
        json.dumps({"migratorydata.servers": "md:8800", "migratorydata.subjects.a": "t"}),
    )


def test_a_connector_config_with_an_unknown_key_is_refused(typo_connector: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(typo_connector, BOOT, {})
    assert err.value.field == "migratorydata.subjects.a"
    assert "did you mean 'migratorydata.subject.a'?" in err.value.reason


@pytest.mark.parametrize(
    ("lenient", "env"),
    [(True, {}), (None, {"MDPEER_LENIENT": "true"}), (True, {"MDPEER_LENIENT": "false"})],
)
def test_lenient_from_the_flag_or_the_environment(
    typo_connector: Path, lenient: bool | None, env: dict[str, str]
) -> None:
    settings = load_settings(typo_connector, {**BOOT, **env}, {}, lenient=lenient)
    assert settings.source.servers == ("md:8800",)
    assert any(
        n.startswith("migratorydata.subjects.a: not a MigratoryData") for n in settings.notes
    )


def test_a_bad_mdpeer_lenient_is_named(typo_connector: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(typo_connector, {**BOOT, "MDPEER_LENIENT": "maybe"}, {})
    assert str(err.value) == "MDPEER_LENIENT='maybe': expected true or false"
    assert err.value.hint == "from the environment"
    assert lenient_setting(None, {"MDPEER_LENIENT": ""}) is False
    assert lenient_setting(False, {"MDPEER_LENIENT": "true"}) is False  # noqa: FBT003
    assert lenient_setting(None, {"MDPEER_LENIENT": "yes"}) is True
