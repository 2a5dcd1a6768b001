"""Per-subject resume, de-duplication and gap detection: a pure state machine, no I/O.

One :class:`SubjectTracker` per subscription says which consume request to send next
(:meth:`SubjectTracker.next_request`) and turns the server's answer into events
(:meth:`SubjectTracker.apply`). The rules (DESIGN.md I4, I6):

* **Strictly after the checkpoint.** Once a position ``last`` is known, the request is
  ``epoch=last.epoch&seq=last.seq`` (not ``seq+1``: a server reading ``seq`` as exclusive would
  then skip one message), and every message of ``last.epoch`` with ``seq <= last.seq`` is
  dropped. That is correct whether the server reads ``seq`` as inclusive or exclusive.
  Out-of-order or repeated messages are dropped the same way and counted as duplicates; the
  echo of the requested position itself (what an inclusive server returns first) is expected
  and not counted.
* **Gaps are events.** A message of another epoch than ``last`` → ``EPOCH_CHANGE`` (missing
  unknown). Same epoch, seq beyond ``last.seq + 1``:

  - ``CACHE_EXPIRED`` when the jump is at the very first message of the answer to a positional
    request: the server answers with everything it holds from our position, so if its first
    message is already past ``last.seq + 1`` the messages in between had left its cache;
  - ``SEQ_JUMP`` when the jump is between two messages of one answer (the server's own sequence
    has a hole; it held both neighbours, so this is not expiry), or inside a history answer.

  ``missing`` is the number of skipped seqs. A gap always precedes the message it leads to.
* **First start** (no checkpoint), by policy: ``snapshot`` = bare consume, deliver the snapshot
  and continue from its position; ``history:N`` = deliver up to the last N cached, continue
  from the newest; ``latest`` = ``history=1`` only to learn the newest position, deliver
  nothing. If that first answer is empty, no position exists yet: the tracker polls with
  ``history=<history_fetch>`` and delivers whatever appears, until it has a position.
  (A subject with only non-retained messages has no snapshot; with ``snapshot`` it is then
  treated as empty, and its cached messages are delivered: a few extra old messages rather
  than a silent loss of new ones.)
* **Bounded.** ``apply`` accepts only as many events and bytes as the caller has room for; the
  position advances only over what was accepted. The rest is fetched again, or, as the answer
  to the next positional request, handed back by the caller (:attr:`Outcome.rest`) so a large
  answer is parsed once.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from peer.model import Message, Position, StartKind, StartPolicy
from peer.source.base import DEFAULT_POLICY, Batch, Event, Gap, GapKind, flatten

log = logging.getLogger("peer.source")


class RequestKind(enum.Enum):
    SNAPSHOT = "snapshot"  # bare consume: the latest retained message
    HISTORY = "history"  # history=N: up to the last N cached
    FROM = "from"  # epoch+seq: from a position on


@dataclass(frozen=True, slots=True)
class ConsumeRequest:
    """The query a tracker wants sent next (besides subject and token)."""

    kind: RequestKind
    history: int = 0
    position: Position | None = None

    def params(self) -> dict[str, str]:
        if self.kind is RequestKind.HISTORY:
            return {"history": str(self.history)}
        if self.kind is RequestKind.FROM:
            assert self.position is not None
            return {"epoch": str(self.position.epoch), "seq": str(self.position.seq)}
        return {}

    def __str__(self) -> str:
        if self.kind is RequestKind.HISTORY:
            return f"history={self.history}"
        if self.kind is RequestKind.FROM:
            return f"from={self.position}"
        return "snapshot"


class Phase(enum.Enum):
    START = "start"  # the first request of the start policy is pending
    EMPTY = "empty"  # no position exists yet: poll history and deliver everything
    FOLLOW = "follow"  # a position is known: poll from it


@dataclass(slots=True)
class Outcome:
    """What one answer produced: its messages in :class:`Batch` es, gaps between them."""

    items: list[Batch | Gap] = field(default_factory=list)
    messages: int = 0
    nbytes: int = 0
    duplicates: int = 0
    gaps: list[Gap] = field(default_factory=list)
    #: the answer held more than there was room for: fetch again as soon as there is room
    truncated: bool = False
    #: the tracker learned something (position or phase) even if it delivered nothing
    advanced: bool = False
    #: when truncated after a position was reached: the messages of the answer not yet
    #: examined, which the caller may hand back (``continued=True``) instead of fetching again
    rest: Sequence[Message] | None = None

    @property
    def events(self) -> list[Event]:
        """The items with each batch's messages in its place (gaps before their message)."""
        return flatten(self.items)

    @property
    def progressed(self) -> bool:
        """Whether polling again at once is likely to yield more."""
        return bool(self.items) or self.truncated or self.advanced

    def log(self, subject: str) -> None:
        """Each gap once, as a warning with its range (I6); dropped duplicates at debug."""
        for gap in self.gaps:
            log.warning(
                "gap in subject stream",
                extra={
                    "subject": gap.subject,
                    "kind": gap.kind.value,
                    "after": str(gap.after) if gap.after else None,
                    "resumed_at": str(gap.resumed_at),
                    "missing": gap.missing,
                },
            )
        if self.duplicates:
            log.debug(
                "dropped duplicates", extra={"subject": subject, "duplicates": self.duplicates}
            )


@dataclass(eq=False, slots=True)
class Subscription:
    """One subscription of a subject; a new ``subscribe`` makes a new one (generation + 1)."""

    subject: str
    generation: int
    tracker: SubjectTracker


