"""A secured local cluster (``mdpeer kafka up --secure``): TLS, SASL/SCRAM and ACLs.

Three listeners per node, none of them anonymous:

* ``CLIENT`` (the client port) -- ``SASL_SSL`` with ``SCRAM-SHA-512``: every client logs in
  as a SCRAM user over TLS; the principal is ``User:<name>``.
* ``INTERNAL`` (``port + 200``) -- inter-broker traffic (replication), ``SSL`` with client
  certificates required;
* ``CONTROLLER`` (``port + 100``) -- KRaft, ``SSL`` with client certificates required.

Brokers and controllers present the one broker certificate (``CN=broker``) and
``ssl.principal.mapping.rules`` turns it into ``User:broker``. The ``StandardAuthorizer``
denies what no ACL allows (``allow.everyone.if.no.acl.found=false``); ``User:admin`` and
``User:broker`` are super users. The SCRAM users are written into the metadata log when
storage is formatted (``kafka-storage format --add-scram``), the only way to have them
before a broker runs.

The files, in ``<data>/secure/`` (mode 0700)::

    ca.pem                 the CA certificate: ssl.ca.location / ssl.truststore.location
    broker.pem             the broker's private key and certificate chain (0600)
    <user>.password        the user's random password (0600)
    <user>.properties      a Java client config for Kafka's tools, --command-config (0600)

No password is ever printed, logged or put on a command line: the storage tool reads its
``--add-scram`` arguments from a 0600 argument file that is deleted after the format.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from peer.dev.localkafka.certs import BROKER_CN, make_certificates
from peer.dev.localkafka.layout import HOST, NodeSpec
from peer.errors import ConfigError, LocalKafkaError
from peer.secret import Secret

SECURE_DIR: Final = "secure"
SECURITY_PROTOCOL: Final = "SASL_SSL"
SASL_MECHANISM: Final = "SCRAM-SHA-512"
ADMIN_USER: Final = "admin"
#: the users made at format time: the super user, a peer and an operator (no ACLs yet)
DEFAULT_USERS: Final = (ADMIN_USER, "peer", "operator")
BROKER_PRINCIPAL: Final = f"User:{BROKER_CN}"
AUTHORIZER: Final = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_SCRAM_LOGIN: Final = "org.apache.kafka.common.security.scram.ScramLoginModule"
_USER_NAME: Final = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def check_users(users: Iterable[str]) -> tuple[str, ...]:
    """The users to create, ``admin`` first and each once; names are plain words."""
    out = [ADMIN_USER]
    for name in users:
        if not _USER_NAME.match(name):
            raise ConfigError("users", name, "must be a lower-case word (a-z, 0-9, _ and -)")
        if name == BROKER_CN:
            raise ConfigError("users", name, "is the brokers' own principal (their certificate)")
        if name not in out:
            out.append(name)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Security:
    """Where a secured cluster's client files are. Paths only, never a password."""

    dir: Path
    users: tuple[str, ...]

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def keystore_file(self) -> Path:
        return self.dir / "broker.pem"

    def password_file(self, user: str) -> Path:
        self._known(user)
        return self.dir / f"{user}.password"

    def properties_file(self, user: str) -> Path:
        self._known(user)
        return self.dir / f"{user}.properties"

    def password(self, user: str) -> Secret:
        """The user's password, read from its file (a :class:`Secret`: never in a repr)."""
        return Secret.from_file(self.password_file(user), field=f"{user} password file")

    def client_config(self, user: str = ADMIN_USER) -> dict[str, Any]:
        """librdkafka properties that log in as ``user`` (``bootstrap.servers`` aside).

        The values are strings; the type is confluent_kafka's (whose dicts are invariant).
        """
        return {
            "security.protocol": SECURITY_PROTOCOL,
            "sasl.mechanisms": SASL_MECHANISM,
            "sasl.username": user,
            "sasl.password": self.password(user).reveal(),
            "ssl.ca.location": str(self.ca_file),
        }

    def to_json(self) -> dict[str, Any]:
        """The ``security`` object of ``up --json`` / ``status --json`` and the state file."""
        return {
            "security_protocol": SECURITY_PROTOCOL,
            "sasl_mechanism": SASL_MECHANISM,
            "ca_file": str(self.ca_file),
            "admin_user": ADMIN_USER,
            "super_users": [f"User:{ADMIN_USER}", BROKER_PRINCIPAL],
            "users": {
                u: {
                    "password_file": str(self.password_file(u)),
                    "properties_file": str(self.properties_file(u)),
                }
                for u in self.users
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Security:
        """Read back :meth:`to_json` (from the state file or ``up --json``)."""
        try:
            ca = Path(str(data["ca_file"]))
            users = tuple(str(u) for u in data["users"])
        except (KeyError, TypeError) as exc:
            raise LocalKafkaError(f"not a secured cluster's description: missing {exc}") from None
        if ADMIN_USER not in users:
            raise LocalKafkaError(f"a secured cluster's description without the {ADMIN_USER} user")
        return cls(dir=ca.parent, users=users)

    def _known(self, user: str) -> None:
        if user not in self.users:
            raise LocalKafkaError(
                f"the local Kafka has no user {user!r} (users: {', '.join(self.users)})"
            )


def librdkafka_config(info: Mapping[str, Any], user: str = ADMIN_USER) -> dict[str, Any]:
    """librdkafka properties for ``user`` from ``mdpeer kafka up|status --json`` output.

    ``info`` is the whole JSON object (``bootstrap`` and ``security``). The password is
    read from the user's file. A cluster without security gives ``bootstrap.servers`` only.
    """
    config: dict[str, Any] = {"bootstrap.servers": str(info["bootstrap"])}
    security = info.get("security")
    if security:
        config.update(Security.from_json(security).client_config(user))
    return config


# -- preparing the files -----------------------------------------------------------------
def secure_dir(data_dir: Path) -> Path:
    return data_dir / SECURE_DIR


def prepare(data_dir: Path, users: tuple[str, ...], *, keep_passwords: bool) -> Security:
    """Write a new CA and broker certificate, and each user's password and properties.

    ``keep_passwords``: storage is reused, and its metadata log already holds the SCRAM
    credentials of the existing password files: keep those (a missing one is an error the
    caller avoids by formatting again). Otherwise every password is new.
    """
    root = secure_dir(data_dir)
    if not keep_passwords and root.exists():
        shutil.rmtree(root)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.chmod(0o700)
    security = Security(dir=root, users=users)
    certs = make_certificates((HOST, "localhost"))
    _write(security.ca_file, certs.ca_pem, 0o644)
    _write(security.keystore_file, certs.broker_pem, 0o600)
    for user in users:
        path = security.password_file(user)
        if not (keep_passwords and path.is_file()):
            _write(path, (secrets.token_urlsafe(24) + "\n").encode(), 0o600)
        _write(security.properties_file(user), _java_client_properties(security, user), 0o600)
    return security


def can_keep(data_dir: Path, users: tuple[str, ...]) -> bool:
    """Whether every user of ``users`` already has a password file (storage may be reused)."""
    root = secure_dir(data_dir)
    return all((root / f"{u}.password").is_file() for u in users)


def _java_client_properties(security: Security, user: str) -> bytes:
    password = security.password(user).reveal()
    lines = [
        f"# {user} on the secured local Kafka: mdpeer kafka tool NAME --command-config <this file>",
        f"security.protocol={SECURITY_PROTOCOL}",
        f"sasl.mechanism={SASL_MECHANISM}",
        f'sasl.jaas.config={_SCRAM_LOGIN} required username="{user}" password="{password}";',
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={_escape(str(security.ca_file))}",
    ]
    return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\")


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically, created with ``mode`` (never readable by others first)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(partial, mode)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# -- the broker's side -------------------------------------------------------------------
def internal_port(node: NodeSpec) -> int:
    if node.internal_port is None:
        raise LocalKafkaError(f"node {node.id} has no internal port: the cluster is not secured")
    return node.internal_port


def broker_settings(node: NodeSpec, security: Security) -> dict[str, str]:
    """What a secured node's ``server.properties`` sets on top of the plain settings."""
    iport = internal_port(node)
    return {
        "listeners": f"CLIENT://{HOST}:{node.port},INTERNAL://{HOST}:{iport},"
        f"CONTROLLER://{HOST}:{node.controller_port}",
        "advertised.listeners": f"CLIENT://{HOST}:{node.port},INTERNAL://{HOST}:{iport}",
        "listener.security.protocol.map": "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL",
        "inter.broker.listener.name": "INTERNAL",
        "controller.listener.names": "CONTROLLER",
        # TLS everywhere, from PEM files (Kafka 4.x reads them; no keytool, no JKS).
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(security.keystore_file),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(security.ca_file),
        # Brokers and controllers prove who they are with the broker certificate...
        "listener.name.internal.ssl.client.auth": "required",
        "listener.name.controller.ssl.client.auth": "required",
        # ... whose subject CN=broker is the principal User:broker.
        "ssl.principal.mapping.rules": "RULE:^CN=([a-zA-Z0-9._-]+)$/$1/,DEFAULT",
        # Clients log in with SCRAM; the credentials are in the metadata log.
        "sasl.enabled.mechanisms": SASL_MECHANISM,
        "listener.name.client.sasl.enabled.mechanisms": SASL_MECHANISM,
        f"listener.name.client.{SASL_MECHANISM.lower()}.sasl.jaas.config": (
            f"{_SCRAM_LOGIN} required;"
        ),
        # ACLs decide; nothing is allowed without one, except to the super users.
        "authorizer.class.name": AUTHORIZER,
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN_USER};{BROKER_PRINCIPAL}",
    }


def scram_arguments(security: Security) -> list[str]:
    """``--add-scram`` arguments of ``kafka-storage format``: they hold the passwords."""
    out: list[str] = []
    for user in security.users:
        password = security.password(user).reveal()
        out += ["--add-scram", f"{SASL_MECHANISM}=[name={user},password={password}]"]
    return out


@contextlib.contextmanager
def argument_file(path: Path, args: Iterable[str]) -> Iterator[str]:
    """A JVM ``@argfile`` (mode 0600) holding ``args``; yields ``@path``, then deletes it.

    The launcher expands it into the main class and its arguments, so secrets in them are
    not visible in the process list.
    """
    text = "\n".join('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in args)
    _write(path, (text + "\n").encode(), 0o600)
    try:
        yield f"@{path}"
    finally:
        path.unlink(missing_ok=True)
