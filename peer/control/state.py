"""The state of one shard, rebuilt from its control records in offset order."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from peer.control.records import (
    BLOCK,
    CHECKPOINT,
    COMMAND,
    PEER,
    ROUTE,
    BlockCleared,
    BlockRecord,
    CheckpointCleared,
    CheckpointRecord,
    CommandCleared,
    CommandRecord,
    ControlRecord,
    MisplacedRecordError,
    PeerCleared,
    PeerRecord,
    RouteRecord,
    RouteRemoved,
)
from peer.control.shards import shard_of
from peer.model import Position, StartPolicy
from peer.routes.model import Route

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
        #: subjects an owner reported stopped (informational: see BlockRecord)
        self.blocks: dict[str, BlockRecord] = {}
        #: peers' reports about themselves (any partition may hold one)
        self.peers: dict[str, PeerRecord] = {}
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
        if isinstance(record, PeerRecord):
            self.peers[record.peer_id] = record
            return Change.NONE
        if isinstance(record, PeerCleared):
            self.peers.pop(record.peer_id, None)
            return Change.NONE
        s = record.subject
        # A subject already held here passed this check: a rebuild hashes each subject once.
        if s in self.routes or s in self.checkpoints or s in self.commands or s in self.blocks:
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
            case BlockRecord():
                self.blocks[s] = record
                return Change.NONE
            case BlockCleared():
                self.blocks.pop(s, None)
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
    if isinstance(record, BlockRecord | BlockCleared):
        return BLOCK
    if isinstance(record, PeerRecord | PeerCleared):
        return PEER
    return COMMAND
