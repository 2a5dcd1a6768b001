"""The vendor connector's JSON config: routes and MigratoryData settings, taken as they are.

Users migrating from the MigratoryData Kafka Connect source connector keep their JSON: the bare
config object or the Connect REST body ``{"name": ..., "config": {...}}``. Keys we do not use
(converters, the connector class) are accepted and reported as notes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from peer.errors import ConfigError
from peer.routes import (
    HIDDEN,
    ConnectorSource,
    Route,
    RoutesFile,
    RouteTable,
    validate_key,
    validate_subject,
    validate_topic,
)
from peer.secret import Secret
from peer.source import servers as source_servers

_SUBJECT_PREFIX: Final = "migratorydata.subject."
_KEY_PREFIX: Final = "migratorydata.key."
_IGNORED: Final = {
    "connector.class": "the connector class (mdpeer is not a Kafka Connect plugin)",
    "key.converter": "converters (mdpeer writes the UTF-8 bytes of key and content as they are)",
    "value.converter": "converters (mdpeer writes the UTF-8 bytes of key and content as they are)",
    "name": "the connector name",
}


def _connector_subject(conn_key: str, prefix: str) -> str:
    rest = conn_key[len(prefix) :]
    # The vendor writes /a/b as a.b, so a segment containing '.' cannot be expressed.
    return validate_subject("/" + "/".join(rest.split(".")), conn_key)


def parse_bool(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ConfigError(field, value, "expected true or false")


def parse_servers(value: object, field: str = "servers") -> tuple[str, ...]:
    """The vendor's server list, checked by the REST source's own parser, as strings.

    A comma-separated string or a list of ``[weight ]host:port`` (weight 0-100).
    """
    if not isinstance(value, str) and not (
        isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    ):
        raise ConfigError(field, value, "expected 'host:port,host:port' or a list of them")
    try:
        return tuple(str(server) for server in source_servers.parse_servers(value))
    except ConfigError as exc:
        raise ConfigError(field, exc.value, exc.reason) from None


def parse_connector(doc: object, path: Path) -> RoutesFile:
    """The vendor connector's config object, bare or as a Connect REST body {name, config}."""
    hint = f"in {path}"
    notes: list[str] = []
    if not isinstance(doc, dict):
        raise ConfigError(str(path), type(doc).__name__, "expected a JSON object", hint=hint)
    config: dict[str, object] = doc
    if isinstance(doc.get("config"), dict):
        config = doc["config"]
        notes.extend(
            f"{name}: not part of a Connect request body; ignored"
            for name in doc
            if name not in ("name", "config", "tasks", "type")
        )
    try:
        return _parse_connector_config(config, path, notes)
    except ConfigError as exc:
        raise ConfigError(exc.field, exc.value, exc.reason, hint=exc.hint or hint) from None


def _parse_connector_config(
    config: Mapping[str, object], path: Path, notes: list[str]
) -> RoutesFile:
    topics: dict[str, tuple[str, str]] = {}  # subject -> (connector key, topic)
    keys: dict[str, tuple[str, str]] = {}
    source: dict[str, Any] = {}
    shards = None
    for name, value in config.items():
        if name.startswith(_SUBJECT_PREFIX):
            topics[_connector_subject(name, _SUBJECT_PREFIX)] = (name, validate_topic(value, name))
        elif name.startswith(_KEY_PREFIX):
            keys[_connector_subject(name, _KEY_PREFIX)] = (name, validate_key(value, name))
        elif name == "migratorydata.servers":
            source["servers"] = parse_servers(value, name)
        elif name == "migratorydata.encryption":
            source["encryption"] = parse_bool(value, name)
        elif name == "migratorydata.entitlement_token":
            if not isinstance(value, str) or not value:
                raise ConfigError(name, HIDDEN, "the entitlement token must be a non-empty string")
            source["token"] = Secret(value, source=f"{path}: {name}")
        elif name == "tasks.max":
            text = (
                str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
            )
            if not text.strip().isdigit() or int(text) < 1:
                raise ConfigError(name, value, 'expected a positive integer, e.g. "2"')
            shards = int(text)
        elif name in _IGNORED:
            notes.append(f"{name}: {_IGNORED[name]}; ignored")
        elif name.startswith("migratorydata."):
            notes.append(f"{name}: not a MigratoryData connector key mdpeer knows; ignored")
        else:
            notes.append(f"{name}: a Kafka Connect setting mdpeer does not use; ignored")
    for subject, (name, _key) in keys.items():
        if subject not in topics:
            raise ConfigError(
                name,
                keys[subject][1],
                f"no {_SUBJECT_PREFIX}{name[len(_KEY_PREFIX) :]} maps {subject} to a topic",
            )
    routes = [
        Route(subject=s, topic=t, key=keys[s][1] if s in keys else None)
        for s, (_name, t) in topics.items()
    ]
    if not routes:
        notes.append(f"no {_SUBJECT_PREFIX}* keys: the file maps no subject")
    return RoutesFile(
        path=path,
        table=RouteTable(routes),
        source=ConnectorSource(**source) if source else None,
        shards=shards,
        notes=tuple(notes),
    )