class SubjectTracker:
    """Resume state of one subscription. Not thread-safe: one request at a time."""

    __slots__ = ("_history_fetch", "_phase", "_policy", "head", "last", "subject")

    def __init__(
        self,
        subject: str,
        *,
        after: Position | None,
        policy: StartPolicy = DEFAULT_POLICY,
        history_fetch: int = 1000,
    ) -> None:
        if history_fetch < 1:
            raise ValueError("history_fetch must be positive")
        self.subject = subject
        #: position of the last message delivered (or skipped over by ``latest``)
        self.last: Position | None = after
        #: newest position the server was seen to hold (checkpoint lag), None until known
        self.head: Position | None = None
        self._policy = policy
        self._history_fetch = history_fetch
        self._phase = Phase.FOLLOW if after is not None else Phase.START

    @property
    def phase(self) -> Phase:
        return self._phase

    def next_request(self) -> ConsumeRequest:
        if self._phase is Phase.FOLLOW:
            return ConsumeRequest(RequestKind.FROM, position=self.last)
        if self._phase is Phase.EMPTY:
            return ConsumeRequest(RequestKind.HISTORY, history=self._history_fetch)
        kind = self._policy.kind
        if kind is StartKind.SNAPSHOT:
            return ConsumeRequest(RequestKind.SNAPSHOT)
        if kind is StartKind.HISTORY:
            return ConsumeRequest(RequestKind.HISTORY, history=self._policy.history)
        return ConsumeRequest(RequestKind.HISTORY, history=1)  # latest: learn the head

    def apply(
        self,
        request: ConsumeRequest,
        messages: Sequence[Message],
        *,
        room_events: int,
        room_bytes: int,
        force_first: bool = False,
        continued: bool = False,
    ) -> Outcome:
        """Turn the answer to ``request`` (which must be :meth:`next_request`'s) into events.

        At most ``room_events`` events and ``room_bytes`` content bytes are accepted, except
        that with ``force_first`` the first message (and its gap) always is, so one message
        larger than the whole buffer cannot stall the subject.

        ``continued``: ``messages`` is the :attr:`Outcome.rest` of the previous answer, not a
        new answer; its first message is then no evidence of cache expiry.
        """
        if request != self.next_request():
            raise ValueError(f"{request} does not answer the pending {self.next_request()}")
        if continued and request.kind is not RequestKind.FROM:
            raise ValueError(f"a continued answer needs a positional request, not {request}")
        out = Outcome()
        if messages:
            self.head = messages[-1].position
        if self._phase is Phase.START and self._policy.kind is StartKind.LATEST:
            if messages:
                self.last = messages[-1].position
                self._phase = Phase.FOLLOW
            else:
                self._phase = Phase.EMPTY
            out.advanced = True
            return out
        if self._phase is Phase.START:
            if self._policy.kind is StartKind.SNAPSHOT:
                # One snapshot per subject; if a server sent more, the newest is the snapshot.
                messages = messages[-1:]
            else:
                messages = messages[-self._policy.history :]
        if not messages:
            if self._phase is Phase.START:
                self._phase = Phase.EMPTY
                out.advanced = True
            return out
        self._take(
            messages,
            out,
            request,
            room_events,
            room_bytes,
            force_first=force_first,
            continued=continued,
        )
        if self.last is not None and self._phase is not Phase.FOLLOW:
            self._phase = Phase.FOLLOW
            out.advanced = True
        return out

    def _take(
        self,
        messages: Sequence[Message],
        out: Outcome,
        request: ConsumeRequest,
        room_events: int,
        room_bytes: int,
        *,
        force_first: bool,
        continued: bool,
    ) -> None:
        positional = request.kind is RequestKind.FROM and not continued
        requested = request.position
        last = self.last
        known = last is not None
        # plain ints in the loop: a Position per message would cost more than the rest
        epoch, seq = (last.epoch, last.seq) if last is not None else (-1, -1)
        taken: Message | None = None
        subject, items = self.subject, out.items
        # the messages since the last gap: one Batch (consecutive seqs of one epoch)
        run: list[Message] = []
        run_bytes = total_bytes = 0
        for index, msg in enumerate(messages):
            gap: Gap | None = None
            if known:
                if msg.epoch == epoch:
                    if msg.seq <= seq:
                        if not (index == 0 and positional and msg.position == requested):
                            out.duplicates += 1
                        continue
                    if msg.seq != seq + 1:
                        expired = positional and index == 0
                        gap = Gap(
                            subject,
                            GapKind.CACHE_EXPIRED if expired else GapKind.SEQ_JUMP,
                            Position(epoch, seq),
                            msg.position,
                            msg.seq - seq - 1,
                        )
                else:
                    gap = Gap(subject, GapKind.EPOCH_CHANGE, Position(epoch, seq), msg.position)
            size = len(msg.content)
            need = 2 if gap is not None else 1
            if (need > room_events or size > room_bytes) and not (force_first and taken is None):
                out.truncated = True
                if taken is not None or last is not None:
                    out.rest = messages[index:]
                break
            if gap is not None:
                if run:
                    items.append(Batch(subject, run, run_bytes))
                    out.messages += len(run)
                    run, run_bytes = [], 0
                items.append(gap)
                out.gaps.append(gap)
            run.append(msg)
            run_bytes += size
            total_bytes += size
            room_events -= need
            room_bytes -= size
            taken = msg
            known = True
            epoch, seq = msg.epoch, msg.seq
        if run:
            items.append(Batch(subject, run, run_bytes))
            out.messages += len(run)
        out.nbytes += total_bytes
        if taken is not None:
            self.last = Position(taken.epoch, taken.seq)
