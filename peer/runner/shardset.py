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


@dataclass(slots=True)
class SubjectTrack:
    """One fetched subject: where Kafka stands for it, and what the open transaction adds."""

    shard: int
    #: the last position committed to Kafka (or the resume point given at subscribe)
    committed: Position | None
    #: where the subject starts when ``committed`` is None
    policy: StartPolicy
    #: the last position written in the open transaction (None: nothing since the commit)
    pending: Position | None = None
    #: the id of the last command applied; copied into every checkpoint (peer.control)
    cmd: str | None = None
    #: a reset to a position whose acknowledging checkpoint is not committed yet
    needs_ack: bool = False

    def last(self) -> Position | None:
        return self.pending if self.pending is not None else self.committed


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
    subjects: dict[str, SubjectTrack] = field(default_factory=dict)
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
        return {s: t for s, t in self.subjects.items() if t.pending is not None or t.needs_ack}

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
        """:meth:`lag` per owned shard, and the same per route target topic (one pass)."""
        by_shard = dict.fromkeys(self.shards, 0)
        by_topic: dict[str, int] = {}
        for subject, track in self.subjects.items():
            route = self.route(subject)
            if route is not None:
                by_topic.setdefault(route.topic, 0)
            head, done = heads.get(subject), track.last()
            if head is not None and done is not None and head.epoch == done.epoch:
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
