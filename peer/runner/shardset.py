"""What a peer owns: its shards' states, consumer positions, and per-subject progress.

Kept apart from the loop so the bookkeeping rules (what "committed" means, what a redo
resumes from) live in one small place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from peer.control import ShardState
from peer.model import Position, StartPolicy
from peer.routes.model import Route
from peer.source.base import SubjectStart


class SubjectTrack:
    """One fetched subject: where Kafka stands for it, and what the open transaction adds.

    Setting ``pending`` or ``needs_ack`` marks the subject in its :class:`ShardSet`'s
    ``subjects`` (:class:`Tracks`), so :meth:`ShardSet.dirty` looks at the marked subjects
    only: the loop asks every turn, and walking 100,000 idle subjects for it cost a tenth of
    a core (issue #16)."""

    __slots__ = (
        "_marks",
        "_needs_ack",
        "_pending",
        "cmd",
        "committed",
        "policy",
        "shard",
        "subject",
    )

    def __init__(
        self,
        shard: int,
        committed: Position | None,
        policy: StartPolicy,
        *,
        pending: Position | None = None,
        cmd: str | None = None,
        needs_ack: bool = False,
    ) -> None:
        # committed: the last position committed to Kafka (or the resume point given at
        # subscribe); policy: where the subject starts when committed is None; cmd: the id of
        # the last command applied, copied into every checkpoint (peer.control)
        self.shard, self.committed, self.policy, self.cmd = shard, committed, policy, cmd
        self.subject = ""
        self._marks: set[str] | None = None
        self._pending, self._needs_ack = pending, needs_ack

    @property
    def pending(self) -> Position | None:
        """The last position written in the open transaction (None: nothing since the commit)."""
        return self._pending

    @pending.setter
    def pending(self, position: Position | None) -> None:
        self._pending = position
        if position is not None and self._marks is not None:
            self._marks.add(self.subject)

    @property
    def needs_ack(self) -> bool:
        """A reset to a position whose acknowledging checkpoint is not committed yet."""
        return self._needs_ack

    @needs_ack.setter
    def needs_ack(self, value: bool) -> None:
        self._needs_ack = value
        if value and self._marks is not None:
            self._marks.add(self.subject)

    @property
    def dirty(self) -> bool:
        return self._pending is not None or self._needs_ack

    def last(self) -> Position | None:
        return self._pending if self._pending is not None else self.committed

    def __repr__(self) -> str:
        return (
            f"SubjectTrack(shard={self.shard}, committed={self.committed}, "
            f"pending={self._pending}, needs_ack={self._needs_ack}, cmd={self.cmd!r})"
        )


class Tracks(dict[str, SubjectTrack]):
    """``subject -> SubjectTrack``; a track put in is bound to ``marked``: the subjects that may
    be dirty (a superset: :meth:`ShardSet.dirty` checks and prunes)."""

    __slots__ = ("marked",)

    def __init__(self) -> None:
        super().__init__()
        self.marked: set[str] = set()

    def __setitem__(self, subject: str, track: SubjectTrack) -> None:
        track.subject, track._marks = subject, self.marked
        if track.dirty:
            self.marked.add(subject)
        super().__setitem__(subject, track)


@dataclass(slots=True)
class OwnedShard:
    state: ShardState
    #: next control offset to consume (what the group offsets carry at commit)
    position: int


@dataclass(slots=True)
class ShardSet:
    """Owned shards and the subjects fetched for them (I1: only routed subjects of owned
    shards are ever subscribed)."""

    shards: dict[int, OwnedShard] = field(default_factory=dict)
    subjects: Tracks = field(default_factory=Tracks)
    #: subject -> (shard, position) of our newest commit, kept after a route removal: our
    #: own checkpoint may not have come back through the consumer when the route returns
    remembered: dict[str, tuple[int, Position, str | None]] = field(default_factory=dict)

    def route(self, subject: str) -> Route | None:
        track = self.subjects.get(subject)
        if track is None:
            return None
        owned = self.shards.get(track.shard)
        return owned.state.routes.get(subject) if owned is not None else None

    def track(self, shard: int, subject: str) -> tuple[SubjectStart, str | None]:
        """Start tracking ``subject`` of ``shard`` from its resume point: where its source
        starts, and the id of the reset command this start applies (if it applies one)."""
        state = self.shards[shard].state
        resume = state.resume(subject)
        ckpt = state.checkpoints.get(subject)
        after = resume.after
        cmd = resume.cmd if resume.cmd is not None else (ckpt.cmd if ckpt else None)
        fresh_cmd = resume.cmd
        mine = self.remembered.get(subject)
        if mine is not None and (resume.cmd is None or resume.cmd == mine[2]):
            # our newest commit (and the command it acknowledged) may not have come back
            # through the consumer yet: it is newer than anything the state holds
            after, cmd, fresh_cmd = mine[1], mine[2], None
        track = SubjectTrack(
            shard=shard,
            committed=after,
            policy=resume.policy,
            cmd=cmd,
            # a reset to a position is acknowledged by a checkpoint at that position
            needs_ack=fresh_cmd is not None and after is not None,
        )
        self.subjects[subject] = track
        return SubjectStart(subject, track.committed, track.policy), fresh_cmd

    def subjects_of(self, shard: int) -> list[str]:
        return [s for s, t in self.subjects.items() if t.shard == shard]

    def dirty(self) -> dict[str, SubjectTrack]:
        """Subjects whose checkpoint must go into the open transaction."""
        subjects = self.subjects
        out: dict[str, SubjectTrack] = {}
        gone: list[str] = []
        for subject in subjects.marked:
            track = subjects.get(subject)
            if track is not None and track.dirty:
                out[subject] = track
            else:
                gone.append(subject)
        subjects.marked.difference_update(gone)
        return out

    def committed_all(self) -> None:
        """The open transaction committed: pending positions became the committed ones."""
        for subject, track in self.subjects.items():
            if track.pending is not None:
                track.committed = track.pending
                track.pending = None
            track.needs_ack = False
            if track.committed is not None:
                self.remembered[subject] = (track.shard, track.committed, track.cmd)

    def lag(self, heads: Mapping[str, Position]) -> dict[int, int]:
        """Per owned shard: messages the server has beyond what we wrote (same epoch only;
        across an epoch change the distance is unknown and counts 0)."""
        return self.lags(heads)[0]

    def lags(self, heads: Mapping[str, Position]) -> tuple[dict[int, int], dict[str, int]]:
        """:meth:`lag` per owned shard, and the same per route target topic (one pass).

        Only the subjects of ``heads`` can lag: when the source names just those that may
        (``SourceStats.lagging``), 100,000 idle subjects are not walked once a second."""
        by_shard = dict.fromkeys(self.shards, 0)
        by_topic: dict[str, int] = dict.fromkeys(
            {r.topic for o in self.shards.values() for r in o.state.routes.values()}, 0
        )
        subjects = self.subjects
        for subject, head in heads.items():
            track = subjects.get(subject)
            if track is None:
                continue
            route = self.route(subject)
            done = track.last()
            if done is not None and head.epoch == done.epoch:
                behind = max(0, head.seq - done.seq)
                by_shard[track.shard] = by_shard.get(track.shard, 0) + behind
                if route is not None:
                    by_topic[route.topic] += behind
        return by_shard, by_topic

    def forget(self, shard: int) -> None:
        """The shard is no longer ours: drop everything known about it."""
        for subject in self.subjects_of(shard):
            del self.subjects[subject]
        for subject in [s for s, known in self.remembered.items() if known[0] == shard]:
            del self.remembered[subject]
        self.shards.pop(shard, None)

    def clear(self) -> None:
        """Nothing is owned any more (after a fatal error: close commits nothing)."""
        self.shards.clear()
        self.subjects.clear()
        self.remembered.clear()

    def aborted_all(self) -> None:
        for track in self.subjects.values():
            track.pending = None
