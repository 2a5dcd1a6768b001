"""Subjects, their (epoch, seq) numbering, snapshot and bounded history cache.

Every message is serialized to its JSON fragment once, when it is published; a consume joins
the fragments of the messages it returns, so a response of 1000 messages costs one
``bytes.join`` instead of 1000 ``json.dumps`` calls.

All public methods of :class:`Store` are thread-safe (one lock): the HTTP handlers and the
generator run on the server's event loop while tests publish from their own thread.
"""

from __future__ import annotations

import enum
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any, Final

#: The first epoch of every subject (MigratoryData's docs show 0 in an example snapshot; we
#: start at 1 so that an epoch of 0 can never be mistaken for a real position).
FIRST_EPOCH: Final = 1

_encode_content: Callable[[str], str] = encode_basestring
# Closures come from query strings, which may carry lone surrogates: escape to ASCII.
_encode_closure: Callable[[str], str] = encode_basestring_ascii


class MessageType(enum.Enum):
    SNAPSHOT = "SNAPSHOT"
    HISTORICAL = "HISTORICAL"
    RECOVERED = "RECOVERED"


_OPENERS: Final = {t: f'{{"message_type":"{t.value}",'.encode() for t in MessageType}
_SEPARATORS: Final = {t: b"}," + _OPENERS[t] for t in MessageType}


def subject_problem(subject: str) -> str | None:
    """Why ``subject`` breaks MigratoryData's subject syntax, or None when it is valid.

    A subject looks like a Unix absolute path: ``/`` then one or more non-empty segments
    separated by ``/``; subscribers may not use wildcards; no whitespace or control characters.
    """
    if not subject:
        return "the subject is empty; it must look like /segment[/segment...]"
    if not subject.startswith("/"):
        return "the subject must start with '/', e.g. /server/status1"
    if subject == "/":
        return "the subject needs at least one segment after '/', e.g. /server"
    if "*" in subject:
        return "the subject must not contain wildcards ('*')"
    # str.isprintable() is False for every control and separator character but ' '
    if not subject.isprintable() or " " in subject:
        for index, char in enumerate(subject):
            if char.isspace() or not char.isprintable():
                return (
                    f"the subject must not contain whitespace or control characters "
                    f"(U+{ord(char):04X} at index {index})"
                )
    if "//" in subject:
        return "the subject has an empty segment ('//')"
    if subject.endswith("/"):
        return "the subject has an empty last segment (trailing '/')"
    return None


class SubjectError(ValueError):
    """A subject breaks the syntax; the message names the subject and the problem."""

    def __init__(self, subject: str, problem: str) -> None:
        self.subject = subject
        self.problem = problem
        super().__init__(f"subject {subject!r}: {problem}")


def check_subject(subject: str) -> str:
    problem = subject_problem(subject)
    if problem is not None:
        raise SubjectError(subject, problem)
    return subject


def fragment(content: str, closure: str | None, retained: bool, epoch: int, seq: int) -> bytes:
    """The JSON members of one message after ``message_type`` (no braces)."""
    return (
        f'"content":{_encode_content(content)},'
        f'"closure":{"null" if closure is None else _encode_closure(closure)},'
        f'"retained":{"true" if retained else "false"},"compressed":false,'
        f'"epoch":{epoch},"seq":{seq}'
    ).encode()


def _no_messages(subject: str, kind: MessageType) -> bytes:
    """The answer for a subject with nothing to give (never published, or no snapshot)."""
    return messages_json(_encode_closure(subject).encode(), kind, [])


def messages_json(subject_json: bytes, kind: MessageType, fragments: Sequence[bytes]) -> bytes:
    """The whole consume response body for ``fragments`` (already in seq order)."""
    if not fragments:
        return b'{"subject":' + subject_json + b',"messages":[]}'
    return b"".join(
        (
            b'{"subject":',
            subject_json,
            b',"messages":[',
            _OPENERS[kind],
            _SEPARATORS[kind].join(fragments),
            b"}]}",
        )
    )


#: (epoch, seq, fragment) of a subject's latest retained message; a plain tuple because the
#: generator creates one per message
Snapshot = tuple[int, int, bytes]


