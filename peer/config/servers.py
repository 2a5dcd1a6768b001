"""How to reach MigratoryData: the server list (the vendor's ``servers`` syntax, or URLs) and the
CA file its servers are verified with; checked when settings are built.

Syntax, as in the vendor's clients and connector: a comma-separated string or a list of
entries, each optionally preceded by a weight 0-100 (default 100)::

    "push1.example.com:443,push2.example.com:443"
    ["100 push1.example.com:443", "50 push2.example.com:443", "0 backup.example.com:443"]
    "https://push1.example.com, 50 https://push2.example.com:8443/"

An entry is ``host:port`` or a URL ``http://host[:port][/]`` / ``https://host[:port][/]``
(the scheme's port when none is given). A scheme says whether the servers speak TLS
(:func:`resolve_encryption`); one list uses one scheme, since one source talks to all its
servers alike. IPv6 literals go in brackets: ``[::1]:8800``, ``http://[::1]:8800``.
Which server answers a request is :class:`peer.source.servers.ServerPool`'s business.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from peer.errors import ConfigError

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_DIGITS = re.compile(r"[0-9]+")
_EXAMPLE = "push1.example.com:443"
_FORMS = f"host:port or http(s)://host[:port], e.g. {_EXAMPLE}"
MAX_WEIGHT = 100
#: the schemes a server entry may name, with the port each implies when none is given
DEFAULT_PORTS: Final = MappingProxyType({"http": 80, "https": 443})


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One MigratoryData server: where it listens and how much traffic it should take.

    ``scheme`` is what the entry said (``http``/``https``), None for a bare ``host:port``.
    """

    host: str
    port: int
    weight: int = MAX_WEIGHT
    scheme: str | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.weight <= MAX_WEIGHT):
            raise ConfigError("servers", str(self), f"weight must be 0-{MAX_WEIGHT}")
        if not (1 <= self.port <= 65535):
            raise ConfigError("servers", str(self), "port must be 1-65535")
        if self.scheme is not None and self.scheme not in DEFAULT_PORTS:
            raise ConfigError("servers", str(self), "the scheme must be http or https")
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        if not host or (":" not in host and not _HOST.match(host)):
            raise ConfigError("servers", str(self), f"expected {_FORMS}")

    @property
    def netloc(self) -> str:
        """``host:port``, with IPv6 literals bracketed, as it goes into a URL."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        prefix = "" if self.weight == MAX_WEIGHT else f"{self.weight} "
        scheme = "" if self.scheme is None else f"{self.scheme}://"
        return prefix + scheme + self.netloc


def _redacted(entry: str) -> str:
    # User info and a query can carry credentials; an error message must not repeat them.
    entry = re.sub(r"(^|//|\s)[^\s/?#@]*@", r"\1***@", entry)
    return re.sub(r"\?[^#\s]*", "?***", entry)


def parse_server(text: str) -> ServerAddress:
    """Parse ``[weight ]host:port`` or ``[weight ]http(s)://host[:port][/]``."""
    entry = text.strip()
    shown = _redacted(entry)
    parts = entry.split()
    weight = MAX_WEIGHT
    if len(parts) == 2:
        if not _DIGITS.fullmatch(parts[0]):
            raise ConfigError("servers", shown, "the weight must be an integer 0-100")
        weight = int(parts[0])
        address = parts[1]
    elif len(parts) == 1:
        address = parts[0]
    else:
        raise ConfigError("servers", shown, f"expected '[weight ]address', the address {_FORMS}")

    def refuse(reason: str) -> ConfigError:
        return ConfigError("servers", shown, reason)

    scheme: str | None = None
    rest = address
    if "://" in address:
        given, rest = address.split("://", 1)
        scheme = given.lower()
        if scheme not in DEFAULT_PORTS:
            raise refuse(f"the scheme {given!r} is not supported: use http:// or https://")
    elif re.match(r"(?i)https?:/", address):
        raise refuse("a URL needs '://' after the scheme, e.g. https://push1.example.com")
    rest, hash_mark, _ = rest.partition("#")
    rest, question_mark, _ = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if "@" in netloc:
        raise refuse(
            "user info ('user@') is not allowed in a server address; the entitlement token "
            "(token / token_file) is the credential"
        )
    if path:
        raise refuse(
            f"a path ('/{path}') is not allowed: give the server's address only "
            "(mdpeer adds /rest/consume)"
        )
    if question_mark:
        raise refuse("a query ('?...') is not allowed in a server address")
    if hash_mark:
        raise refuse("a fragment ('#...') is not allowed in a server address")
    host, port_text = _split_netloc(netloc, refuse)
    if not host:
        raise refuse(f"no host: expected {_FORMS}")
    if port_text is None:
        if scheme is None:
            raise refuse(f"no port: expected {_FORMS}")
        return ServerAddress(host, DEFAULT_PORTS[scheme], weight, scheme)
    if not _DIGITS.fullmatch(port_text):
        raise refuse(f"the port {port_text!r} is not a number 1-65535 (host:port)")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise refuse("port must be 1-65535")
    return ServerAddress(host, port, weight, scheme)


