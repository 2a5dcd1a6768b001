"""A bounded buffer of events, ordered per subject, drained round-robin across subjects.

Not synchronised: the owner (a source) guards it with its own lock, together with the
subscription table, so "is this answer still wanted?" and "buffer it" are one atomic step.

Bounds are on events (messages and gaps) and on content bytes. The fetcher asks
:meth:`EventBuffer.fetchable` before sending a request and passes :meth:`room` to the tracker,
which accepts only what fits; so the buffer never exceeds its bounds, except by a single
message larger than the whole byte bound (accepted alone into an empty buffer, or nothing
could ever move). Fetching stops when full and starts again below three quarters (hysteresis:
otherwise every freed slot would trigger a request that brings back mostly what does not fit).

A :class:`~peer.source.base.Batch` counts as its messages and is kept whole: :meth:`take`
cuts one only where ``max_events`` falls inside it, so handing a consume answer's messages to
the peer costs per batch, not per message.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Generic, TypeVar, cast

from peer.model import Message
from peer.source.base import Batch, Event, Item

#: what a buffer may hold: the source's batches, gaps and faults, or single messages
Entry = Event | Item
E = TypeVar("E", bound=Entry)


def event_size(event: Entry) -> int:
    """Content bytes of an entry."""
    if isinstance(event, Batch):
        return event.nbytes
    return len(event.content) if isinstance(event, Message) else 0


def event_count(event: Entry) -> int:
    """Events an entry counts for: a batch, its messages; anything else, one."""
    return len(event.messages) if isinstance(event, Batch) else 1


class EventBuffer(Generic[E]):
    __slots__ = (
        "_full",
        "_low_bytes",
        "_low_events",
        "_queues",
        "_ready",
        "max_bytes",
        "max_events",
        "nbytes",
        "nevents",
    )

    def __init__(self, max_events: int, max_bytes: int) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("buffer bounds must be positive")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._low_events = max_events - max(1, max_events // 4)
        self._low_bytes = max_bytes - max(1, max_bytes // 4)
        self.nevents = 0
        self.nbytes = 0
        self._queues: dict[str, deque[E]] = {}
        # Subjects with buffered events, in the order they are to be drained.
        self._ready: OrderedDict[str, None] = OrderedDict()
        self._full = False

    def __len__(self) -> int:
        return self.nevents

    def subjects(self) -> Iterable[str]:
        """The subjects with buffered events."""
        return self._ready.keys()

    def room(self) -> tuple[int, int]:
        """(events, bytes) that can still be added."""
        return self.max_events - self.nevents, self.max_bytes - self.nbytes

    def takes_any(self) -> bool:
        """Whether an answer's first message would be taken now (room, or an empty buffer)."""
        return (self.nevents < self.max_events and self.nbytes < self.max_bytes) or not self.nevents

    def fetchable(self) -> bool:
        """Whether fetching more is worthwhile now (with hysteresis, see the module doc)."""
        if self._full:
            if self.nevents <= self._low_events and self.nbytes <= self._low_bytes:
                self._full = False
        elif self.nevents >= self.max_events or self.nbytes >= self.max_bytes:
            self._full = True
        return not self._full

    def extend(self, subject: str, events: Iterable[E], nbytes: int) -> None:
        """Append ``subject``'s entries (``nbytes`` = their content bytes) after its others."""
        queue = self._queues.get(subject)
        if queue is None:
            queue = self._queues[subject] = deque()
        before = len(queue)
        added = 0
        for event in events:
            queue.append(event)
            added += event_count(event)
        if added and not before:
            self._ready[subject] = None
        self.nevents += added
        self.nbytes += nbytes
        if self.nevents >= self.max_events or self.nbytes >= self.max_bytes:
            self._full = True

    def discard(self, subject: str) -> int:
        """Drop every buffered event of ``subject``; returns how many."""
        queue = self._queues.pop(subject, None)
        self._ready.pop(subject, None)
        if not queue:
            return 0
        count = sum(event_count(e) for e in queue)
        self.nevents -= count
        self.nbytes -= sum(event_size(e) for e in queue)
        return count

    def take(self, max_events: int) -> list[E]:
        """Entries of up to ``max_events`` events: per subject in order, subjects in turn; a
        batch is cut where the count runs out, its rest stays first in line."""
        out: list[E] = []
        ready = self._ready
        queues = self._queues
        taken = freed = 0
        while ready and taken < max_events:
            subject, _ = ready.popitem(last=False)
            queue = queues[subject]
            while queue and taken < max_events:
                entry = queue[0]
                want = max_events - taken
                if isinstance(entry, Batch) and len(entry.messages) > want:
                    messages = entry.messages
                    head = messages[:want]
                    nbytes = sum([len(m.content) for m in head])
                    queue[0] = cast(E, Batch(subject, messages[want:], entry.nbytes - nbytes))
                    entry = cast(E, Batch(subject, head, nbytes))
                else:
                    queue.popleft()
                out.append(entry)
                taken += event_count(entry)
                freed += event_size(entry)
            if queue:
                ready[subject] = None  # more to come: back of the line
            else:
                del queues[subject]
        self.nevents -= taken
        self.nbytes -= freed
        return out
