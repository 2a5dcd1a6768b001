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
* ``reachability()``: for how long no MigratoryData server has answered (0: they answer).
* ``pause()`` / ``resume()``: backpressure. While paused, nothing new is fetched; the buffer is
  bounded anyway, so a peer that stops polling stops the fetching too.

A pull source (REST) and a push source (a vendor SDK calling a listener from its own thread)
both fit: each fills a bounded, per-subject ordered buffer that ``poll`` drains.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

import msgspec

from peer.errors import ConfigError, SourceError


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
class SubjectFault:
    """The source stopped fetching ``subject`` for a fault of that subject (``error.reason``);
    subscribing it again tries again."""

    subject: str
    error: SourceError


Event = Message | Gap | SubjectFault


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
    buffered: int = 0
    paused: bool = False
    #: subject -> newest position the server is known to have (for checkpoint lag)
    server_head: dict[str, Position] = field(default_factory=dict)


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
        self, subject: str, *, after: Position | None, policy: StartPolicy = StartPolicy()
    ) -> None: ...

    def subscribe_many(self, starts: Sequence[SubjectStart]) -> None:
        """``subscribe`` each, in order; one call for the thousands a rebalance brings."""
        ...

    def unsubscribe(self, subject: str) -> None: ...

    def subjects(self) -> frozenset[str]: ...

    def poll(self, max_events: int, timeout: float) -> list[Event]: ...

    def reachability(self) -> Reachability: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def stats(self) -> SourceStats: ...

    def close(self) -> None: ...
