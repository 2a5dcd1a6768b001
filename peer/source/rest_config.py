"""Settings of the REST source: a frozen, validated dataclass (errors name the field and value)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from peer.config.servers import ServerAddress, check_ca_file, parse_servers, resolve_encryption
from peer.errors import ConfigError
from peer.secret import Secret

_INTS = ("max_concurrency", "max_buffered_messages", "max_buffered_bytes", "history_fetch")
_SECONDS = (
    "poll_idle_min",
    "poll_idle_max",
    "request_timeout",
    "retry_initial",
    "retry_max",
    "server_down_for",
)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, slots=True)
class RestSourceConfig:
    """How the REST source reaches MigratoryData and paces itself.

    ``servers`` accepts the vendor's syntax too (a comma-separated string or a list of
    ``"[weight ]host:port"`` or ``"[weight ]http(s)://host[:port]"``); it is normalised to a
    tuple of :class:`ServerAddress`.
    """

    servers: tuple[ServerAddress, ...]
    #: HTTPS instead of HTTP (the vendor's ``encryption``). None: as the servers' scheme says
    #: (https:// = HTTPS), else HTTP; always a bool once built
    encryption: bool | None = None
    #: PEM file of the CA(s) that sign the servers' certificates (default: the system's)
    tls_ca_file: Path | None = None
    #: entitlement token (the vendor's ``entitlement_token``); never shown by repr or logs
    token: Secret | None = None
    #: requests in flight at once (also the HTTP connection limit)
    max_concurrency: int = 16
    #: an idle subject is polled again after poll_idle_min, doubling up to poll_idle_max seconds
    poll_idle_min: float = 0.05
    poll_idle_max: float = 1.0
    #: whole-request timeout (connect + answer), seconds
    request_timeout: float = 10.0
    #: jittered exponential backoff between retries of a transient fault, seconds
    retry_initial: float = 0.1
    retry_max: float = 5.0
    #: give up on a request after this many seconds of transient faults (None: never);
    #: giving up raises SourceUnavailableError from poll()
    retry_give_up: float | None = None
    #: a server that failed is avoided for this many seconds (failover to the others)
    server_down_for: float = 5.0
    #: buffer bounds: events (messages and gaps) and content bytes not yet polled
    max_buffered_messages: int = 10_000
    max_buffered_bytes: int = 64 * 1024 * 1024
    #: history size asked for while a subject has no known position yet
    history_fetch: int = 1000

    def __post_init__(self) -> None:
        given: object = self.servers
        if not (isinstance(given, tuple) and all(isinstance(s, ServerAddress) for s in given)):
            if not isinstance(given, str | Iterable):
                raise ConfigError("servers", given, "expected a list or 'host:port,host:port'")
            object.__setattr__(self, "servers", parse_servers(given))
        if self.encryption is not None and not isinstance(self.encryption, bool):
            raise ConfigError("encryption", self.encryption, "expected true or false")
        object.__setattr__(self, "encryption", resolve_encryption(self.servers, self.encryption))
        if self.tls_ca_file is not None:
            object.__setattr__(self, "tls_ca_file", check_ca_file(self.tls_ca_file))
        if self.token is not None and not isinstance(self.token, Secret):
            raise ConfigError("token", "***", "expected a Secret (value or file)")
        for name in _INTS:
            _check_int(name, getattr(self, name), 1)
        for name in _SECONDS:
            _check_seconds(name, getattr(self, name))
        if self.retry_give_up is not None:
            _check_seconds("retry_give_up", self.retry_give_up)
        if self.poll_idle_max < self.poll_idle_min:
            minimum = self.poll_idle_min
            raise ConfigError("poll_idle_max", self.poll_idle_max, f">= {minimum=} needed")
        if self.retry_max < self.retry_initial:
            raise ConfigError(
                "retry_max", self.retry_max, f"must be >= retry_initial={self.retry_initial}"
            )

    @property
    def scheme(self) -> str:
        return "https" if self.encryption else "http"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> RestSourceConfig:
        """Build from plain values (strings from a file, env or flags are converted).

        Keys are the field names, plus ``token_file`` (a file holding the token; exclusive
        with ``token``). Unknown keys are refused, so a typo cannot silently keep a default.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known - {"token_file"})
        if unknown:
            name = unknown[0]
            raise ConfigError(name, settings[name], f"unknown setting; known: {sorted(known)}")
        if "servers" not in settings:
            raise ConfigError("servers", None, "required, e.g. 'push1.example.com:443'")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in settings or f.name == "token":
                continue
            raw = settings[f.name]
            if f.name == "servers":
                values[f.name] = parse_servers(raw) if raw is not None else ()
            elif f.name == "tls_ca_file":
                values[f.name] = Path(str(raw)) if raw not in (None, "") else None
            elif f.name == "encryption":
                values[f.name] = None if raw in (None, "") else _to_bool(f.name, raw)
            elif f.name == "retry_give_up" and raw in (None, "", "none", "never"):
                values[f.name] = None
            elif f.name in _INTS:
                values[f.name] = _to_number(f.name, raw, int)
            else:
                values[f.name] = _to_number(f.name, raw, float)
        values["token"] = _token(settings.get("token"), settings.get("token_file"))
        return cls(**values)


def _token(value: object, path: object) -> Secret | None:
    if value not in (None, "") and path not in (None, ""):
        raise ConfigError("token_file", str(path), "give either token or token_file, not both")
    if path not in (None, ""):
        return Secret.from_file(Path(str(path)), field="token_file")
    if value in (None, ""):
        return None
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ConfigError("token", "***", "expected a string")
    return Secret(value)


def _to_bool(name: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(name, raw, "expected true or false")


def _to_number(name: str, raw: object, kind: type[int] | type[float]) -> int | float:
    if isinstance(raw, bool):
        raise ConfigError(name, raw, f"expected {'an integer' if kind is int else 'a number'}")
    if isinstance(raw, int | float) and (kind is float or isinstance(raw, int)):
        return kind(raw)
    try:
        return kind(str(raw).strip())
    except ValueError:
        raise ConfigError(
            name, raw, f"expected {'an integer' if kind is int else 'a number'}"
        ) from None


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(name, value, f"expected an integer >= {minimum}")


def _check_seconds(name: str, value: object) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:  # type: ignore[arg-type]
        raise ConfigError(name, value, "expected a positive number of seconds")