def _split_netloc(netloc: str, refuse: Callable[[str], ConfigError]) -> tuple[str, str | None]:
    """``host[:port]`` -> (host, port text or None); a bracketed IPv6 literal is checked."""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise refuse("an IPv6 address needs its closing bracket: [::1]:8800")
        host, after = netloc[1:end], netloc[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise refuse(f"{host!r} in brackets is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise refuse("expected ':port' after the IPv6 address, e.g. [::1]:8800")
        return host, after[1:] if after else None
    if netloc.count(":") > 1:
        raise refuse("put an IPv6 address in brackets: [::1]:8800")
    host, colon, port = netloc.partition(":")
    return host, port if colon else None


def parse_servers(value: str | Iterable[str | ServerAddress]) -> tuple[ServerAddress, ...]:
    """Parse a server list (comma-separated string or list); at least one, no duplicates,
    not both http:// and https:// entries."""
    items: list[str | ServerAddress]
    if isinstance(value, str):
        items = [part for part in value.split(",") if part.strip()]
    else:
        items = list(value)
    servers = tuple(s if isinstance(s, ServerAddress) else parse_server(s) for s in items)
    if not servers:
        raise ConfigError("servers", value, "at least one server is required, e.g. localhost:8800")
    seen: set[str] = set()
    for server in servers:
        if server.netloc in seen:
            raise ConfigError("servers", value, f"{server.netloc} is listed twice")
        seen.add(server.netloc)
    by_scheme = {s.scheme: s for s in reversed(servers) if s.scheme is not None}
    if len(by_scheme) > 1:
        raise ConfigError(
            "servers",
            value,
            f"mixes http:// ({by_scheme['http']}) and https:// ({by_scheme['https']}) entries: "
            "the source speaks one scheme to all its servers; give them all the same one",
        )
    return servers


def resolve_encryption(
    servers: Iterable[ServerAddress],
    encryption: bool | None,
    *,
    encryption_field: str = "encryption",
    encryption_value: object = None,
    servers_field: str = "servers",
    hint: str | None = None,
) -> bool:
    """Whether to speak TLS: the explicit ``encryption`` setting, else the servers' scheme
    (``https://`` = TLS), else not.

    An explicit setting that contradicts a scheme is a ConfigError naming both (fields as
    the caller names them; ``encryption_value`` is shown instead of the bool when given).
    """
    named = next((s for s in servers if s.scheme is not None), None)
    if named is None:
        return bool(encryption)
    implied = named.scheme == "https"
    if encryption is None or encryption == implied:
        return implied
    shown = encryption if encryption_value is None else encryption_value
    raise ConfigError(
        encryption_field,
        shown,
        f"contradicts the {servers_field} entry '{named}' ({named.scheme}:// means "
        f"{'TLS' if implied else 'no TLS'}); drop one of the two or make them agree",
        hint=hint,
    )


def check_ca_file(path: object, field: str = "tls_ca_file") -> Path:
    """``path`` as a readable PEM file of CA certificates, or a ConfigError naming ``field``.

    Checked when the settings are built, so a wrong file stops ``mdpeer run`` before it
    joins the group rather than failing every request later.
    """
    if not isinstance(path, str | Path) or not str(path):
        raise ConfigError(field, path, "expected a file path")
    ca = Path(path)
    if not ca.is_file():
        raise ConfigError(field, str(ca), "no such file")
    try:
        ssl.create_default_context(cafile=str(ca))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(
            field, str(ca), f"not a PEM file of CA certificates ({exc.__class__.__name__}: {exc})"
        ) from None
    return ca
