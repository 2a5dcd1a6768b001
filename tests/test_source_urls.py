"""Server entries written as URLs reach real servers: the reference server over
``http://127.0.0.1:PORT/``, and a private-CA HTTPS server over ``https://127.0.0.1:PORT`` with no
``encryption`` setting. Both through the settings ``mdpeer run`` and ``mdpeer status`` build
their REST clients from (``SourceSettings.rest_settings``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from peer.config.load import load_settings
from peer.config.settings import PeerSettings
from peer.dev.sim.server import SimServer
from peer.model import Message, Position
from peer.source.heads import Head, ask_heads
from peer.source.rest import RestSource, RestSourceConfig
from tests.test_source_malformed import SUBJECT, ScriptedServer
from tests.test_source_tls import first_three, tls_server  # noqa: F401 - a fixture

DEADLINE_S = 20.0
FAST = {"poll_idle_min": 0.01, "poll_idle_max": 0.05, "retry_initial": 0.01, "retry_max": 0.2}


def rest_config(settings: PeerSettings, **overrides: Any) -> RestSourceConfig:
    """What peer.runner and `mdpeer status` build from the settings (test pacing added)."""
    return RestSourceConfig.from_settings({**settings.source.rest_settings(), **overrides})


@pytest.mark.sim
def test_an_http_url_entry_reaches_the_reference_server(
    sim_factory: Callable[..., SimServer],
) -> None:
    sim = sim_factory()
    assert sim.url.startswith("http://127.0.0.1:")
    first = Position(*sim.publish("/url/a", "m0"))
    sim.publish("/url/a", "m1")
    sim.publish("/url/a", "m2")
    settings = load_settings(None, {"MDPEER_BOOTSTRAP": "k:1", "MDPEER_SERVERS": f"{sim.url}/"}, {})
    assert settings.source.servers == (sim.url,)
    config = rest_config(settings, **FAST)
    assert config.scheme == "http"

    with RestSource(config) as source:
        source.subscribe("/url/a", after=first)
        got: list[Message] = []
        end = time.monotonic() + DEADLINE_S
        while len(got) < 2:
            assert time.monotonic() < end, f"only {got}"
            got += [e for e in source.poll(100, 0.05) if isinstance(e, Message)]
    assert [m.content for m in got] == [b"m1", b"m2"]

    # `mdpeer status` asks the heads with the same settings
    heads = ask_heads(rest_config(settings), ["/url/a"])
    assert heads == {"/url/a": Head("/url/a", Position(first.epoch, first.seq + 2), "history")}


def test_an_https_url_entry_speaks_tls_without_an_encryption_setting(
    tls_server: tuple[ScriptedServer, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    server, cert = tls_server
    config_file = tmp_path / "peer.toml"
    config_file.write_text(
        'bootstrap = "127.0.0.1:9092"\n'
        f'[source]\nservers = "https://{server.url}"\ntls_ca_file = "{cert}"\n'
    )
    settings = load_settings(config_file, {}, {})
    assert settings.source.encryption is None
    assert settings.source.effective_encryption is True
    config = rest_config(settings, poll_idle_max=0.05)
    assert config.scheme == "https"
    assert [m.seq for m in first_three(config)] == [1, 2, 3]
    heads = ask_heads(rest_config(settings), [SUBJECT])
    assert heads == {SUBJECT: Head(SUBJECT, Position(1, 3), "history")}
