"""A login the cluster refuses: named at once, instead of "Kafka did not answer" much later.

librdkafka reports a refused login (``_AUTHENTICATION``: a wrong password, an unknown user, a
SASL mechanism the listener does not offer; ``_SSL``: the brokers' certificate does not
verify against ``ssl.ca.location``) only through the client's ``error_cb``, and keeps
reconnecting. A blocking call (metadata, ``init_transactions``) then waits out its whole
timeout and fails as if the brokers were away. So:

* every client's ``error_cb`` (:func:`peer.kafka.clients.with_callbacks`) hands a refusal to
  :func:`noticed`, which gives it, as a :class:`KafkaLoginError`, to every
  :func:`watching` block open on the thread that served the callback (callbacks run inside
  that thread's ``poll`` / ``consume``);
* :func:`list_topics`, the first request a command or a peer makes, asks in short slices
  and serves the callbacks in between, so a refused login ends it within about a second.

The error names what was tried (bootstrap servers, security protocol, SASL mechanism and
user, the CA file): never a password, which librdkafka's texts do not carry either.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException

from peer.errors import MdpeerError

#: the first slice of a metadata request; each next one is twice as long (a slow cluster
#: still gets whole answers, a refused login is seen after the first)
_FIRST_SLICE_S: Final = 0.5
#: SASL mechanisms whose principal is the user name (Kafka's default mapping)
_NAMED_MECHANISMS: Final = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"})
_AFTER: Final = re.compile(r"\s*\(after \d+ms in state \w+\)\s*$")


@dataclass(frozen=True, slots=True)
class Login:
    """How a client logs in, from its librdkafka properties. No secret in it."""

    bootstrap: str
    protocol: str
    mechanism: str | None = None
    user: str | None = None
    ca_file: str | None = None

    @classmethod
    def of(cls, conf: Mapping[str, Any]) -> Login:
        protocol = str(conf.get("security.protocol") or "PLAINTEXT").upper()
        sasl = protocol.startswith("SASL")
        mechanism = conf.get("sasl.mechanisms") or conf.get("sasl.mechanism")
        user = conf.get("sasl.username")
        ca = conf.get("ssl.ca.location")
        return cls(
            bootstrap=str(conf.get("bootstrap.servers") or conf.get("metadata.broker.list")),
            protocol=protocol,
            # librdkafka's default mechanism is GSSAPI
            mechanism=str(mechanism or "GSSAPI").upper() if sasl else None,
            user=str(user) if sasl and user else None,
            ca_file=str(ca) if ca and ("SSL" in protocol) else None,
        )

    @property
    def principal(self) -> str | None:
        """``User:<name>`` where the login decides it (SASL PLAIN, SCRAM), else None: a TLS
        certificate, Kerberos or OAuth principal is what the brokers' mapping makes of it."""
        if self.user and self.mechanism in _NAMED_MECHANISMS:
            return f"User:{self.user}"
        return None

    def describe(self) -> str:
        """E.g. ``user 'peer' with SASL SCRAM-SHA-512 over SASL_SSL``."""
        if self.mechanism is None:
            return f"no SASL login ({self.protocol})"
        who = f"user {self.user!r}" if self.user else "no sasl.username"
        return f"{who} with SASL {self.mechanism} over {self.protocol}"


class KafkaLoginError(MdpeerError):
    """The cluster refused this client's login (SASL) or its TLS handshake failed."""

    def __init__(self, err: KafkaError, login: Login) -> None:
        self.login = login
        self.code = err.name()
        text = _AFTER.sub("", err.str())
        if err.code() == KafkaError._AUTHENTICATION:
            super().__init__(
                f"Kafka at {login.bootstrap!r} refused the login of {login.describe()}: {text}",
                hint="check sasl.username and its password (sasl.password_file, "
                "MDPEER_RDKAFKA_SASL_PASSWORD_FILE), that the user exists on the cluster, and "
                "sasl.mechanism against the listener's",
            )
        else:
            ca = f"ssl.ca.location {login.ca_file!r}" if login.ca_file else "the system's CAs"
            super().__init__(
                f"TLS with Kafka at {login.bootstrap!r} failed ({login.protocol}, {ca}): {text}",
                hint="ssl.ca.location must hold the CA certificate that signed the brokers' "
                "certificates, and the bootstrap host names must be in those certificates",
            )


def is_refusal(err: KafkaError) -> bool:
    """A client-wide error that no reconnect will cure: a refused login or certificate."""
    if err.code() == KafkaError._AUTHENTICATION:
        return True
    return err.code() == KafkaError._SSL and "certificate" in err.str()


_local = threading.local()


def _sinks() -> list[list[KafkaLoginError]]:
    sinks: list[list[KafkaLoginError]] | None = getattr(_local, "sinks", None)
    if sinks is None:
        sinks = _local.sinks = []
    return sinks


@contextlib.contextmanager
def watching() -> Iterator[list[KafkaLoginError]]:
    """The login refusals that clients report on this thread while the block runs."""
    sink: list[KafkaLoginError] = []
    _sinks().append(sink)
    try:
        yield sink
    finally:
        _sinks().remove(sink)


def noticed(err: KafkaError, login: Login) -> None:
    """From a client's ``error_cb``: hand a refusal to the blocks watching on this thread."""
    if is_refusal(err):
        refusal = KafkaLoginError(err, login)
        for sink in _sinks():
            sink.append(refusal)


def list_topics(client: Any, timeout: float, topic: str | None = None) -> Any:
    """``client.list_topics`` within ``timeout``, in growing slices with the client's
    callbacks served between them: a refused login raises :class:`KafkaLoginError` at once.

    ``client`` is a Producer, Consumer (not yet assigned: its poll must find no record) or
    AdminClient; what ``list_topics`` raises last is raised at the deadline.
    """
    deadline = time.monotonic() + timeout
    wait = _FIRST_SLICE_S
    while True:
        left = deadline - time.monotonic()
        try:
            return client.list_topics(topic, timeout=max(min(wait, left), 0.1))
        except KafkaException:
            with watching() as refused:
                client.poll(0)
            if refused:
                raise refused[0] from None
            if time.monotonic() >= deadline:
                raise
        wait *= 2


__all__ = ["KafkaLoginError", "Login", "is_refusal", "list_topics", "noticed", "watching"]
