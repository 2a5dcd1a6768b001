"""Helpers shared by the command groups: turning errors into one-line causes and exit codes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import typer
from confluent_kafka import KafkaException

from peer.control.reader import KafkaUnavailableError
from peer.errors import MdpeerError
from peer.kafka.errors import NotAuthorizedError, kafka_error_of
from peer.kafka.refusals import watching


@dataclass(slots=True)
class _Naming:
    """Who the running command is to the cluster's ACLs, to name a missing one."""

    group: str | None = None
    principal: str | None = None
    role: str = "admin"


NAMING = _Naming()


def name_deployment(group: str, principal: str | None, role: str = "admin") -> None:
    """The command works for ``group`` as ``principal``: a refused ACL names both."""
    NAMING.group, NAMING.principal, NAMING.role = group, principal, role


@contextlib.contextmanager
def expected_errors() -> Iterator[None]:
    """Turn an :class:`MdpeerError` into ``error: <cause>`` (+ hint) on stderr and exit 1.

    Kafka "not answering" while it refused the login meanwhile is reported as that refusal
    (peer.kafka.refusals); a missing ACL is named with the deployment's group and principal;
    a Kafka client that librdkafka would not create (a bad property) is one line too."""
    # a command names its deployment anew; an earlier one's (same process) must not show
    NAMING.group = NAMING.principal = None
    NAMING.role = "admin"
    with watching() as refused:
        try:
            yield
        except MdpeerError as exc:
            shown: MdpeerError = exc
            if isinstance(exc, KafkaUnavailableError) and refused:
                shown = refused[0]
            if isinstance(exc, NotAuthorizedError):
                shown = exc.named(principal=NAMING.principal, group=NAMING.group, role=NAMING.role)
            _fail(shown)
        except KafkaException as exc:
            err = kafka_error_of(exc)
            _fail(
                MdpeerError(
                    f"Kafka client: {err.str() if err is not None else exc}",
                    hint="check the Kafka properties ([kafka], [kafka_producer], "
                    "[kafka_consumer], MDPEER_RDKAFKA_*)",
                )
            )


def _fail(exc: MdpeerError) -> None:
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    if exc.hint:
        typer.echo(f"  hint: {exc.hint}", err=True)
    raise typer.Exit(1) from None
