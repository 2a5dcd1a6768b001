"""The control topic's record types (see :mod:`peer.control` for the format)."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from peer.errors import ConfigError, MdpeerError
from peer.model import Position, StartPolicy
from peer.routes.model import Route

#: the newest value format this code writes and understands
VERSION: Final = 1

ROUTE: Final = "route"
CHECKPOINT: Final = "ckpt"
COMMAND: Final = "cmd"
BLOCK: Final = "block"
PEER: Final = "peer"
_KINDS: Final = (ROUTE, CHECKPOINT, COMMAND, BLOCK, PEER)
_CKPT_RESERVED: Final = frozenset({"v", "epoch", "seq", "cmd", "start"})
# MigratoryData's epoch and seq are Java longs.
_MAX_INT64: Final = 2**63 - 1


class ControlRecordError(MdpeerError):
    """A control record cannot be understood or applied. Names its key (and offset if known)."""

    def __init__(self, key: bytes | str, reason: str, *, hint: str | None = None) -> None:
        self.key = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        self.reason = reason
        super().__init__(f"control record {self.key!r}: {reason}", hint=hint)


class UnsupportedVersionError(ControlRecordError):
    """The record was written by a newer mdpeer in a format this one does not know."""


class MisplacedRecordError(ControlRecordError):
    """The record sits on a partition other than its subject's shard (not applied)."""


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteRecord:
    route: Route

    @property
    def subject(self) -> str:
        return self.route.subject


@dataclass(frozen=True, slots=True)
class RouteRemoved:
    subject: str


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """Where a subject stands in Kafka. ``position`` None: reset to ``start``, nothing since."""

    subject: str
    position: Position | None
    #: the id of the last command applied to this subject (None: none ever)
    cmd: str | None = None
    start: StartPolicy | None = None
    #: any other fields (peer, time...): kept for status output, never interpreted
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class CheckpointCleared:
    """A tombstone on ``ckpt:``: forget the checkpoint (the subject starts by its policy)."""

    subject: str


class CommandOp(enum.Enum):
    RESET = "reset"


@dataclass(frozen=True, slots=True)
class Command:
    """An operator command for one subject. ``to``: resume strictly after a position, or
    start over by a policy (``snapshot``, ``latest``, ``history:N``)."""

    to: Position | StartPolicy
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    op: CommandOp = CommandOp.RESET

    @classmethod
    def reset(cls, to: str) -> Command:
        """Parse ``snapshot``, ``latest``, ``history:N`` or ``EPOCH:SEQ``."""
        return cls(to=parse_reset_target(to))

    def target_text(self) -> str:
        return str(self.to)


def parse_reset_target(text: str, field: str = "to") -> Position | StartPolicy:
    text = text.strip()
    head = text.partition(":")[0]
    if head and head[0].isdigit():
        try:
            return Position.parse(text)
        except ConfigError as exc:
            raise ConfigError(field, text, exc.reason) from None
    try:
        return StartPolicy.parse(text)
    except ConfigError:
        raise ConfigError(
            field, text, "expected 'snapshot', 'latest', 'history:N' or EPOCH:SEQ"
        ) from None


@dataclass(frozen=True, slots=True)
class CommandRecord:
    subject: str
    command: Command
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class CommandCleared:
    """A tombstone on ``cmd:`` (housekeeping): no command pending from this key."""

    subject: str


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """The subject is stopped at its checkpoint (quarantined), since when and why."""

    subject: str
    reason: str
    #: ISO-8601 UTC time the fault was first seen
    since: str
    detail: str = ""
    topic: str | None = None
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class BlockCleared:
    """A tombstone on ``block:``: the subject flows again."""

    subject: str


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """What a peer reports about itself (today: no MigratoryData server answers it)."""

    peer_id: str
    source: str
    since: str
    error: str = ""

    @property
    def subject(self) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class PeerCleared:
    peer_id: str

    @property
    def subject(self) -> str:
        return ""


ControlRecord = (
    RouteRecord
    | RouteRemoved
    | CheckpointRecord
    | CheckpointCleared
    | CommandRecord
    | CommandCleared
    | BlockRecord
    | BlockCleared
    | PeerRecord
    | PeerCleared
)


__all__ = [
    "BLOCK",
    "CHECKPOINT",
    "COMMAND",
    "PEER",
    "ROUTE",
    "VERSION",
    "BlockCleared",
    "BlockRecord",
    "CheckpointCleared",
    "CheckpointRecord",
    "Command",
    "CommandCleared",
    "CommandOp",
    "CommandRecord",
    "ControlRecord",
    "ControlRecordError",
    "MisplacedRecordError",
    "PeerCleared",
    "PeerRecord",
    "RouteRecord",
    "RouteRemoved",
    "UnsupportedVersionError",
    "parse_reset_target",
]
