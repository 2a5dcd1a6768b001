"""``encryption = true``: the source speaks HTTPS and verifies the server against a CA file."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.config.load import load_settings
from peer.config.servers import parse_servers
from peer.errors import ConfigError
from peer.model import Message, Position
from peer.source.rest import RestSource, RestSourceConfig
from tests.test_source_malformed import SUBJECT, ScriptedServer, up_to


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ScriptedServer, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = ScriptedServer([], up_to(3), ssl_context=context)
    server.start()
    yield server, cert
    server.stop()


def first_three(config: RestSourceConfig) -> list[Message]:
    """The first 3 messages after (1, 0) a source with ``config`` receives (15 s deadline)."""
    with RestSource(config) as source:
        source.subscribe(SUBJECT, after=Position(1, 0))
        got: list[Message] = []
        end = time.monotonic() + 15
        while len(got) < 3:
            assert time.monotonic() < end, f"only {got}"
            got += [e for e in source.poll(100, 0.05) if isinstance(e, Message)]
    return got


def test_https_with_a_private_ca(tls_server: tuple[ScriptedServer, Path]) -> None:
    server, cert = tls_server
    config = RestSourceConfig(
        servers=parse_servers(server.url), encryption=True, tls_ca_file=cert, poll_idle_max=0.05
    )
    assert [m.seq for m in first_three(config)] == [1, 2, 3]
    assert server.requests


def sockets_to(port: int) -> int:
    """This process's open TCP sockets connected to ``port``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue  # not a socket
        with sock, contextlib.suppress(OSError):  # OSError: not connected
            count += sock.family == socket.AF_INET and sock.getpeername()[1] == port
    return count


def test_a_closed_source_leaves_no_socket_open_when_the_server_answers_its_close_late(
    tls_server: tuple[ScriptedServer, Path],
) -> None:
    """A TLS close waits for the server's close_notify; a source whose loop ended first left
    the socket open, found later as an unclosed transport (a CI failure in a random test)."""
    server, cert = tls_server
    port = int(server.url.rsplit(":", 1)[1])
    config = RestSourceConfig(
        servers=parse_servers(server.url), encryption=True, tls_ca_file=cert, poll_idle_max=0.05
    )
    with RestSource(config) as source:
        source.subscribe(SUBJECT, after=Position(1, 0))
        end = time.monotonic() + 15
        while not any(isinstance(e, Message) for e in source.poll(100, 0.05)):
            assert time.monotonic() < end, "no message"
        assert sockets_to(port) >= 1
        server.stall(0.5)
    assert sockets_to(port) == 0


def test_an_unverifiable_certificate_is_not_accepted(
    tls_server: tuple[ScriptedServer, Path],
) -> None:
    server, _ = tls_server
    config = RestSourceConfig(
        servers=parse_servers(server.url), encryption=True, retry_initial=0.01, retry_max=0.05
    )
    with RestSource(config) as source:
        source.subscribe(SUBJECT, after=Position(1, 0))
        end = time.monotonic() + 15
        while source.stats().request_errors < 2:
            assert time.monotonic() < end
            assert source.poll(100, 0.05) == []
    assert not server.requests  # the handshake failed: no request reached the handler


def test_a_peer_config_with_tls_ca_file_reaches_a_private_ca_server(
    tls_server: tuple[ScriptedServer, Path], tmp_path: Path
) -> None:
    """``[source] tls_ca_file`` (relative to the config file) is what ``mdpeer run`` and
    ``mdpeer status`` build their source from."""
    server, cert = tls_server
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    shutil.copy(cert, conf_dir / "md-ca.pem")
    config = conf_dir / "peer.toml"
    config.write_text(
        'bootstrap = "127.0.0.1:9092"\n'
        f'[source]\nservers = "{server.url}"\n'
        'encryption = true\ntls_ca_file = "md-ca.pem"\n'
    )
    settings = load_settings(config, {}, {})
    assert settings.source.tls_ca_file == conf_dir / "md-ca.pem"
    rest = RestSourceConfig.from_settings(
        {**settings.source.rest_settings(), "poll_idle_max": 0.05}
    )
    assert [m.seq for m in first_three(rest)] == [1, 2, 3]


def test_a_bad_tls_ca_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        load_settings(None, {"MDPEER_BOOTSTRAP": "b:9092", "MDPEER_TLS_CA_FILE": "/no/ca.pem"}, {})
    assert missing.value.field == "MDPEER_TLS_CA_FILE"
    assert "no such file" in str(missing.value)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as bad:
        load_settings(None, {"MDPEER_BOOTSTRAP": "b:9092", "MDPEER_TLS_CA_FILE": str(junk)}, {})
    assert bad.value.field == "MDPEER_TLS_CA_FILE"
    assert "not a PEM file of CA certificates" in str(bad.value)
    with pytest.raises(ConfigError, match="not a PEM file"):
        RestSourceConfig(servers=parse_servers("localhost:8800"), tls_ca_file=junk)
