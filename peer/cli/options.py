"""Options shared by the admin commands, and how they become Kafka client settings.

The admin commands read the same settings as ``mdpeer run`` (flags > ``MDPEER_*`` env >
``--config`` file > defaults, see peer.config.load), so an operator who has a peer's config
file at hand points the admin commands at the same cluster, group and security properties
with ``--config peer.toml``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

import typer

from peer.cli.common import name_deployment
from peer.config.load import lenient_setting, load_settings
from peer.config.settings import PeerSettings
from peer.kafka.clients import principal_of, section_config

#: seconds an admin command waits for Kafka before it reports it unreachable
DEFAULT_TIMEOUT: Final = 10.0

Bootstrap = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        "-b",
        envvar="MDPEER_BOOTSTRAP",
        help="Kafka bootstrap servers, host:port[,host:port...] (or `bootstrap` in --config).",
        show_default=False,
    ),
]
Group = Annotated[
    str | None,
    typer.Option(
        "--group",
        "-g",
        envvar="MDPEER_GROUP",
        help="Consumer group of the deployment; its control topic is <group>.control "
        "(unless control_topic is set in --config). Default: mdpeer.",
        show_default=False,
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="MDPEER_CONFIG",
        help="A peer config file (TOML or connector JSON): its Kafka settings are used.",
        show_default=False,
        dir_okay=False,
    ),
]
Timeout = Annotated[
    float,
    typer.Option(
        "--timeout",
        envvar="MDPEER_ADMIN_TIMEOUT",
        min=0.5,
        max=600.0,
        help="Seconds to wait for Kafka before reporting it unreachable.",
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (for scripts).")]
# Not envvar=: typer would refuse a bad MDPEER_LENIENT with its own words; the settings
# loader names the variable (resolve_lenient()).
Lenient = Annotated[
    bool,
    typer.Option(
        "--lenient",
        help="Unknown migratorydata.* keys of a connector JSON are notes, not errors "
        "(also MDPEER_LENIENT=true).",
    ),
]
# The MigratoryData options of `mdpeer run`, same names and env vars, for admin commands that
# ask the source (status: each subject's head, for its lag).
Servers = Annotated[
    str | None,
    typer.Option(
        "--servers",
        envvar="MDPEER_SERVERS",
        help="MigratoryData servers, host:port or http(s)://host[:port], comma-separated "
        "(or source.servers in --config).",
        show_default=False,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Entitlement token (prefer --token-file or MDPEER_TOKEN: argv is visible).",
        show_default=False,
    ),
]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        envvar="MDPEER_TOKEN_FILE",
        help="File holding the entitlement token.",
        show_default=False,
        dir_okay=False,
    ),
]


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where one deployment's control topic lives and how to reach it."""

    settings: PeerSettings
    timeout: float

    @property
    def group(self) -> str:
        return self.settings.group

    @property
    def topic(self) -> str:
        return self.settings.control_topic

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def client_conf(self, section: str = "kafka") -> dict[str, Any]:
        """librdkafka properties for an admin client, producer (``kafka_producer``) or reader
        (``kafka_consumer``) (:func:`peer.kafka.clients.section_config`). Secrets are
        revealed here: never print the result."""
        return section_config(self.settings, section)


def resolve_lenient(flag: bool) -> bool:
    """``--lenient``, else ``MDPEER_LENIENT`` (a ConfigError naming it when malformed)."""
    return lenient_setting(flag or None, os.environ)


def deployment(
    bootstrap: str | None,
    group: str | None,
    config: Path | None,
    timeout: float,
    *,
    lenient: bool | None = None,
) -> Deployment:
    """Resolve the options (flags > env > config file > defaults); ConfigError names the field.

    ``lenient`` None: ``MDPEER_LENIENT`` decides, for a connector JSON given as ``config``.
    """
    settings = load_settings(
        config, os.environ, {"bootstrap": bootstrap, "group": group}, lenient=lenient
    )
    _quiet_client_logs(settings.log_level)
    name_deployment(settings.group, principal_of(settings))
    return Deployment(settings, timeout)


def deployment_with_source(
    bootstrap: str | None,
    group: str | None,
    config: Path | None,
    timeout: float,
    *,
    servers: str | None,
    token: str | None,
    token_file: Path | None,
    lenient: bool | None = None,
) -> Deployment:
    """:func:`deployment` plus the MigratoryData settings of ``mdpeer run`` (``--servers``,
    ``--token``/``--token-file``; env and ``[source]`` of --config as there)."""
    # An empty value counts as unset, as an empty MDPEER_* variable does in load_settings.
    overrides = {
        "bootstrap": bootstrap,
        "group": group,
        "servers": servers or None,
        "token": token or None,
        "token_file": str(token_file) if token_file is not None else None,
    }
    settings = load_settings(config, os.environ, overrides, lenient=lenient)
    _quiet_client_logs(settings.log_level)
    name_deployment(settings.group, principal_of(settings))
    return Deployment(settings, timeout)


def _quiet_client_logs(level: str) -> None:
    # librdkafka reports every retry and refused connection; an admin command turns what
    # matters into one `error:` line, so its chatter is only shown when asked for (DEBUG).
    if level != "DEBUG":
        logging.getLogger("peer.kafka").setLevel(logging.CRITICAL)


__all__ = [
    "DEFAULT_TIMEOUT",
    "Bootstrap",
    "ConfigFile",
    "Deployment",
    "Group",
    "JsonOut",
    "Lenient",
    "Servers",
    "Timeout",
    "Token",
    "TokenFile",
    "deployment",
    "deployment_with_source",
    "resolve_lenient",
]
