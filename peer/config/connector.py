"""The vendor connector's JSON config: routes and MigratoryData settings, taken as they are.

Users migrating from the MigratoryData Kafka Connect source connector keep their JSON: the bare
config object or the Connect REST body ``{"name": ..., "config": {...}}``. Kafka Connect keys we
do not use (converters, the connector class) are accepted and reported as notes. A
``migratorydata.*`` key we do not know is an error naming the closest known one: a typo such as
``migratorydata.subjects.a`` would otherwise drop a route without a word. ``lenient`` turns it
into a note, for files that carry keys of a newer connector version.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from peer.config import servers as source_servers
from peer.errors import ConfigError
from peer.routes.model import (
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

_MD_PREFIX: Final = "migratorydata."
_SUBJECT_PREFIX: Final = "migratorydata.subject."
_KEY_PREFIX: Final = "migratorydata.key."
#: the vendor's keys, after the prefix: whole names, then the ones a subject path follows
_MD_NAMES: Final = ("servers", "encryption", "entitlement_token")
_MD_PATH_NAMES: Final = ("subject", "key")
_TOPIC_CREATION: Final = "topic.creation."
_TOPIC_PARTITIONS: Final = "topic.creation.default.partitions"
_TOPIC_REPLICATION: Final = "topic.creation.default.replication.factor"
#: bounds of the partitions / replication factor of a topic mdpeer creates (-1: broker default)
MAX_TOPIC_PARTITIONS: Final = 10_000
MAX_REPLICATION_FACTOR: Final = 32_767
_INTEGER: Final = re.compile(r"\s*-?[0-9]+\s*")
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

    A comma-separated string or a list of ``[weight ]host:port`` or
    ``[weight ]http(s)://host[:port]`` (weight 0-100).
    """
    if not isinstance(value, str) and not (
        isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    ):
        raise ConfigError(field, value, "expected 'host:port,host:port' or a list of them")
    try:
        return tuple(str(server) for server in source_servers.parse_servers(value))
    except ConfigError as exc:
        raise ConfigError(field, exc.value, exc.reason) from None


def check_topic_count(value: object, field: str, high: int) -> int:
    """A topic's partitions or replication factor: -1 (the broker's default) or 1..high."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, value, "expected an integer")
    if value != -1 and not 1 <= value <= high:
        raise ConfigError(field, value, f"expected -1 (the broker's default) or 1 to {high}")
    return value


def _topic_count(value: object, field: str, high: int) -> int:
    # Connect configs hold strings ("3"); a JSON number is welcome too.
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        value = int(value)
    return check_topic_count(value, field, high)


def closest_key(name: str) -> str | None:
    """The known ``migratorydata.*`` key a mistyped ``name`` most likely meant, or None.

    Compared without the common prefix, which would make every key look alike; the subject
    path of ``subject``/``key`` keys is kept: ``migratorydata.subjects.a`` ->
    ``migratorydata.subject.a``.
    """
    _, _, rest = name.partition(".")
    head, _, tail = rest.partition(".")
    close = difflib.get_close_matches(head.lower(), [*_MD_NAMES, *_MD_PATH_NAMES], n=1)
    if not close:
        return None
    if close[0] in _MD_PATH_NAMES:
        return f"{_MD_PREFIX}{close[0]}.{tail or '<path>'}"
    return _MD_PREFIX + close[0]


def _is_vendor_key(name: str) -> bool:
    # A misspelt or miscased prefix (MigratoryData., migratorydat.) is still meant for us.
    first = name.partition(".")[0].lower()
    return "." in name and (
        first.startswith("migratory")
        or bool(difflib.get_close_matches(first, ["migratorydata"], cutoff=0.8))
    )


def parse_connector(doc: object, path: Path, *, lenient: bool = False) -> RoutesFile:
    """The vendor connector's config object, bare or as a Connect REST body {name, config}.

    An unknown ``migratorydata.*`` key is a ConfigError, or a note when ``lenient``.
    """
    hint = f"in {path}"
    notes: list[str] = []
    if not isinstance(doc, dict):
        raise ConfigError(str(path), type(doc).__name__, "expected a JSON object", hint=hint)
    config: dict[str, object] = doc
    if isinstance(doc.get("config"), dict):
        config = doc["config"]
        for name in doc:
            if name in ("name", "config", "tasks", "type"):
                continue
            if _is_vendor_key(name) and not lenient:
                raise ConfigError(
                    name,
                    HIDDEN,
                    'outside "config" of a Connect request body, where Kafka Connect does '
                    'not read it; move it into "config"',
                    hint=f"{hint}; --lenient (MDPEER_LENIENT=true) makes it a note",
                )
            notes.append(f"{name}: not part of a Connect request body; ignored")
    try:
        return _parse_connector_config(config, path, notes, lenient=lenient)
    except ConfigError as exc:
        raise ConfigError(exc.field, exc.value, exc.reason, hint=exc.hint or hint) from None


def _unknown_vendor_key(name: str, path: Path, notes: list[str], *, lenient: bool) -> None:
    guess = closest_key(name)
    if lenient:
        maybe = f" (did you mean {guess!r}?)" if guess else ""
        notes.append(f"{name}: not a MigratoryData connector key mdpeer knows{maybe}; ignored")
        return
    if guess is not None:
        reason = f"unknown MigratoryData connector key; did you mean {guess!r}?"
    else:
        names = [*_MD_NAMES, *(f"{n}.<path>" for n in _MD_PATH_NAMES)]
        known = ", ".join(_MD_PREFIX + n for n in names)
        reason = f"unknown MigratoryData connector key; known: {known}"
    # The value stays hidden: a mistyped entitlement_token key holds the token.
    raise ConfigError(
        name,
        HIDDEN,
        reason,
        hint=f"in {path}; --lenient (MDPEER_LENIENT=true) reports unknown keys as notes instead",
    )


def _parse_connector_config(
    config: Mapping[str, object], path: Path, notes: list[str], *, lenient: bool
) -> RoutesFile:
    topics: dict[str, tuple[str, str]] = {}  # subject -> (connector key, topic)
    keys: dict[str, tuple[str, str]] = {}
    source: dict[str, Any] = {}
    shards = None
    partitions: int | None = None
    replication: int | None = None
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
            if not _INTEGER.fullmatch(text) or int(text) < 1:
                raise ConfigError(name, value, 'expected a positive integer, e.g. "2"')
            shards = int(text)
        elif name == _TOPIC_PARTITIONS:
            partitions = _topic_count(value, name, MAX_TOPIC_PARTITIONS)
        elif name == _TOPIC_REPLICATION:
            replication = _topic_count(value, name, MAX_REPLICATION_FACTOR)
        elif name.startswith(_TOPIC_CREATION):
            notes.append(
                f"{name}: mdpeer takes only {_TOPIC_PARTITIONS} and {_TOPIC_REPLICATION} "
                "of Kafka Connect's topic creation; ignored"
            )
        elif name in _IGNORED:
            notes.append(f"{name}: {_IGNORED[name]}; ignored")
        elif _is_vendor_key(name):
            _unknown_vendor_key(name, path, notes, lenient=lenient)
        else:
            notes.append(f"{name}: a Kafka Connect setting mdpeer does not use; ignored")
    if "servers" in source and "encryption" in source:
        source_servers.resolve_encryption(
            source_servers.parse_servers(source["servers"]),
            source["encryption"],
            encryption_field="migratorydata.encryption",
            encryption_value=config["migratorydata.encryption"],
            servers_field="migratorydata.servers",
        )
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
        topic_partitions=partitions,
        topic_replication_factor=replication,
    )
