"""Options shared by the admin commands, and how they become Kafka client settings.

The admin commands read the same settings as ``mdpeer run`` (flags > ``MDPEER_*`` env >
``--config`` file > defaults, see peer.config.load), so an operator who has a peer's config
file at hand points the admin commands at the same cluster, group and security properties
with ``--config peer.toml``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable
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


@dataclass(frozen=True, slots=True)
class Target:
    """Which deployment an admin command works on, as its options gave it (``--bootstrap``,
    ``--group``, ``--config``, ``--timeout``: declared by :func:`with_target`)."""

    bootstrap: str | None
    group: str | None
    config: Path | None
    timeout: float

    def deployment(self, *, lenient: bool | None = None) -> Deployment:
        """Resolve the options (flags > env > config file > defaults); ConfigError names the
        field.

        ``lenient`` None: ``MDPEER_LENIENT`` decides, for a connector JSON given as ``config``.
        """
        return self._resolve({}, lenient)

    def deployment_with_source(
        self, *, servers: str | None, token: str | None, token_file: Path | None
    ) -> Deployment:
        """:meth:`deployment` plus the MigratoryData settings of ``mdpeer run`` (``--servers``,
        ``--token``/``--token-file``; env and ``[source]`` of --config as there)."""
        # An empty value counts as unset, as an empty MDPEER_* variable does in load_settings.
        source = {
            "servers": servers or None,
            "token": token or None,
            "token_file": str(token_file) if token_file is not None else None,
        }
        return self._resolve(source, None)

    def _resolve(self, overrides: dict[str, str | None], lenient: bool | None) -> Deployment:
        flags = {"bootstrap": self.bootstrap, "group": self.group, **overrides}
        settings = load_settings(self.config, os.environ, flags, lenient=lenient)
        _quiet_client_logs(settings.log_level)
        name_deployment(settings.group, principal_of(settings))
        return Deployment(settings, self.timeout)


#: the options of a Target: (parameter, its typer declaration, default)
_TARGET_OPTIONS: Final = (
    ("bootstrap", Bootstrap, None),
    ("group", Group, None),
    ("config", ConfigFile, None),
    ("timeout", Timeout, DEFAULT_TIMEOUT),
)


def with_target(command: Callable[..., None]) -> Callable[..., None]:
    """Declare the :class:`Target` options in place of ``command``'s ``target`` parameter,
    and call it with them as one Target.

    Typer reads a command's options from its signature, so the wrapper's signature lists
    the four options where ``target`` stood: each command's help keeps its order.
    """
    signature = inspect.signature(command, eval_str=True)
    params: list[inspect.Parameter] = []
    for param in signature.parameters.values():
        if param.name != "target":
            params.append(param)
            continue
        params += [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value, annotation=alias)
            for name, alias, value in _TARGET_OPTIONS
        ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        given = {name: kwargs.pop(name) for name, _, _ in _TARGET_OPTIONS}
        command(target=Target(**given), **kwargs)

    # inspect.signature() (and so typer) takes __signature__ first; mypy knows no such
    # attribute of a function.
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return wrapper


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
    "Target",
    "Timeout",
    "Token",
    "TokenFile",
    "resolve_lenient",
    "with_target",
]
