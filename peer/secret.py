"""A secret value (entitlement token, SASL password) that never shows in repr, str or logs."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from peer.errors import ConfigError

_MASK: Final = "***"


class Secret:
    """Holds a secret string; ``reveal()`` is the only way to read it."""

    __slots__ = ("_source", "_value")

    def __init__(self, value: str, *, source: str = "value") -> None:
        self._value = value
        self._source = source

    @classmethod
    def from_file(cls, path: str | Path, *, field: str = "secret_file") -> Secret:
        """Read a secret from a file (e.g. a Swarm secret), without surrounding whitespace."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(field, str(p), f"cannot read: {exc.strerror or exc}") from None
        if not text:
            raise ConfigError(field, str(p), "the file is empty")
        return cls(text, source=f"file {p}")

    def reveal(self) -> str:
        return self._value

    @property
    def source(self) -> str:
        """Where it came from ("value" or "file <path>"), safe to show."""
        return self._source

    def __repr__(self) -> str:
        return f"Secret({_MASK}, source={self._source!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)
