"""The values every part of the peer shares: where a subject stands (:class:`Position`), where
a subject with no checkpoint begins (:class:`StartPolicy`), and one MigratoryData message
(:class:`Message`). Kept apart from the source so routes, control records and the writer
need not depend on it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgspec

from peer.errors import ConfigError


class Position(msgspec.Struct, frozen=True, order=True, gc=False):
    """Where a subject's stream stands: MigratoryData's (epoch, seq) of one message.

    (A msgspec Struct, like :class:`Message`: built per message, and a frozen dataclass's
    ``__init__`` costs several times more.)
    """

    epoch: int
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.seq}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Parse ``EPOCH:SEQ`` (both non-negative integers)."""
        epoch, sep, seq = text.partition(":")
        try:
            if not sep:
                raise ValueError(text)
            pos = cls(int(epoch), int(seq))
        except ValueError:
            raise ConfigError("position", text, "expected EPOCH:SEQ, e.g. 3:1200") from None
        if pos.epoch < 0 or pos.seq < 0:
            raise ConfigError("position", text, "epoch and seq must not be negative")
        return pos


class StartKind(enum.Enum):
    SNAPSHOT = "snapshot"
    HISTORY = "history"
    LATEST = "latest"


@dataclass(frozen=True, slots=True)
class StartPolicy:
    """Where a subject with no checkpoint begins.

    * ``snapshot`` (default): the subject's current snapshot (latest retained message), then on.
    * ``history:N``: up to the last N cached messages, then on.
    * ``latest``: only messages published after the subscription.
    """

    kind: StartKind = StartKind.SNAPSHOT
    history: int = 0

    def __str__(self) -> str:
        if self.kind is StartKind.HISTORY:
            return f"history:{self.history}"
        return str(self.kind.value)

    @classmethod
    def parse(cls, text: str) -> StartPolicy:
        name, sep, count = text.strip().partition(":")
        try:
            kind = StartKind(name)
        except ValueError:
            raise ConfigError(
                "start", text, "expected 'snapshot', 'latest' or 'history:N'"
            ) from None
        if kind is StartKind.HISTORY:
            if not sep or not count.isdigit() or int(count) < 1:
                raise ConfigError("start", text, "history needs a positive count: history:100")
            return cls(kind, int(count))
        if sep:
            raise ConfigError("start", text, f"'{name}' takes no argument")
        return cls(kind)


class Message(msgspec.Struct, frozen=True, gc=False):
    """One MigratoryData message, as the source received it (immutable, compared by value)."""

    subject: str
    content: bytes
    epoch: int
    seq: int
    message_type: str  # SNAPSHOT | HISTORICAL | RECOVERED | UPDATE
    closure: str | None = None
    retained: bool = True
    compressed: bool = False
    qos: str | None = None  # "standard" | "guaranteed" when the source knows it

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.seq)


__all__ = ["Message", "Position", "StartKind", "StartPolicy"]
