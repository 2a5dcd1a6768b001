"""MigratoryData server list: parsing (the vendor's ``servers`` syntax), weighted choice, failover.

Syntax, as in the vendor's clients and connector: a comma-separated string or a list of
``host:port`` entries, each optionally preceded by a weight 0-100 (default 100)::

    "push1.example.com:443,push2.example.com:443"
    ["100 push1.example.com:443", "50 push2.example.com:443", "0 backup.example.com:443"]

A server is chosen at random by weight and kept while it answers (sticky: its keep-alive
connections stay warm, and one cluster member answers a subject's consecutive requests). A server
that fails is marked down for a while and another healthy one is chosen, again by weight.
Weight 0 marks a backup: used only when every weighted server is down. When every server is
down, the one that failed longest ago is tried, so the pool never refuses to choose.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from peer.errors import ConfigError

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_EXAMPLE = "push1.example.com:443"
MAX_WEIGHT = 100


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One MigratoryData server: where it listens and how much traffic it should take."""

    host: str
    port: int
    weight: int = MAX_WEIGHT

    def __post_init__(self) -> None:
        if not (0 <= self.weight <= MAX_WEIGHT):
            raise ConfigError("servers", str(self), f"weight must be 0-{MAX_WEIGHT}")
        if not (1 <= self.port <= 65535):
            raise ConfigError("servers", str(self), "port must be 1-65535")
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        if not host or (":" not in host and not _HOST.match(host)):
            raise ConfigError("servers", str(self), f"expected host:port, e.g. {_EXAMPLE}")

    @property
    def netloc(self) -> str:
        """``host:port``, with IPv6 literals bracketed, as it goes into a URL."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        prefix = "" if self.weight == MAX_WEIGHT else f"{self.weight} "
        return prefix + self.netloc


def parse_server(text: str) -> ServerAddress:
    """Parse ``[weight ]host:port``; IPv6 literals go in brackets: ``[::1]:8800``."""
    entry = text.strip()
    parts = entry.split()
    weight = MAX_WEIGHT
    if len(parts) == 2:
        if not parts[0].isdigit():
            raise ConfigError("servers", entry, "the weight must be an integer 0-100")
        weight = int(parts[0])
        address = parts[1]
    elif len(parts) == 1:
        address = parts[0]
    else:
        raise ConfigError("servers", entry, "expected '[weight ]host:port'")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError("servers", entry, f"expected host:port, e.g. {_EXAMPLE}")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ConfigError("servers", entry, "put an IPv6 address in brackets: [::1]:8800")
    if host.startswith("["):
        host = host[1:-1]
    return ServerAddress(host, int(port), weight)


def parse_servers(value: str | Iterable[str | ServerAddress]) -> tuple[ServerAddress, ...]:
    """Parse a server list (comma-separated string or list); at least one, no duplicates."""
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
    return servers


class ServerPool:
    """Chooses the server for the next request; not thread-safe (used from the source's loop)."""

    def __init__(
        self,
        servers: Sequence[ServerAddress],
        *,
        down_for: float,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not servers:
            raise ValueError("no servers")
        self._servers = tuple(servers)
        self._down_for = down_for
        self._rng = rng or random.Random()
        self._clock = clock
        self._down_until: dict[ServerAddress, float] = {}
        self._current: ServerAddress | None = None

    @property
    def servers(self) -> tuple[ServerAddress, ...]:
        return self._servers

    def is_down(self, server: ServerAddress) -> bool:
        return self._down_until.get(server, 0.0) > self._clock()

    def choose(self) -> ServerAddress:
        """The current server while it is healthy, else a new weighted-random choice."""
        current = self._current
        if current is not None and not self.is_down(current):
            return current
        self._current = self._pick()
        return self._current

    def mark_down(self, server: ServerAddress) -> bool:
        """Avoid ``server`` for ``down_for`` seconds; True if it was up (a state change)."""
        was_up = not self.is_down(server)
        self._down_until[server] = self._clock() + self._down_for
        if self._current == server:
            self._current = None
        return was_up

    def mark_up(self, server: ServerAddress) -> bool:
        """``server`` answered; True if it had been marked down (a recovery)."""
        return self._down_until.pop(server, None) is not None

    def _pick(self) -> ServerAddress:
        now = self._clock()
        healthy = [s for s in self._servers if self._down_until.get(s, 0.0) <= now]
        weighted = [s for s in healthy if s.weight > 0]
        if weighted:
            return self._rng.choices(weighted, weights=[s.weight for s in weighted])[0]
        if healthy:  # only backups (weight 0) are up
            return self._rng.choice(healthy)
        # Everything is down: the one that failed longest ago has had the most time to recover.
        return min(self._servers, key=lambda s: self._down_until.get(s, 0.0))
