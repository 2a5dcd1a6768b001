"""REST source settings and the server list: parsing, validation, weighted choice, failover."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from peer.config.servers import ServerAddress, parse_server, parse_servers
from peer.errors import ConfigError
from peer.secret import Secret
from peer.source.rest_config import RestSourceConfig
from peer.source.servers import ServerPool


def test_vendor_style_server_list() -> None:
    servers = parse_servers("push1.example.com:443, 50 push2.example.com:443,0 [::1]:8800")
    assert servers == (
        ServerAddress("push1.example.com", 443, 100),
        ServerAddress("push2.example.com", 443, 50),
        ServerAddress("::1", 8800, 0),
    )
    assert servers[2].netloc == "[::1]:8800"
    assert [str(s) for s in servers] == [
        "push1.example.com:443",
        "50 push2.example.com:443",
        "0 [::1]:8800",
    ]


def test_server_list_from_a_list() -> None:
    assert parse_servers(["100 a:1", "b:2"]) == (ServerAddress("a", 1), ServerAddress("b", 2))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "at least one"),
        ("host", "host:port"),
        ("host:http", "host:port"),
        ("101 host:1", "weight"),
        ("x host:1", "weight"),
        ("host:0", "port"),
        ("host:70000", "port"),
        ("a b c:1", "weight"),
        ("::1:8800", "brackets"),
        ("a:1,a:1", "twice"),
        ("bad_host!:1", "host:port"),
    ],
)
def test_bad_server_entries_are_refused_naming_the_field(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        parse_servers(text)
    assert info.value.field == "servers"


def test_pool_keeps_its_server_while_it_answers_and_fails_over() -> None:
    now = [0.0]
    a, b = parse_server("a:1"), parse_server("b:1")
    pool = ServerPool([a, b], down_for=5.0, rng=random.Random(1), clock=lambda: now[0])
    first = pool.choose()
    assert all(pool.choose() == first for _ in range(20))
    other = b if first == a else a
    assert pool.mark_down(first) is True
    assert pool.mark_down(first) is False  # already down: not a new state change
    assert pool.choose() == other
    pool.mark_down(other)
    # everything is down: the one that failed longest ago is tried
    assert pool.choose() == first
    now[0] = 6.0
    assert not pool.is_down(first)
    assert pool.mark_up(first) is True
    assert pool.mark_up(first) is False


def test_pool_choice_follows_weights_and_zero_is_a_backup() -> None:
    servers = parse_servers("80 a:1,20 b:1,0 backup:1")
    pool = ServerPool(servers, down_for=1.0, rng=random.Random(7))
    picks: Counter[str] = Counter()
    for _ in range(4000):
        server = pool.choose()
        picks[server.host] += 1
        pool.mark_down(server)  # force a new choice next time
        pool.mark_up(server)
    assert picks["backup"] == 0
    assert 0.75 < picks["a"] / 4000 < 0.85
    pool.mark_down(servers[0])
    pool.mark_down(servers[1])
    assert pool.choose().host == "backup"


def test_config_defaults_and_normalisation() -> None:
    cfg = RestSourceConfig(servers="localhost:8800")  # type: ignore[arg-type]
    assert cfg.servers == (ServerAddress("localhost", 8800),)
    assert cfg.scheme == "http"
    assert cfg.max_buffered_messages == 10_000
    assert cfg.history_fetch == 1000
    assert cfg.poll_idle_max == 1.0
    assert RestSourceConfig(servers=cfg.servers, encryption=True).scheme == "https"


def test_repr_never_shows_the_token(tmp_path: Path) -> None:
    cfg = RestSourceConfig(servers=parse_servers("h:1"), token=Secret("s3cr3t-token"))
    assert "s3cr3t-token" not in repr(cfg)
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    from_file = RestSourceConfig.from_settings({"servers": "h:1", "token_file": str(token_file)})
    assert from_file.token is not None
    assert from_file.token.reveal() == "file-token"
    assert "file-token" not in repr(from_file)


def test_from_settings_converts_strings() -> None:
    cfg = RestSourceConfig.from_settings(
        {
            "servers": "100 a:443,b:443",
            "encryption": "true",
            "token": "t",
            "max_concurrency": "4",
            "poll_idle_max": "2.5",
            "retry_give_up": "30",
            "history_fetch": 50,
        }
    )
    assert cfg.encryption is True
    assert cfg.max_concurrency == 4
    assert cfg.poll_idle_max == 2.5
    assert cfg.retry_give_up == 30.0
    assert cfg.history_fetch == 50
    assert cfg.token == Secret("t")
    assert RestSourceConfig.from_settings({"servers": "a:1", "retry_give_up": "never"}) == (
        RestSourceConfig(servers=parse_servers("a:1"))
    )


@pytest.mark.parametrize(
    ("settings", "field", "value"),
    [
        ({"servers": "a:1", "max_concurrency": "0"}, "max_concurrency", 0),
        ({"servers": "a:1", "max_concurrency": "lots"}, "max_concurrency", "lots"),
        ({"servers": "a:1", "poll_idle_min": "-1"}, "poll_idle_min", -1.0),
        ({"servers": "a:1", "request_timeout": "nan"}, "request_timeout", None),
        ({"servers": "a:1", "encryption": "maybe"}, "encryption", "maybe"),
        ({"servers": "a:1", "poll_idle_min": "3", "poll_idle_max": "1"}, "poll_idle_max", 1.0),
        ({"servers": "a:1", "retry_initial": "9", "retry_max": "1"}, "retry_max", 1.0),
        ({"servers": "a:1", "max_buffered_bytes": "1.5"}, "max_buffered_bytes", "1.5"),
        ({"servers": "a:1", "histroy_fetch": "5"}, "histroy_fetch", "5"),
        ({"encryption": "true"}, "servers", None),
        ({"servers": "a:1", "token": "x", "token_file": "/f"}, "token_file", "/f"),
        ({"servers": "a:1", "token_file": "/nonexistent/token"}, "token_file", None),
    ],
)
def test_bad_settings_name_field_and_value(
    settings: dict[str, str], field: str, value: object
) -> None:
    with pytest.raises(ConfigError) as info:
        RestSourceConfig.from_settings(settings)
    assert info.value.field == field
    if value is not None:
        assert info.value.value == value


def test_token_value_is_not_in_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        RestSourceConfig.from_settings({"servers": "a:1", "token": 12345})
    assert "12345" not in str(info.value)


def test_source_lifecycle_without_traffic() -> None:
    from peer.errors import SourceError
    from peer.source.rest import RestSource

    source = RestSource(RestSourceConfig(servers=parse_servers("127.0.0.1:9")))
    with pytest.raises(RuntimeError, match="before start"):
        source.poll(10, 0)
    source.start()
    source.start()  # idempotent
    assert source.poll(10, 0.01) == []
    assert "127.0.0.1:9" in repr(source)
    source.close()
    source.close()  # idempotent
    assert source.poll(10, 1.0) == []  # closed: returns at once
    with pytest.raises(SourceError, match="closed"):
        source.subscribe("/a", after=None)
    with pytest.raises(SourceError, match="closed"):
        source.start()
    source.unsubscribe("/a")  # harmless