class SubjectState:
    """One subject: epoch, head seq, snapshot and a cache of the current epoch's messages.

    The cache holds a contiguous run of seqs ending at ``head``: the oldest live entry is at
    ``start`` in the parallel ``frags``/``times`` lists (dropping from the front is an index
    bump; the lists are compacted now and then), so a position maps to an index directly.
    """

    __slots__ = ("epoch", "frags", "head", "name", "name_json", "snapshot", "start", "times")

    def __init__(self, name: str, epoch: int = FIRST_EPOCH) -> None:
        self.name = name
        self.name_json = _encode_closure(name).encode()
        self.epoch = epoch
        self.head = 0
        self.frags: list[bytes] = []
        self.times: list[float] = []
        self.start = 0
        self.snapshot: Snapshot | None = None

    @property
    def cached(self) -> int:
        return len(self.frags) - self.start

    @property
    def oldest_seq(self) -> int | None:
        n = self.cached
        return self.head - n + 1 if n else None

    def evict(self, cache_size: int, not_before: float) -> None:
        """Drop what exceeds ``cache_size`` and what was cached before ``not_before``."""
        excess = len(self.frags) - self.start - cache_size
        if excess > 0:
            self.start += excess
        times, start, end = self.times, self.start, len(self.times)
        while start < end and times[start] < not_before:
            start += 1
        self.start = start
        if start > 512 and start * 2 > end:
            del self.frags[:start]
            del self.times[:start]
            self.start = 0

    def new_epoch(self) -> None:
        # The old epoch's messages cannot be recovered any more; the snapshot stays (it is
        # still the subject's latest retained value, under the epoch it was published in).
        self.epoch += 1
        self.head = 0
        self.frags.clear()
        self.times.clear()
        self.start = 0

    def describe(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "epoch": self.epoch,
            "head_seq": self.head,
            "cache_size": self.cached,
            "oldest_seq": self.oldest_seq,
            "snapshot": None if snap is None else {"epoch": snap[0], "seq": snap[1]},
        }


