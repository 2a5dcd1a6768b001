"""What `mdpeer kafka up --secure` writes before any broker runs: layout, certificates, files.

No Kafka here; tests/test_localkafka_secure.py runs the secured broker itself.
"""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from peer.dev.localkafka.certs import make_certificates
from peer.dev.localkafka.layout import (
    ClusterLayout,
    State,
    free_port_base,
    load_state,
    port_free,
    save_state,
)
from peer.dev.localkafka.secure import (
    DEFAULT_USERS,
    Security,
    argument_file,
    broker_settings,
    check_users,
    librdkafka_config,
    prepare,
    scram_arguments,
)
from peer.errors import ConfigError, LocalKafkaError
from peer.testing import mdpeer_argv
from tests.fixtures.proc import run_captured


def secure_layout(nodes: int = 1, port: int = 19092) -> ClusterLayout:
    return ClusterLayout.new(
        nodes=nodes, port=port, controller_port=None, kafka_version="4.3.1", secure=True
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secured_layout_has_an_internal_port_per_node() -> None:
    layout = secure_layout(3)
    assert [n.internal_port for n in layout.nodes] == [19292, 19293, 19294]
    assert layout.secure
    plain = ClusterLayout.new(nodes=3, port=19092, controller_port=None, kafka_version="4.3.1")
    assert not plain.secure
    assert all(n.internal_port is None for n in plain.nodes)
    # secured and plain storage are never reused for one another
    assert not layout.same_shape(plain)
    with pytest.raises(ConfigError, match="internal ports"):
        ClusterLayout.new(
            nodes=3, port=19092, controller_port=19293, kafka_version="4", secure=True
        )


def test_free_port_base_keeps_the_internal_ports_free() -> None:
    base = free_port_base(3)
    assert all(port_free(base + 200 + i) for i in range(3))


def test_the_state_keeps_security_and_internal_ports(tmp_path: Path) -> None:
    security = Security(dir=tmp_path / "secure", users=DEFAULT_USERS)
    state = State(secure_layout(3), security=security.to_json())
    save_state(tmp_path, state)
    loaded = load_state(tmp_path)
    assert loaded is not None
    assert loaded.layout == state.layout
    assert loaded.security == security.to_json()
    assert Security.from_json(loaded.security) == security


def test_every_listener_is_secured_and_acls_decide(tmp_path: Path) -> None:
    layout = secure_layout(3)
    node = layout.node(2)
    settings = broker_settings(node, Security(tmp_path, DEFAULT_USERS))
    assert settings["listeners"] == (
        "CLIENT://127.0.0.1:19093,INTERNAL://127.0.0.1:19293,CONTROLLER://127.0.0.1:19193"
    )
    assert settings["advertised.listeners"] == (
        "CLIENT://127.0.0.1:19093,INTERNAL://127.0.0.1:19293"
    )
    protocols = dict(p.split(":") for p in settings["listener.security.protocol.map"].split(","))
    assert protocols == {"CLIENT": "SASL_SSL", "INTERNAL": "SSL", "CONTROLLER": "SSL"}
    assert settings["inter.broker.listener.name"] == "INTERNAL"
    assert settings["listener.name.internal.ssl.client.auth"] == "required"
    assert settings["listener.name.controller.ssl.client.auth"] == "required"
    assert settings["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert settings["authorizer.class.name"].endswith(".StandardAuthorizer")
    assert settings["allow.everyone.if.no.acl.found"] == "false"
    assert settings["super.users"] == "User:admin;User:broker"
    assert settings["ssl.keystore.type"] == settings["ssl.truststore.type"] == "PEM"
    assert "password" not in " ".join(settings.values())


def test_the_broker_certificate_is_signed_by_the_ca_for_loopback() -> None:
    made = make_certificates(("127.0.0.1", "localhost"))
    ca = x509.load_pem_x509_certificate(made.ca_pem)
    chain = x509.load_pem_x509_certificates(made.broker_pem)
    assert [c.subject for c in chain] == [chain[0].subject, ca.subject]
    broker = chain[0]
    broker.verify_directly_issued_by(ca)
    assert broker.subject.rfc4514_string() == "CN=broker"
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    usage = broker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    # Kafka's PEM key store reads an unencrypted PKCS#8 key first in the file.
    assert made.broker_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert made.ca_pem != make_certificates().ca_pem  # a new CA each time


def test_prepare_writes_private_files_and_keeps_passwords_for_reused_storage(
    tmp_path: Path,
) -> None:
    security = prepare(tmp_path, DEFAULT_USERS, keep_passwords=False)
    assert mode(security.dir) == 0o700
    assert mode(security.keystore_file) == 0o600
    passwords = {}
    for user in DEFAULT_USERS:
        assert mode(security.password_file(user)) == 0o600
        assert mode(security.properties_file(user)) == 0o600
        passwords[user] = security.password(user).reveal()
        props = security.properties_file(user).read_text()
        assert "security.protocol=SASL_SSL\n" in props
        assert "sasl.mechanism=SCRAM-SHA-512\n" in props
        assert f'username="{user}" password="{passwords[user]}";' in props
        assert "ssl.truststore.type=PEM\n" in props
        assert f"ssl.truststore.location={security.ca_file}\n" in props
    assert len(set(passwords.values())) == 3
    ca = security.ca_file.read_bytes()

    again = prepare(tmp_path, DEFAULT_USERS, keep_passwords=True)
    assert {u: again.password(u).reveal() for u in DEFAULT_USERS} == passwords
    assert again.ca_file.read_bytes() != ca
    fresh = prepare(tmp_path, DEFAULT_USERS, keep_passwords=False)
    assert all(fresh.password(u).reveal() != passwords[u] for u in DEFAULT_USERS)
    assert sorted(p.name for p in tmp_path.joinpath("secure").iterdir()) == sorted(
        ["ca.pem", "broker.pem"]
        + [f"{u}.{kind}" for u in DEFAULT_USERS for kind in ("password", "properties")]
    )


def test_the_scram_arguments_go_through_a_private_file_that_is_then_gone(
    tmp_path: Path,
) -> None:
    security = prepare(tmp_path, ("admin", "peer"), keep_passwords=False)
    args = scram_arguments(security)
    password = security.password("peer").reveal()
    assert args[2:] == ["--add-scram", f"SCRAM-SHA-512=[name=peer,password={password}]"]
    path = tmp_path / "format.args"
    with argument_file(path, ["kafka.tools.StorageTool", 'a "quoted" \\ arg', *args]) as ref:
        assert ref == f"@{path}"
        assert mode(path) == 0o600
        lines = path.read_text().splitlines()
        assert lines[1] == '"a \\"quoted\\" \\\\ arg"'
    assert not path.exists()


def test_users_are_words_and_admin_always_comes_first() -> None:
    assert check_users(["peer", "admin", "peer", "ops-1"]) == ("admin", "peer", "ops-1")
    for bad in ("Peer", "broker", "a b", "x=y", ""):
        with pytest.raises(ConfigError):
            check_users([bad])


def test_librdkafka_config_of_a_plain_cluster_is_the_bootstrap_only() -> None:
    assert librdkafka_config({"bootstrap": "127.0.0.1:9092", "security": None}) == {
        "bootstrap.servers": "127.0.0.1:9092"
    }
    with pytest.raises(LocalKafkaError, match="no user 'nobody'"):
        Security(Path("/x"), DEFAULT_USERS).password_file("nobody")


def test_users_without_secure_are_a_usage_error(tmp_path: Path) -> None:
    done = run_captured(
        [*mdpeer_argv(), "kafka", "up", "--user", "alice", "--data-dir", str(tmp_path / "k")], 60
    )
    assert done.returncode == 2, done.stderr
    assert "need --secure" in done.stderr
    assert not (tmp_path / "k").exists()
