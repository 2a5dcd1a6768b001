"""Server entries as URLs: ``http(s)://host[:port]`` next to ``host:port``, the encryption the
scheme implies, and ``mdpeer sim publish --server`` agreeing with ``mdpeer run --servers``."""

from __future__ import annotations

import pytest

from peer.config.servers import ServerAddress, parse_server, parse_servers, resolve_encryption
from peer.dev.sim.publish import normalize_server
from peer.errors import ConfigError
from peer.source.rest_config import RestSourceConfig


@pytest.mark.parametrize(
    ("text", "expected", "shown"),
    [
        ("localhost:8800", ServerAddress("localhost", 8800), "localhost:8800"),
        (
            "http://localhost:8800",
            ServerAddress("localhost", 8800, scheme="http"),
            "http://localhost:8800",
        ),
        (
            "http://localhost:8800/",
            ServerAddress("localhost", 8800, scheme="http"),
            "http://localhost:8800",
        ),
        (
            "https://push2.example.com",
            ServerAddress("push2.example.com", 443, scheme="https"),
            "https://push2.example.com:443",
        ),
        (
            "http://push.example.com/",
            ServerAddress("push.example.com", 80, scheme="http"),
            "http://push.example.com:80",
        ),
        (
            "50 https://push2.example.com:443",
            ServerAddress("push2.example.com", 443, 50, "https"),
            "50 https://push2.example.com:443",
        ),
        (
            "HTTPS://Push.Example.com:8443",
            ServerAddress("Push.Example.com", 8443, scheme="https"),
            "https://Push.Example.com:8443",
        ),
        ("[::1]:8800", ServerAddress("::1", 8800), "[::1]:8800"),
        (
            "http://[::1]:8800",
            ServerAddress("::1", 8800, scheme="http"),
            "http://[::1]:8800",
        ),
        ("https://[::1]", ServerAddress("::1", 443, scheme="https"), "https://[::1]:443"),
        (
            "0 http://[2001:db8::1]:80/",
            ServerAddress("2001:db8::1", 80, 0, "http"),
            "0 http://[2001:db8::1]:80",
        ),
    ],
)
def test_accepted_server_entries(text: str, expected: ServerAddress, shown: str) -> None:
    server = parse_server(text)
    assert server == expected
    assert str(server) == shown
    # what settings keep (str) parses back to the same server
    assert parse_server(str(server)) == server


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("localhost", "no port: expected host:port or http(s)://host[:port]"),
        ("ws://md:8800", "the scheme 'ws' is not supported: use http:// or https://"),
        ("ftp://md", "the scheme 'ftp' is not supported"),
        ("http:/md:8800", "a URL needs '://' after the scheme"),
        ("http://md:8800/rest", "a path ('/rest') is not allowed"),
        ("md:8800/rest/consume", "a path ('/rest/consume') is not allowed"),
        ("http://md:8800//", "a path ('//') is not allowed"),
        ("http://md:8800?x=1", "a query ('?...') is not allowed"),
        ("http://md:8800/#top", "a fragment ('#...') is not allowed"),
        ("https://user@md", "user info ('user@') is not allowed"),
        ("md:abc", "the port 'abc' is not a number 1-65535 (host:port)"),
        ("http://md:", "the port '' is not a number"),
        ("http://md:0", "port must be 1-65535"),
        ("https://md:65536", "port must be 1-65535"),
        ("http://:8800", "no host"),
        ("http://", "no host"),
        ("http://::1:8800", "put an IPv6 address in brackets"),
        ("::1:8800", "put an IPv6 address in brackets"),
        ("http://[::1:8800", "an IPv6 address needs its closing bracket"),
        ("[zz]:80", "'zz' in brackets is not an IPv6 address"),
        ("[::1]8800", "expected ':port' after the IPv6 address"),
        ("101 https://md", "weight"),
        ("x https://md", "the weight must be an integer 0-100"),
        ("50 https://md extra", "expected '[weight ]address'"),
        ("http://bad_host!:80", "expected host:port or http(s)://host[:port]"),
    ],
)
def test_refused_server_entries_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_servers(text)
    assert info.value.field == "servers"
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("https://mdpeer:hunter2@md:443", "hunter2"),
        ("50 mdpeer:hunter2@md:443", "hunter2"),
        ("http://md:8800/?token=hunter2", "hunter2"),
        ("http://md:8800/rest?token=hunter2", "hunter2"),
    ],
)
def test_credentials_in_a_refused_entry_are_not_repeated(text: str, secret: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_servers(text)
    assert secret not in str(info.value)
    assert "***" in str(info.value)


def test_a_list_uses_one_scheme() -> None:
    with pytest.raises(ConfigError) as info:
        parse_servers("http://a:8800, 50 https://b:443")
    assert info.value.reason.startswith(
        "mixes http:// (http://a:8800) and https:// (50 https://b:443) entries"
    )
    # entries without a scheme take the list's; the same host:port twice is still refused
    assert [str(s) for s in parse_servers(["a:443", "https://b"])] == ["a:443", "https://b:443"]
    with pytest.raises(ConfigError, match="a:80 is listed twice"):
        parse_servers("http://a,a:80")


@pytest.mark.parametrize(
    ("servers", "encryption", "expected"),
    [
        ("a:1", None, False),
        ("a:1", True, True),
        ("a:1", False, False),
        ("https://a", None, True),
        ("https://a", True, True),
        ("http://a:8800", None, False),
        ("http://a:8800", False, False),
        ("a:443, https://b", None, True),
    ],
)
def test_encryption_is_the_setting_else_the_scheme_else_off(
    servers: str, encryption: bool | None, expected: bool
) -> None:
    assert resolve_encryption(parse_servers(servers), encryption) is expected
    config = RestSourceConfig(servers=parse_servers(servers), encryption=encryption)
    assert config.encryption is expected
    assert config.scheme == ("https" if expected else "http")


@pytest.mark.parametrize(
    ("servers", "encryption", "entry", "means"),
    [
        ("https://a", False, "https://a:443", "https:// means TLS"),
        ("b:1, 50 http://a:8800", True, "50 http://a:8800", "http:// means no TLS"),
    ],
)
def test_an_encryption_setting_against_the_scheme_is_refused_naming_both(
    servers: str, encryption: bool, entry: str, means: str
) -> None:
    with pytest.raises(ConfigError) as info:
        RestSourceConfig(servers=parse_servers(servers), encryption=encryption)
    assert info.value.field == "encryption"
    assert info.value.value is encryption
    assert f"contradicts the servers entry '{entry}' ({means})" in info.value.reason
    with pytest.raises(ConfigError) as named:
        resolve_encryption(
            parse_servers(servers),
            encryption,
            encryption_field="MDPEER_ENCRYPTION",
            encryption_value="no",
            servers_field="source.servers",
            hint="from the environment",
        )
    assert str(named.value).startswith(
        f"MDPEER_ENCRYPTION='no': contradicts the source.servers entry '{entry}'"
    )
    assert named.value.hint == "from the environment"


def test_from_settings_takes_an_unset_encryption_from_the_scheme() -> None:
    config = RestSourceConfig.from_settings({"servers": "https://md", "encryption": ""})
    assert config.encryption is True
    assert config.servers == (ServerAddress("md", 443, scheme="https"),)
    with pytest.raises(ConfigError, match="contradicts"):
        RestSourceConfig.from_settings({"servers": "https://md", "encryption": "false"})


# --- `mdpeer sim publish --server` takes the forms `mdpeer run --servers` does ----------------


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("127.0.0.1:8800", "http://127.0.0.1:8800"),
        ("http://127.0.0.1:8800", "http://127.0.0.1:8800"),
        ("http://127.0.0.1:8800/", "http://127.0.0.1:8800"),
        ("https://md.example.com", "https://md.example.com"),
        ("HTTP://md:1", "http://md:1"),
        ("[::1]:8800", "http://[::1]:8800"),
        ("http://[::1]:8800/", "http://[::1]:8800"),
    ],
)
def test_sim_publish_accepts_what_run_accepts(text: str, url: str) -> None:
    assert normalize_server(text) == url
    server = parse_server(text)
    assert (server.scheme or "http") == url.split("://", 1)[0]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("md", "no port"),
        ("md:0", "the port must be a number 1-65535"),
        ("md:abc", "the port must be a number 1-65535"),
        ("http://md:8800/rest", "a path ('/rest') is not allowed"),
        ("http://md:8800?x=1", "a query or fragment is not allowed"),
        ("http://md:8800#x", "a query or fragment is not allowed"),
        ("ftp://md:21", "the scheme 'ftp' is not http or https"),
        ("http://::1:8800", "put an IPv6 address in brackets"),
        ("https://user:pw@md", "user info ('user@') is not allowed"),
    ],
)
def test_sim_publish_refuses_what_run_refuses(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT or http") as info:
        normalize_server(text)
    assert problem in str(info.value)
    assert "pw@" not in str(info.value)
    with pytest.raises(ConfigError):
        parse_server(text)
