"""A secured local Kafka (`mdpeer kafka up --secure`): TLS, SCRAM logins and ACLs, for real.

One 1-node secured cluster serves the module (the CLI test starts its own through the CLI).
The only shared fixtures it uses are that cluster's (tests/fixtures/secured.py); the ACLs it
grants are written with peer.control.acls, and everything else it does by hand.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient

from peer.control.acls import Acl, any_filter
from peer.dev.localkafka import Cluster, Security, free_port_base, librdkafka_config
from peer.dev.localkafka.secure import DEFAULT_USERS
from peer.testing import create_topics, mdpeer_argv, wait_until
from tests.fixtures.proc import run_captured
from tests.fixtures.secured import *  # noqa: F403 - the module's cluster: secured, security, admin

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


# -- helpers -------------------------------------------------------------------------------
class Captured(logging.Handler):
    """The log lines of one librdkafka client (a logger of its own, not propagated)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.logger = logging.getLogger(f"test.secure.{name}.{uuid.uuid4().hex[:6]}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def first_errors(config: dict[str, Any], log: Captured, timeout: float = 20.0) -> list[KafkaError]:
    """The errors an AdminClient with ``config`` reports (error_cb) on its first connection."""
    errors: list[KafkaError] = []
    full: dict[str, Any] = {**config, "error_cb": errors.append}
    admin = AdminClient(full, logger=log.logger)
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        admin.poll(0.2)  # serves error_cb
    assert errors, f"no error within {timeout}s"
    return errors


def create_topic(admin: AdminClient, name: str) -> None:
    create_topics(admin, [name])


def produce_one(config: dict[str, Any], topic: str) -> KafkaError | None:
    """Produce one record; the error of its delivery report (None: delivered)."""
    producer = Producer({**config, "message.timeout.ms": 15000})
    reports: list[KafkaError | None] = []
    producer.produce(topic, b"value", on_delivery=lambda err, _msg: reports.append(err))
    producer.flush(20)
    assert reports, "no delivery report within 20s"
    return reports[0]


def first_message(config: dict[str, Any], topic: str, group: str) -> Message:
    """The first message (or error event) a group consumer of ``topic`` gets."""
    consumer = Consumer(
        {**config, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                return msg
        raise AssertionError(f"nothing from {topic} within 30s")
    finally:
        consumer.close()


def mdpeer(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDPEER_KAFKA_")}
    return run_captured([*mdpeer_argv(), *args], timeout, env)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_description_names_files_and_the_helper_reads_them(
    secured: Cluster, security: Security
) -> None:
    described = json.loads(json.dumps(secured.describe()))  # what `up --json` prints
    sec = described["security"]
    assert sec["security_protocol"] == "SASL_SSL"
    assert sec["sasl_mechanism"] == "SCRAM-SHA-512"
    assert sec["ca_file"] == str(security.ca_file)
    assert set(sec["users"]) == set(DEFAULT_USERS)
    assert sec["super_users"] == ["User:admin", "User:broker"]
    text = json.dumps(described)
    assert not any(security.password(u).reveal() in text for u in DEFAULT_USERS)
    for user in DEFAULT_USERS:
        config = librdkafka_config(described, user)
        assert config == secured.client_config(user)
        assert config["sasl.username"] == user
        assert config["sasl.password"] == security.password(user).reveal()
        assert config["ssl.ca.location"] == str(security.ca_file)
        assert config["bootstrap.servers"] == secured.bootstrap
    [node] = described["nodes"]
    assert node["internal_port"] == node["port"] + 200
    assert "***" in repr(security.password("peer"))


def test_secrets_are_private_and_never_outside_their_files(
    secured: Cluster, security: Security
) -> None:
    assert mode(security.dir) == 0o700
    assert mode(security.keystore_file) == 0o600
    for user in DEFAULT_USERS:
        assert mode(security.password_file(user)) == 0o600
        assert mode(security.properties_file(user)) == 0o600
    assert mode(secured.data_dir / "node-1" / "logs" / "format.log") == 0o600
    passwords = [security.password(u).reveal().encode() for u in DEFAULT_USERS]
    assert len(set(passwords)) == len(passwords)
    assert all(len(p) >= 24 for p in passwords)
    # Configs, state, logs, storage: no password anywhere but in the secure/ files.
    scanned = 0
    for path in secured.data_dir.rglob("*"):
        if path.is_file() and security.dir not in path.parents:
            data = path.read_bytes()
            scanned += 1
            assert not any(p in data for p in passwords), f"a password is in {path}"
    assert scanned > 5
    for pid in secured.running_pids().values():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert not any(p in cmdline for p in passwords)


def test_the_admin_creates_a_topic(admin: AdminClient) -> None:
    name = f"secure.admin.{uuid.uuid4().hex[:8]}"
    create_topic(admin, name)
    assert name in admin.list_topics(timeout=10).topics


def test_a_user_without_acls_is_refused_until_the_admin_grants_them(
    secured: Cluster, admin: AdminClient
) -> None:
    topic = f"secure.peer.{uuid.uuid4().hex[:8]}"
    group = f"g.secure.peer.{uuid.uuid4().hex[:8]}"
    create_topic(admin, topic)
    peer = secured.client_config("peer")

    # No ACL: the peer can log in, and may do nothing.
    refused = produce_one(peer, topic)
    assert refused is not None
    assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
    denied = first_message(peer, topic, group).error()
    assert denied is not None
    assert denied.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, denied

    # LITERAL ALLOW bindings for User:peer on any host
    allowed = [("Topic", topic, "Write"), ("Topic", topic, "Read"), ("Group", group, "Read")]
    acls = [Acl(*acl).binding("User:peer") for acl in allowed]
    for future in admin.create_acls(acls, request_timeout=15).values():
        future.result(20)
    # The broker's authorizer learns them from the metadata log: wait until it shows them.
    mine = any_filter("User:peer")
    wait_until(
        lambda: set(acls) <= set(admin.describe_acls(mine, request_timeout=10).result(15)),
        20,
        "the broker knows the new ACLs",
    )

    assert produce_one(peer, topic) is None
    record = first_message(peer, topic, group)
    assert record.error() is None, record.error()
    assert record.value() == b"value"
    # ... and still nothing else: the operator has no ACL.
    refused = produce_one(secured.client_config("operator"), topic)
    assert refused is not None
    assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused


def test_a_wrong_password_fails_authentication_and_no_password_is_logged(
    secured: Cluster, security: Security
) -> None:
    config = secured.client_config("peer")
    wrong = "not-" + uuid.uuid4().hex
    log = Captured("wrong-password")
    errors = first_errors({**config, "sasl.password": wrong}, log)
    assert errors[0].code() == KafkaError._AUTHENTICATION, errors
    assert "SASL authentication error" in errors[0].str()
    assert "invalid credentials" in errors[0].str()
    shown = "\n".join([*log.lines, *(e.str() for e in errors)])
    assert log.lines
    assert wrong not in shown
    assert not any(security.password(u).reveal() in shown for u in DEFAULT_USERS)
    server_log = secured.log_path(1).read_text(errors="replace")
    assert "Failed authentication" in server_log
    assert wrong not in server_log


def test_a_client_without_the_ca_fails_tls_verification(secured: Cluster) -> None:
    config = secured.client_config("admin")
    del config["ssl.ca.location"]  # the system's CAs do not know this run's CA
    errors = first_errors(config, Captured("no-ca"))
    assert errors[0].code() == KafkaError._SSL, errors
    assert "certificate verify failed" in errors[0].str()


def test_the_internal_listeners_want_a_client_certificate(
    secured: Cluster, security: Security
) -> None:
    """Nothing is anonymous: the inter-broker and controller ports need the broker's cert."""
    node = secured.layout.node(1)
    for port in (node.internal_port, node.controller_port):
        config: dict[str, Any] = {
            "bootstrap.servers": f"127.0.0.1:{port}",
            "security.protocol": "SSL",
            "ssl.ca.location": str(security.ca_file),
        }
        errors = first_errors(config, Captured(f"no-cert-{port}"))
        # The broker's TLS alert ("bad certificate") ends the connection after the handshake.
        assert errors[0].code() in (KafkaError._SSL, KafkaError._TRANSPORT), errors
        assert "certificate" in errors[0].str(), errors


# -- the CLI ------------------------------------------------------------------------------
def test_up_secure_status_tool_down_from_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    port = free_port_base(1)
    up = mdpeer("kafka", "up", "--secure", "--port", str(port), "--data-dir", str(data), "--json")
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        assert info["bootstrap"] == f"127.0.0.1:{port}"
        sec = info["security"]
        assert sec["security_protocol"] == "SASL_SSL"
        assert sec["sasl_mechanism"] == "SCRAM-SHA-512"
        assert sec["ca_file"] == str(data / "secure" / "ca.pem")
        files = sec["users"]["admin"]
        assert files == {
            "password_file": str(data / "secure" / "admin.password"),
            "properties_file": str(data / "secure" / "admin.properties"),
        }
        for user in ("admin", "peer", "operator"):
            assert mode(Path(sec["users"][user]["password_file"])) == 0o600
            assert mode(Path(sec["users"][user]["properties_file"])) == 0o600
        password = Path(files["password_file"]).read_text().strip()
        assert password not in up.stdout + up.stderr

        status = mdpeer("kafka", "status", "--data-dir", str(data), "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["security"] == sec
        assert json.loads(status.stdout)["nodes"][0]["answering"] is True

        # Kafka's own tools log in with the admin's properties file.
        topic = f"secure.cli.{uuid.uuid4().hex[:8]}"
        command = ["--bootstrap-server", info["bootstrap"], "--command-config"]
        create = mdpeer(
            "kafka", "tool", "kafka-topics", *command, files["properties_file"], "--create",
            "--topic", topic,
        )  # fmt: skip
        assert create.returncode == 0, create.stderr
        listed = mdpeer(
            "kafka", "tool", "kafka-topics", *command, files["properties_file"], "--list"
        )
        assert listed.returncode == 0, listed.stderr
        assert topic in listed.stdout.split()

        down = mdpeer("kafka", "down", "--data-dir", str(data))
        assert down.returncode == 0, down.stderr
        assert "node 1: stopped" in down.stderr

        # Up again: storage (and so the SCRAM users) reused, the passwords kept, a new CA.
        ca_before = Path(sec["ca_file"]).read_bytes()
        again = mdpeer(
            "kafka", "up", "--secure", "--port", str(port), "--data-dir", str(data), "--json"
        )
        assert again.returncode == 0, again.stderr
        info = json.loads(again.stdout)
        assert Path(files["password_file"]).read_text().strip() == password
        assert Path(sec["ca_file"]).read_bytes() != ca_before
        admin = AdminClient(librdkafka_config(info, "admin"))
        assert topic in admin.list_topics(timeout=15).topics
        del admin
        gc.collect()
    finally:
        done = mdpeer("kafka", "down", "--data-dir", str(data), "--grace", "5", "--json")
    assert done.returncode == 0, done.stderr
    after = mdpeer("kafka", "status", "--data-dir", str(data), "--json")
    assert after.returncode == 1
    assert json.loads(after.stdout)["nodes"][0]["running"] is False
