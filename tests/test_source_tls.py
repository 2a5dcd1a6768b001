"""``encryption = true``: the source speaks HTTPS and verifies the server against a CA file."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.source.base import Message, Position
from peer.source.rest import RestSource, RestSourceConfig
from peer.source.servers import parse_servers
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


def test_https_with_a_private_ca(tls_server: tuple[ScriptedServer, Path]) -> None:
    server, cert = tls_server
    config = RestSourceConfig(
        servers=parse_servers(server.url), encryption=True, tls_ca_file=cert, poll_idle_max=0.05
    )
    with RestSource(config) as source:
        source.subscribe(SUBJECT, after=Position(1, 0))
        got: list[Message] = []
        end = time.monotonic() + 15
        while len(got) < 3:
            assert time.monotonic() < end, f"only {got}"
            got += [e for e in source.poll(100, 0.05) if isinstance(e, Message)]
    assert [m.seq for m in got] == [1, 2, 3]
    assert server.requests


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
