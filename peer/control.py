"""The control topic's records, and the state of one shard rebuilt from them.

Every record is keyed ``<kind>:<subject>`` and written to partition ``shard_of(subject, P)``;
the topic is compacted, so only the newest record of each key is guaranteed to survive.
Values are JSON objects carrying a format version ``"v"``:

* ``route:<subject>`` → ``{"v": 1, "topic": T, "key": K|null, "on_oversize": ...,
  "dead_letter_topic": ...|null, "start": "snapshot"|"latest"|"history:N"}``. A tombstone
  (null value) removes the route. Written by the admin CLI.
* ``ckpt:<subject>`` → ``{"v": 1, "epoch": E, "seq": S, "cmd": ID|null, ...meta}``: the last
  message committed to Kafka, written only by the owner inside the transaction that carries
  that message. After a reset to ``snapshot``/``latest`` and before any message, the owner
  writes ``{"v": 1, "epoch": null, "seq": null, "start": "latest", "cmd": ID}`` instead.
* ``cmd:<subject>`` → ``{"v": 1, "op": "reset", "to": "snapshot"|"latest"|"history:N"|"E:S",
  "id": ID, ...}``: an operator command, applied by the owner in order.

Commands are acknowledged through checkpoints: the owner copies the id of the last command it
applied into every checkpoint it writes for that subject (``"cmd"``). A command is pending while
the newest checkpoint does not carry its id. This survives compaction (only the newest ``cmd``
and ``ckpt`` of a subject matter) and replays to the same state on every new owner, so a reset
is applied exactly once even if the owner dies right after reading it.

Versions. A reader accepts ``v`` from 1 up to :data:`VERSION` and ignores fields it does not
know (a writer may add optional fields without a new version). A record with a newer ``v``
means a newer mdpeer wrote something this one cannot understand (a changed meaning, not an
extra field). Guessing could lose or duplicate data, so decoding raises
:class:`UnsupportedVersionError`: the peer refuses the shard and says to upgrade.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from peer.errors import ConfigError, MdpeerError
from peer.routes import Route, validate_subject
from peer.shards import shard_of
from peer.source.base import Position, StartPolicy

#: the newest value format this code writes and understands
VERSION: Final = 1

ROUTE: Final = "route"
CHECKPOINT: Final = "ckpt"
COMMAND: Final = "cmd"
_KINDS: Final = (ROUTE, CHECKPOINT, COMMAND)
_CKPT_RESERVED: Final = frozenset({"v", "epoch", "seq", "cmd", "start"})
# MigratoryData's epoch and seq are Java longs.
_MAX_INT64: Final = 2**63 - 1
_JSON: Final = msgspec.json.Decoder()


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


ControlRecord = (
    RouteRecord
    | RouteRemoved
    | CheckpointRecord
    | CheckpointCleared
    | CommandRecord
    | CommandCleared
)


# --- encoding ---------------------------------------------------------------------------------


def _key(kind: str, subject: str) -> bytes:
    return f"{kind}:{validate_subject(subject)}".encode()


def _value(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(
        {"v": VERSION, **payload}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def encode_route(route: Route) -> tuple[bytes, bytes]:
    return _key(ROUTE, route.subject), _value(route.options())


def encode_route_removal(subject: str) -> tuple[bytes, None]:
    """The tombstone that removes a route."""
    return _key(ROUTE, subject), None


def encode_checkpoint(
    subject: str,
    epoch: int | None,
    seq: int | None,
    *,
    cmd: str | None = None,
    start: StartPolicy | None = None,
    **meta: Any,
) -> tuple[bytes, bytes]:
    """A checkpoint at (epoch, seq); or, with both None, "reset to ``start``, nothing since"."""
    if (epoch is None) != (seq is None):
        raise ValueError("epoch and seq are both given or both None")
    if epoch is None and start is None:
        raise ValueError("a checkpoint without a position needs the start policy of its reset")
    if epoch is not None and seq is not None:
        for n in (epoch, seq):
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= _MAX_INT64:
                raise ValueError(
                    f"epoch and seq must be non-negative 64-bit integers: {epoch}:{seq}"
                )
    clash = _CKPT_RESERVED & meta.keys()
    if clash:
        raise ValueError(f"checkpoint meta must not use reserved names: {sorted(clash)}")
    payload: dict[str, Any] = {"epoch": epoch, "seq": seq, "cmd": cmd, **meta}
    if start is not None:
        payload["start"] = str(start)
    return _key(CHECKPOINT, subject), _value(payload)


def encode_command(subject: str, cmd: Command, **meta: Any) -> tuple[bytes, bytes]:
    clash = {"v", "op", "to", "id"} & meta.keys()
    if clash:
        raise ValueError(f"command meta must not use reserved names: {sorted(clash)}")
    payload = {"op": cmd.op.value, "to": cmd.target_text(), "id": cmd.id, **meta}
    return _key(COMMAND, subject), _value(payload)


# --- decoding ---------------------------------------------------------------------------------


def decode(key: bytes, value: bytes | None) -> ControlRecord:
    """Decode one control record; any problem is a :class:`ControlRecordError` naming the key."""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise ControlRecordError(key, "the key is not UTF-8") from None
    kind, sep, subject = text.partition(":")
    if not sep or kind not in _KINDS:
        raise ControlRecordError(
            key,
            f"unknown kind {kind!r} (known: {', '.join(_KINDS)})",
            hint="a newer mdpeer or another program wrote to this topic",
        )
    try:
        validate_subject(subject)
    except ConfigError as exc:
        raise ControlRecordError(key, f"bad subject: {exc.reason}") from None
    if value is None:
        cleared: dict[str, ControlRecord] = {
            ROUTE: RouteRemoved(subject),
            CHECKPOINT: CheckpointCleared(subject),
            COMMAND: CommandCleared(subject),
        }
        return cleared[kind]
    if kind == ROUTE:
        # A table of 100k routes holds a handful of distinct values: parse each once.
        proto = _ROUTE_VALUES.get(value)
        if proto is None:
            proto = _route_options(key, subject, value)
            if len(_ROUTE_VALUES) >= _ROUTE_VALUES_MAX:
                _ROUTE_VALUES.clear()
            _ROUTE_VALUES[value] = proto
        return RouteRecord(proto.for_subject(subject))
    data = _payload(key, value)
    try:
        if kind == CHECKPOINT:
            return _decode_checkpoint(key, subject, data)
        return _decode_command(key, subject, data)
    except ConfigError as exc:
        raise ControlRecordError(key, f"{exc.field}={exc.value!r}: {exc.reason}") from None


_ROUTE_KEYS: Final = frozenset({"topic", "key", "on_oversize", "dead_letter_topic", "start"})
#: route value bytes -> the validated route they decode to (for the first subject seen)
_ROUTE_VALUES: dict[bytes, Route] = {}
_ROUTE_VALUES_MAX: Final = 4096


def _route_options(key: bytes, subject: str, value: bytes) -> Route:
    data = _payload(key, value)
    try:
        return Route.from_dict(_known_only(data, _ROUTE_KEYS), subject=subject)
    except ConfigError as exc:
        raise ControlRecordError(key, f"{exc.field}={exc.value!r}: {exc.reason}") from None


def _known_only(data: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    # Fields a future writer added without a version bump are optional by contract: skip them.
    return {k: v for k, v in data.items() if k in names}


def _payload(key: bytes, value: bytes) -> dict[str, Any]:
    try:
        data = _JSON.decode(value)
    except msgspec.MsgspecError as exc:
        raise ControlRecordError(key, f"the value is not UTF-8 JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ControlRecordError(key, "the value is not a JSON object")
    v = data.pop("v", None)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ControlRecordError(key, f"missing or bad format version 'v': {v!r}")
    if v > VERSION:
        raise UnsupportedVersionError(
            key,
            f"format version {v}; this mdpeer understands up to {VERSION}",
            hint="a newer mdpeer wrote this record: upgrade this peer",
        )
    return data


def _int_or_none(key: bytes, data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT64:
        raise ControlRecordError(key, f"{name} must be a non-negative integer, got {value!r}")
    return value


def _decode_checkpoint(key: bytes, subject: str, data: dict[str, Any]) -> CheckpointRecord:
    epoch = _int_or_none(key, data, "epoch")
    seq = _int_or_none(key, data, "seq")
    if (epoch is None) != (seq is None):
        raise ControlRecordError(key, "epoch and seq must both be set or both be null")
    cmd = data.get("cmd")
    if cmd is not None and not isinstance(cmd, str):
        raise ControlRecordError(key, f"cmd must be a string, got {cmd!r}")
    start_text = data.get("start")
    start = None
    if start_text is not None:
        if not isinstance(start_text, str):
            raise ControlRecordError(key, f"start must be a string, got {start_text!r}")
        start = StartPolicy.parse(start_text)
    if epoch is None and start is None:
        raise ControlRecordError(key, "a checkpoint without epoch/seq needs 'start'")
    meta = {k: v for k, v in data.items() if k not in _CKPT_RESERVED}
    position = None if epoch is None or seq is None else Position(epoch, seq)
    return CheckpointRecord(subject, position, cmd=cmd, start=start, meta=meta)


def _decode_command(key: bytes, subject: str, data: dict[str, Any]) -> CommandRecord:
    op = data.get("op")
    try:
        cop = CommandOp(op)
    except ValueError:
        raise ControlRecordError(
            key,
            f"unknown command op {op!r}",
            hint="a newer mdpeer wrote this command: upgrade this peer",
        ) from None
    to, cid = data.get("to"), data.get("id")
    if not isinstance(to, str):
        raise ControlRecordError(key, f"'to' must be a string, got {to!r}")
    if not isinstance(cid, str) or not cid:
        raise ControlRecordError(key, f"'id' must be a non-empty string, got {cid!r}")
    meta = {k: v for k, v in data.items() if k not in ("op", "to", "id")}
    return CommandRecord(subject, Command(to=parse_reset_target(to), id=cid, op=cop), meta=meta)


# --- shard state ------------------------------------------------------------------------------


class Change(enum.Enum):
    """What applying a record changed, so the runner knows what to (re)subscribe."""

    ROUTE_ADDED = "route_added"
    ROUTE_CHANGED = "route_changed"
    ROUTE_REMOVED = "route_removed"
    CHECKPOINT = "checkpoint"
    COMMAND = "command"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Resume:
    """Where the owner starts a subject: strictly after ``after``, else by ``policy``."""

    after: Position | None
    policy: StartPolicy
    #: the pending command this resume point comes from (to acknowledge in the next checkpoint)
    cmd: str | None = None


class ShardState:
    """Routes, checkpoints and pending commands of one shard, from its records in offset order.

    Rebuilt on assignment by applying the partition from the beginning; kept current by
    applying what the owner consumes afterwards (including its own checkpoints).
    """

    def __init__(self, partition: int, shards: int) -> None:
        if not 0 <= partition < shards:
            raise ValueError(f"partition {partition} is not in [0, {shards})")
        self.partition = partition
        self.shards = shards
        self.routes: dict[str, Route] = {}
        self.checkpoints: dict[str, CheckpointRecord] = {}
        self.commands: dict[str, CommandRecord] = {}
        #: offset of the last record applied (None: nothing yet)
        self.offset: int | None = None
        #: records found here that belong to another shard (reported, not applied)
        self.misplaced = 0

    def apply(self, record: ControlRecord, offset: int) -> Change:
        """Apply the record at ``offset``; records must come in offset order.

        A record at or before the last applied offset was applied already (a consumer that
        seeked back re-delivers it): it is skipped, as replaying it out of order would undo
        newer records. A record of another shard raises :class:`MisplacedRecordError` and
        changes nothing but the offset (it has been looked at; ``misplaced`` counts it).
        """
        if self.offset is not None and offset <= self.offset:
            return Change.NONE
        self.offset = offset
        s = record.subject
        # A subject already held here passed this check: a rebuild hashes each subject once.
        if s in self.routes or s in self.checkpoints or s in self.commands:
            return self._apply(record)
        expected = shard_of(s, self.shards)
        if expected != self.partition:
            self.misplaced += 1
            raise MisplacedRecordError(
                f"{_kind_of(record)}:{record.subject}",
                f"found on partition {self.partition} at offset {offset}, but the subject's "
                f"shard is {expected} of {self.shards}; not applied",
                hint="it was written without the explicit shard partition, or the control "
                "topic's partition count changed",
            )
        return self._apply(record)

    def _apply(self, record: ControlRecord) -> Change:
        s = record.subject
        match record:
            case RouteRecord(route=route):
                before = self.routes.get(s)
                self.routes[s] = route
                if before is None:
                    return Change.ROUTE_ADDED
                return Change.NONE if before == route else Change.ROUTE_CHANGED
            case RouteRemoved():
                return Change.ROUTE_REMOVED if self.routes.pop(s, None) else Change.NONE
            case CheckpointRecord():
                self.checkpoints[s] = record
                return Change.CHECKPOINT
            case CheckpointCleared():
                return Change.CHECKPOINT if self.checkpoints.pop(s, None) else Change.NONE
            case CommandRecord():
                self.commands[s] = record
                return Change.COMMAND if self.pending(s) else Change.NONE
            case CommandCleared():
                self.commands.pop(s, None)
                return Change.NONE
        raise AssertionError(record)  # pragma: no cover - exhaustive above

    def subjects(self) -> frozenset[str]:
        """Subjects with a route in this shard: the ones its owner fetches."""
        return frozenset(self.routes)

    def pending(self, subject: str) -> CommandRecord | None:
        """The subject's command not yet acknowledged by a checkpoint, if any."""
        rec = self.commands.get(subject)
        if rec is None:
            return None
        ckpt = self.checkpoints.get(subject)
        return None if ckpt is not None and ckpt.cmd == rec.command.id else rec

    def pending_commands(self) -> dict[str, CommandRecord]:
        out = {}
        for subject in self.commands:
            rec = self.pending(subject)
            if rec is not None:
                out[subject] = rec
        return out

    def resume(self, subject: str) -> Resume:
        """Where to start ``subject``: a pending reset, else its checkpoint, else its policy."""
        route = self.routes.get(subject)
        policy = route.start if route is not None else StartPolicy()
        cmd = self.pending(subject)
        if cmd is not None:
            to = cmd.command.to
            if isinstance(to, Position):
                return Resume(to, policy, cmd.command.id)
            return Resume(None, to, cmd.command.id)
        ckpt = self.checkpoints.get(subject)
        if ckpt is None:
            return Resume(None, policy)
        if ckpt.position is not None:
            return Resume(ckpt.position, policy)
        return Resume(None, ckpt.start or policy)


def _kind_of(record: ControlRecord) -> str:
    if isinstance(record, RouteRecord | RouteRemoved):
        return ROUTE
    if isinstance(record, CheckpointRecord | CheckpointCleared):
        return CHECKPOINT
    return COMMAND


__all__ = [
    "CHECKPOINT",
    "COMMAND",
    "ROUTE",
    "VERSION",
    "Change",
    "CheckpointCleared",
    "CheckpointRecord",
    "Command",
    "CommandCleared",
    "CommandOp",
    "CommandRecord",
    "ControlRecord",
    "ControlRecordError",
    "MisplacedRecordError",
    "Resume",
    "RouteRecord",
    "RouteRemoved",
    "ShardState",
    "UnsupportedVersionError",
    "decode",
    "encode_checkpoint",
    "encode_command",
    "encode_route",
    "encode_route_removal",
    "parse_reset_target",
]
