"""Loading :class:`peer.config.PeerSettings`: defaults < config file < ``MDPEER_*`` env < flags.

An error names the setting as the operator wrote it (TOML key, env var or flag) and the value.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from peer.config import servers as source_servers
from peer.config.connector import parse_bool, parse_servers
from peer.config.routesfile import load_routes, read_text
from peer.config.settings import (
    ENV_PREFIX,
    HIDDEN,
    KAFKA_ENV_PREFIX,
    KAFKA_SECTIONS,
    PeerSettings,
    SourceSettings,
    is_secret_property,
)
from peer.errors import ConfigError
from peer.secret import Secret

#: every setting: name -> (TOML table, "" = top level; kind). Env var MDPEER_<NAME>, flag --<name>.
SETTINGS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "bootstrap": ("", "str"),
        "group": ("", "str"),
        "control_topic": ("", "str"),
        "peer_id": ("", "str"),
        "static_membership": ("", "bool"),
        "group_protocol": ("", "str"),
        "assignment_strategy": ("", "str"),
        "session_timeout_ms": ("", "int"),
        "commit_interval_ms": ("", "int"),
        "max_batch": ("", "int"),
        "max_in_flight": ("", "int"),
        "transaction_timeout_ms": ("", "int"),
        "on_revoke_budget_ms": ("", "int"),
        "header_prefix": ("", "str"),
        "audit_topic": ("", "opt_str"),
        "topic_creation": ("", "str"),
        "topic_partitions": ("", "int"),
        "topic_replication_factor": ("", "int"),
        "blocked_retry_max_ms": ("", "int"),
        "source_unready_after_ms": ("", "int"),
        "metrics_port": ("", "int"),
        "metrics_host": ("", "str"),
        "log_level": ("", "str"),
        "log_format": ("", "str"),
        "routes_file": ("", "path"),
        "servers": ("source", "servers"),
        "encryption": ("source", "bool"),
        "token": ("source", "secret"),
        "token_file": ("source", "secret_file"),
        "tls_ca_file": ("source", "path"),
        "poll_idle_max_ms": ("source", "int"),
        "request_timeout_ms": ("source", "int"),
        "max_concurrency": ("source", "int"),
        "max_buffered_messages": ("source", "int"),
        "doorbell": ("source", "str"),
        "doorbell_module": ("source", "str"),
        "poll_safety_interval_ms": ("source", "int"),
    }
)


@dataclass(frozen=True, slots=True)
class _Entry:
    value: object
    label: str  # how the operator wrote it: TOML key, env var or flag
    where: str  # "in <file>", "from the environment", "from the command line"


class _Layer:
    def __init__(self) -> None:
        self.values: dict[str, _Entry] = {}
        self.kafka: dict[str, dict[str, _Entry]] = {s: {} for s in KAFKA_SECTIONS}
        self.notes: list[str] = []


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


#: how a reading of connector JSON is made lenient without a --lenient flag
LENIENT_ENV: Final = env_name("lenient")


def lenient_setting(flag: bool | None, env: Mapping[str, str]) -> bool:
    """Whether unknown ``migratorydata.*`` connector keys are notes: ``--lenient`` when given,
    else ``MDPEER_LENIENT`` (empty: unset), else false."""
    if flag is not None:
        return flag
    raw = env.get(LENIENT_ENV, "")
    if not raw:
        return False
    try:
        return parse_bool(raw, LENIENT_ENV)
    except ConfigError as exc:
        raise ConfigError(exc.field, exc.value, exc.reason, hint="from the environment") from None


def load_settings(
    config_file: Path | None,
    env: Mapping[str, str],
    overrides: Mapping[str, object],
    *,
    lenient: bool | None = None,
) -> PeerSettings:
    """Build settings: ``overrides`` (flags) > ``env`` (MDPEER_*) > config file > defaults.

    ``config_file`` None falls back to ``MDPEER_CONFIG``. Override values of None are unset
    flags and are skipped. Secrets come as a value or a ``*_file``; the higher layer wins.
    ``lenient`` (None: ``MDPEER_LENIENT`` of ``env``) applies to a connector JSON config file.
    """
    if config_file is None and env.get(env_name("config")):
        config_file = Path(env[env_name("config")])
    lenient = lenient_setting(lenient, env)
    layers = [
        _file_layer(config_file, lenient=lenient) if config_file is not None else _Layer(),
        _env_layer(env),
        _override_layer(overrides),
    ]
    merged: dict[str, _Entry] = {}
    kafka: dict[str, dict[str, _Entry]] = {s: {} for s in KAFKA_SECTIONS}
    for layer in layers:
        _one_secret_source(layer.values, "token", "token_file")
        if "token" in layer.values or "token_file" in layer.values:
            merged.pop("token", None)
            merged.pop("token_file", None)
        merged.update(layer.values)
        for section, props in layer.kafka.items():
            for name, entry in props.items():
                base = name.removesuffix("_file")
                if name != base and base in props:
                    raise ConfigError(
                        entry.label,
                        entry.value,
                        f"give {base} or {name}, not both",
                        hint=entry.where,
                    )
                kafka[section].pop(base, None)
                kafka[section].pop(f"{base}_file", None)
                kafka[section][name] = entry
    return _build(merged, kafka, [n for layer in layers for n in layer.notes])


def _one_secret_source(values: Mapping[str, _Entry], name: str, file_name: str) -> None:
    if name in values and file_name in values:
        e = values[file_name]
        raise ConfigError(e.label, e.value, f"give {name} or {file_name}, not both", hint=e.where)


def _file_layer(path: Path, *, lenient: bool) -> _Layer:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _connector_layer(path, lenient=lenient)
    if suffix != ".toml":
        raise ConfigError("config", str(path), "expected a .toml file or a connector .json")
    where = f"in {path}"
    try:
        doc = tomllib.loads(read_text(path, "config"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", str(path), f"not valid TOML: {exc}") from None
    layer = _Layer()
    top = {n for n, (t, _) in SETTINGS.items() if t == ""}
    source = {n for n, (t, _) in SETTINGS.items() if t == "source"}
    for name, value in doc.items():
        if name in KAFKA_SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(name, value, f"write it as a [{name}] table", hint=where)
            for prop, v in _flatten(value).items():
                layer.kafka[name][prop] = _Entry(v, f"{name}.{prop}", where)
        elif name == "source":
            if not isinstance(value, dict):
                raise ConfigError(name, value, "write it as a [source] table", hint=where)
            for key, v in value.items():
                if key not in source:
                    raise _unknown(f"source.{key}", key, source, where)
                layer.values[key] = _Entry(v, f"source.{key}", where)
        elif name in top:
            layer.values[name] = _Entry(value, name, where)
        else:
            raise _unknown(name, name, top | {"source", *KAFKA_SECTIONS}, where)
    # Files named in a config file are relative to it, not to wherever mdpeer was started.
    for name in ("routes_file", "token_file", "tls_ca_file"):
        if name in layer.values:
            layer.values[name] = _relative_to(path, layer.values[name])
    for props in layer.kafka.values():
        for prop, entry in props.items():
            if prop.endswith("_file"):
                props[prop] = _relative_to(path, entry)
    return layer


def _relative_to(config: Path, entry: _Entry) -> _Entry:
    if isinstance(entry.value, str) and entry.value:
        return replace(entry, value=str(config.parent / Path(entry.value).expanduser()))
    return entry


def _unknown(label: str, name: str, known: set[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(label, HIDDEN, f"unknown setting{guess}", hint=where)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, object]:
    # TOML reads `sasl.password = "x"` as nested tables; librdkafka wants "sasl.password".
    out: dict[str, object] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _connector_layer(path: Path, *, lenient: bool) -> _Layer:
    conn = load_routes(path, lenient=lenient)
    layer = _Layer()
    where = f"in {path}"
    layer.notes.extend(conn.notes)
    counts = {
        "topic_partitions": (conn.topic_partitions, "topic.creation.default.partitions"),
        "topic_replication_factor": (
            conn.topic_replication_factor,
            "topic.creation.default.replication.factor",
        ),
    }
    for name, (count, label) in counts.items():
        if count is not None:
            layer.values[name] = _Entry(count, label, where)
            # Kafka Connect creates missing topics when these keys are given; so does mdpeer,
            # unless topic_creation is set in the environment or a flag (higher layers).
            layer.values["topic_creation"] = _Entry("create", label, where)
    if conn.source is not None:
        if conn.source.servers is not None:
            layer.values["servers"] = _Entry(conn.source.servers, "migratorydata.servers", where)
        if conn.source.encryption is not None:
            layer.values["encryption"] = _Entry(
                conn.source.encryption, "migratorydata.encryption", where
            )
        if conn.source.token is not None:
            layer.values["token"] = _Entry(
                conn.source.token, "migratorydata.entitlement_token", where
            )
    layer.values["routes_file"] = _Entry(str(path), "config", where)
    return layer


def _env_layer(env: Mapping[str, str]) -> _Layer:
    layer = _Layer()
    where = "from the environment"
    for name in SETTINGS:
        var = env_name(name)
        if env.get(var):  # an empty variable counts as unset (compose's ${X:-} idiom)
            layer.values[name] = _Entry(env[var], var, where)
    for var, value in env.items():
        if var.startswith(KAFKA_ENV_PREFIX) and len(var) > len(KAFKA_ENV_PREFIX) and value:
            rest = var[len(KAFKA_ENV_PREFIX) :].lower()
            suffix = "_file" if rest.endswith("_file") else ""
            prop = rest.removesuffix("_file").replace("_", ".") + suffix
            layer.kafka["kafka"][prop] = _Entry(value, var, where)
    return layer


def _override_layer(overrides: Mapping[str, object]) -> _Layer:
    layer = _Layer()
    where = "from the command line"
    for name, value in overrides.items():
        if value is None:
            continue
        if name in KAFKA_SECTIONS and isinstance(value, Mapping):
            for prop, v in value.items():
                layer.kafka[name][str(prop)] = _Entry(v, f"{name}.{prop}", where)
        elif name in SETTINGS:
            layer.values[name] = _Entry(value, "--" + name.replace("_", "-"), where)
        else:
            raise ConfigError(name, HIDDEN, "not a setting", hint=where)
    return layer


def _coerce(name: str, kind: str, entry: _Entry) -> object:
    value, label = entry.value, entry.label
    try:
        if kind == "str":
            if not isinstance(value, str):
                raise ConfigError(label, value, "expected a string")
            return value
        if kind == "opt_str":
            if not isinstance(value, str):
                raise ConfigError(label, value, "expected a string")
            return value or None
        if kind == "int":
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
                return int(value)
            raise ConfigError(label, value, "expected an integer")
        if kind == "bool":
            return parse_bool(value, label)
        if kind == "servers":
            return parse_servers(value, label)
        if kind == "path":
            if not isinstance(value, str | Path) or not str(value):
                raise ConfigError(label, value, "expected a file path")
            p = Path(value)
            if not p.is_file():
                raise ConfigError(label, str(p), "no such file")
            return p
        if kind == "secret":
            if isinstance(value, Secret):
                return value
            if not isinstance(value, str) or not value:
                raise ConfigError(label, HIDDEN, "expected a non-empty string")
            return Secret(value, source=label)
        if kind == "secret_file":
            if not isinstance(value, str | Path):
                raise ConfigError(label, value, "expected a file path")
            return Secret.from_file(value, field=label)
    except ConfigError as exc:
        raise ConfigError(exc.field, exc.value, exc.reason, hint=exc.hint or entry.where) from None
    raise AssertionError(kind)  # pragma: no cover


def _build(
    merged: Mapping[str, _Entry], kafka: Mapping[str, Mapping[str, _Entry]], notes: list[str]
) -> PeerSettings:
    peer: dict[str, Any] = {}
    source: dict[str, Any] = {}
    labels: dict[str, _Entry] = {}
    for name, entry in merged.items():
        table, kind = SETTINGS[name]
        value = _coerce(name, kind, entry)
        target = "token" if name == "token_file" else name
        (source if table == "source" else peer)[target] = value
        labels[f"source.{target}" if table == "source" else target] = entry
    props: dict[str, dict[str, str | Secret]] = {s: {} for s in KAFKA_SECTIONS}
    for section, entries in kafka.items():
        for prop, entry in entries.items():
            base = prop.removesuffix("_file")
            labels[f"{section}.{base}"] = entry
            props[section][base] = _kafka_value(base, prop != base, entry)
    _check_encryption(source, labels)
    if "bootstrap" not in peer:
        raise ConfigError(
            "bootstrap",
            None,
            "required: set --bootstrap, MDPEER_BOOTSTRAP or bootstrap in the config file",
        )
    try:
        return PeerSettings(
            source=SourceSettings(**source),
            kafka=props["kafka"],
            kafka_producer=props["kafka_producer"],
            kafka_consumer=props["kafka_consumer"],
            notes=tuple(notes),
            **peer,
        )
    except ConfigError as exc:
        origin = labels.get(exc.field)
        if origin is None:  # a default was involved: the field name is all there is
            raise
        raise ConfigError(
            origin.label, exc.value, exc.reason, hint=exc.hint or origin.where
        ) from None


def _check_encryption(source: Mapping[str, Any], labels: Mapping[str, _Entry]) -> None:
    # Done here rather than left to SourceSettings so the error names both settings the
    # way the operator wrote them, possibly in two different layers.
    if source.get("encryption") is None or not source.get("servers"):
        return
    enc, srv = labels["source.encryption"], labels["source.servers"]
    where = (
        enc.where if enc.where == srv.where else f"{enc.label} {enc.where}, {srv.label} {srv.where}"
    )
    source_servers.resolve_encryption(
        source_servers.parse_servers(source["servers"]),
        source["encryption"],
        encryption_field=enc.label,
        encryption_value=enc.value,
        servers_field=srv.label,
        hint=where,
    )


def _kafka_value(prop: str, from_file: bool, entry: _Entry) -> str | Secret:
    value = entry.value
    secret = is_secret_property(prop)
    try:
        if from_file:
            if not secret:
                raise ConfigError(
                    entry.label,
                    value,
                    f"only secret properties come from a file; set {prop} itself",
                )
            if not isinstance(value, str | Path):
                raise ConfigError(entry.label, value, "expected a file path")
            return Secret.from_file(value, field=entry.label)
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(
                entry.label, HIDDEN if secret else value, "expected a string or number"
            )
        return Secret(value, source=entry.label) if secret else value
    except ConfigError as exc:
        raise ConfigError(exc.field, exc.value, exc.reason, hint=entry.where) from None