def now_closure() -> str:
    """The default closure: the time the server received the message, ms since the epoch."""
    return str(time.time_ns() // 1_000_000)


class Store:
    """All subjects. ``clock`` is monotonic seconds (injectable for tests of expiry)."""

    def __init__(
        self,
        *,
        cache_size: int = 1000,
        cache_expire_s: float = 180.0,
        seq_inclusive: bool = True,
        max_per_response: int = 0,
        first_epoch: int = FIRST_EPOCH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache_size = cache_size
        self.cache_expire_s = cache_expire_s
        self.seq_inclusive = seq_inclusive
        self.max_per_response = max_per_response
        #: the epoch every subject starts in: above 1 after a restart that lost the store, so
        #: that the restart is a new epoch for every subject, as after a cluster restart
        self.first_epoch = first_epoch
        self._clock = clock
        self._lock = threading.Lock()
        self._subjects: dict[str, SubjectState] = {}
        self.published = 0
        #: called with the subjects of each publish, after the store lock is released (so
        #: the messages can be fetched by then), from the publishing thread; None = nobody
        #: listens, and publishing does not even collect the subjects
        self.on_publish: Callable[[Sequence[str]], None] | None = None

    # -- publishing ------------------------------------------------------------------------

    def _get(self, subject: str) -> SubjectState:
        state = self._subjects.get(subject)
        if state is None:
            state = self._subjects[subject] = SubjectState(subject, self.first_epoch)
        return state

    def publish(
        self, subject: str, content: str, *, closure: str | None, retained: bool = True
    ) -> tuple[int, int]:
        """Append one message (subject already validated); returns its (epoch, seq)."""
        now = self._clock()
        with self._lock:
            state = self._get(subject)
            seq = state.head + 1
            frag = fragment(content, closure, retained, state.epoch, seq)
            state.head = seq
            state.frags.append(frag)
            state.times.append(now)
            if retained:
                state.snapshot = (state.epoch, seq, frag)
            state.evict(self.cache_size, now - self.cache_expire_s)
            self.published += 1
            position = state.epoch, seq
        hook = self.on_publish
        if hook is not None:
            hook((subject,))
        return position

    def publish_many(
        self, items: Iterable[tuple[str, str]], *, closure: str | None, retained: bool = True
    ) -> int:
        """Append (subject, content) pairs under one lock: the generator's fast path."""
        now = self._clock()
        not_before = now - self.cache_expire_s
        cache_size = self.cache_size
        count = 0
        closure_json = "null" if closure is None else _encode_closure(closure)
        hook = self.on_publish
        touched: list[str] | None = None if hook is None else []
        first_epoch = self.first_epoch
        tail = (
            ',"retained":true,"compressed":false,'
            if retained
            else (',"retained":false,"compressed":false,')
        )
        with self._lock:
            subjects = self._subjects
            for subject, content in items:
                state = subjects.get(subject)
                if state is None:
                    state = subjects[subject] = SubjectState(subject, first_epoch)
                if touched is not None:
                    touched.append(subject)
                seq = state.head + 1
                frag = (
                    f'"content":{_encode_content(content)},"closure":{closure_json}'
                    f'{tail}"epoch":{state.epoch},"seq":{seq}'
                ).encode()
                state.head = seq
                frags = state.frags
                frags.append(frag)
                times = state.times
                times.append(now)
                if retained:
                    state.snapshot = (state.epoch, seq, frag)
                # the common cases inline (full cache: drop one); evict() for the rest
                start = state.start
                if len(frags) - start > cache_size:
                    start = state.start = len(frags) - cache_size
                    if start > 512 and start * 2 > len(frags):
                        state.evict(cache_size, not_before)
                        start = state.start
                if start < len(times) and times[start] < not_before:
                    state.evict(cache_size, not_before)
                count += 1
            self.published += count
        if hook is not None and touched:
            hook(touched)
        return count

    def bump_epoch(self, subject: str | None = None) -> dict[str, int]:
        """Start a new epoch for one subject (created if unknown) or for all of them."""
        with self._lock:
            targets = list(self._subjects.values()) if subject is None else [self._get(subject)]
            for state in targets:
                state.new_epoch()
            return {s.name: s.epoch for s in targets}

    # -- consuming -------------------------------------------------------------------------

    def _window(self, state: SubjectState, first: int, last: int) -> list[bytes]:
        """Fragments of cached seqs ``first..last`` (clamped), capped by max_per_response."""
        n = self.max_per_response
        if n and last - first + 1 > n:
            last = first + n - 1
        base = state.start - (state.head - state.cached + 1)  # index of seq 0
        return state.frags[base + first : base + last + 1]

    def _cached(self, subject: str, now: float) -> SubjectState | None:
        """The subject's state (None: never published) with what expired or overflowed its
        cache evicted; the caller holds the lock."""
        state = self._subjects.get(subject)
        if state is not None:
            state.evict(self.cache_size, now - self.cache_expire_s)
        return state

    def snapshot(self, subject: str) -> bytes:
        with self._lock:
            state = self._subjects.get(subject)
            if state is None or state.snapshot is None:
                return _no_messages(subject, MessageType.SNAPSHOT)
            return messages_json(state.name_json, MessageType.SNAPSHOT, [state.snapshot[2]])

    def history(self, subject: str, count: int) -> bytes:
        now = self._clock()
        with self._lock:
            state = self._cached(subject, now)
            if state is None:
                return _no_messages(subject, MessageType.HISTORICAL)
            count = min(count, state.cached)
            frags = self._window(state, state.head - count + 1, state.head) if count else []
            return messages_json(state.name_json, MessageType.HISTORICAL, frags)

    def recover(self, subject: str, epoch: int, seq: int) -> bytes:
        """Messages from (epoch, seq): see docs/REFERENCE-SERVER.md for the open cases."""
        now = self._clock()
        with self._lock:
            state = self._cached(subject, now)
            if state is None:
                return _no_messages(subject, MessageType.RECOVERED)
            oldest = state.oldest_seq
            frags: list[bytes] = []
            if oldest is not None:
                if epoch != state.epoch:
                    first = oldest  # an epoch the subject no longer has: its whole cache
                else:
                    first = max(seq if self.seq_inclusive else seq + 1, oldest)
                if first <= state.head:
                    frags = self._window(state, first, state.head)
            return messages_json(state.name_json, MessageType.RECOVERED, frags)

    # -- inspection ------------------------------------------------------------------------

    def describe(self, subject: str | None = None) -> dict[str, dict[str, Any]]:
        now = self._clock()
        not_before = now - self.cache_expire_s
        with self._lock:
            if subject is not None:
                states = [self._subjects[subject]] if subject in self._subjects else []
            else:
                states = list(self._subjects.values())
            out = {}
            for state in states:
                state.evict(self.cache_size, not_before)
                out[state.name] = state.describe()
            return out

    def subject_count(self) -> int:
        with self._lock:
            return len(self._subjects)


def encode_json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
