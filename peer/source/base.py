"""The source protocol: what the peer needs from anything that yields MigratoryData messages.

The peer drives a source from one thread (its main loop) and never blocks in it for long:

* ``subscribe(subject, after=..., policy=...)`` starts (or restarts) a subject. Delivery resumes
  **strictly after** ``after``: every message of ``after.epoch`` with ``seq <= after.seq`` is
  dropped, whatever the server's reading of ``seq`` (inclusive or exclusive). With
  ``after=None`` the subject is new and ``policy`` says where to begin. Subscribing a subject
  that is already subscribed resets it: events still buffered for it are discarded.
* ``unsubscribe(subject)``: after it returns, ``poll`` yields no event of that subject (events
  already buffered are discarded), until it is subscribed again.
* ``poll(max_events, timeout)`` returns what arrived, in order per subject: :class:`Message`
  and :class:`Gap` events, and :class:`SubjectFault` when the source stopped fetching a
  subject for a fault of its own (e.g. :class:`peer.errors.EntitlementDeniedError`): it
  comes after the subject's events buffered before it, and stops only that subject.
  ``poll_batches`` returns the same with the messages in :class:`Batch` es, as a consume
  answer brings them: the peer then routes, dedupes and checkpoints once per batch.
* ``reachability()``: for how long no MigratoryData server has answered (0: they answer).
* ``pause()`` / ``resume()``: backpressure. While paused, nothing new is fetched; the buffer is
  bounded anyway, so a peer that stops polling stops the fetching too.

A pull source (REST) and a push source (a vendor SDK calling a listener from its own thread)
both fit: each fills a bounded, per-subject ordered buffer that ``poll`` drains.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from peer.errors import SourceError
from peer.model import Message, Position, StartPolicy

#: a new subject's start when nothing else is said: its snapshot, then on
DEFAULT_POLICY = StartPolicy()


class GapKind(enum.Enum):
    SEQ_JUMP = "seq_jump"  # same epoch, seq skipped: the cache no longer held what we missed
    EPOCH_CHANGE = "epoch_change"  # the cluster reset the subject's sequence
    CACHE_EXPIRED = "cache_expired"  # the resume position is older than anything cached


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages that exist(ed) between ``after`` and ``resumed_at`` could not be obtained.

    Emitted before the first message at ``resumed_at``; never hidden (DESIGN.md, I6).
    ``missing`` is the number of messages skipped when it can be known (same epoch), else None.
    """

    subject: str
    kind: GapKind
    after: Position | None
    resumed_at: Position
    missing: int | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """Messages of one subject that follow each other, handed over as one event.

    A batch never spans a gap: its messages share one epoch and each seq is its
    predecessor's plus one (where that does not hold, a :class:`Gap` or another batch starts).
    So its first message alone tells whether any of it is at or before a position, and the
    route, partition and checkpoint of the subject are looked up once for all of it.
    ``nbytes`` is the sum of the contents' lengths.
    """

    subject: str
    messages: list[Message]
    nbytes: int

    def __len__(self) -> int:
        return len(self.messages)


@dataclass(frozen=True, slots=True)
class SubjectFault:
    """The source stopped fetching ``subject`` for a fault of that subject (``error.reason``);
    subscribing it again tries again."""

    subject: str
    error: SourceError


Event = Message | Gap | SubjectFault
#: what :meth:`Source.poll_batches` yields: the messages come in batches
Item = Batch | Gap | SubjectFault


def flatten(items: Iterable[Event | Item]) -> list[Event]:
    """``items`` with each batch's messages in its place."""
    out: list[Event] = []
    for item in items:
        if isinstance(item, Batch):
            out += item.messages
        else:
            out.append(item)
    return out


class Reachability(NamedTuple):
    """Whether MigratoryData answers: ``failing_for`` seconds without any server answering
    (0.0 while they answer), and the last transport error (token-free)."""

    failing_for: float = 0.0
    error: str = ""


@dataclass(slots=True)
class SourceStats:
    """Counters a source keeps; the peer exports them as metrics."""

    subjects: int = 0
    messages: int = 0
    duplicates_dropped: int = 0
    gaps: int = 0
    malformed: int = 0
    requests: int = 0
    request_errors: int = 0
    #: server (host:port) -> requests sent to it, and those that failed (for metrics)
    server_requests: dict[str, int] = field(default_factory=dict)
    server_errors: dict[str, int] = field(default_factory=dict)
    buffered: int = 0
    paused: bool = False
    #: subject -> newest position the server is known to have (for checkpoint lag)
    server_head: dict[str, Position] = field(default_factory=dict)
    #: the part of ``server_head`` that may be ahead of what the peer wrote (None: unknown,
    #: any of it may): checkpoint lag needs only these
    lagging: dict[str, Position] | None = None


class SubjectStart(NamedTuple):
    """Where one subject starts: strictly after ``after``, else by ``policy``."""

    subject: str
    after: Position | None
    policy: StartPolicy


@runtime_checkable
class Source(Protocol):
    """What the peer drives. Implementations are thread-safe for these calls."""

    def start(self) -> None: ...

    def subscribe(
        self, subject: str, *, after: Position | None, policy: StartPolicy = DEFAULT_POLICY
    ) -> None: ...

    def subscribe_many(self, starts: Sequence[SubjectStart]) -> None:
        """``subscribe`` each, in order; one call for the thousands a rebalance brings."""
        ...

    def unsubscribe(self, subject: str) -> None: ...

    def subjects(self) -> frozenset[str]: ...

    def poll(self, max_events: int, timeout: float) -> list[Event]: ...

    def poll_batches(self, max_events: int, timeout: float) -> list[Item]:
        """As :meth:`poll`, with each subject's consecutive messages in :class:`Batch` es
        (``max_events`` counts their messages): the peer's hot path takes them whole."""
        ...

    def reachability(self) -> Reachability: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def stats(self) -> SourceStats: ...

    def close(self) -> None: ...
