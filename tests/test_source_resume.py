"""The per-subject resume / de-duplication / gap state machine, without any I/O.

A small in-memory model of a subject on a MigratoryData-like server (cache bounded by count,
epochs, seq inclusive or exclusive on consume, a page limit, optional rewinding and seq holes)
drives the tracker the way the REST source does; hypothesis explores the combinations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.model import Message, Position, StartPolicy
from peer.source.base import Batch, Event, Gap, GapKind
from peer.source.resume import ConsumeRequest, Phase, RequestKind, SubjectTracker

SUBJECT = "/model/s"
BIG = 10**9


def msg(epoch: int, seq: int, *, retained: bool = True, kind: str = "RECOVERED") -> Message:
    return Message(SUBJECT, f"{epoch}:{seq}".encode(), epoch, seq, kind, None, retained)


@dataclass
class ModelServer:
    """One subject as the documented REST consume sees it (our reading of the open points)."""

    inclusive: bool = True
    limit: int = 0  # messages per answer, 0 = unlimited
    cache_size: int = 1000
    rewind: int = 0  # answer from seq - rewind (a sloppy server re-sending old messages)
    epoch: int = 1
    next_seq: int = 1
    cache: list[Message] = field(default_factory=list)
    published: list[Message] = field(default_factory=list)
    #: messages that left the cache (count limit, expiry, epoch change)
    evicted: list[Message] = field(default_factory=list)
    snapshot: Message | None = None

    def publish(self, count: int = 1, *, skip: int = 0, retained: bool = True) -> None:
        self.next_seq += skip  # a hole in the server's own sequence
        for _ in range(count):
            m = msg(self.epoch, self.next_seq, retained=retained)
            self.next_seq += 1
            self.published.append(m)
            self.cache.append(m)
            if retained:
                self.snapshot = m
        self.expire(len(self.cache) - self.cache_size)

    def expire(self, count: int) -> None:
        count = max(0, count)
        self.evicted += self.cache[:count]
        del self.cache[:count]

    def bump(self) -> None:
        self.epoch += 1
        self.next_seq = 1
        self.expire(len(self.cache))
        self.snapshot = None

    def consume(self, request: ConsumeRequest) -> list[Message]:
        if request.kind is RequestKind.SNAPSHOT:
            return [self.snapshot] if self.snapshot else []
        if request.kind is RequestKind.HISTORY:
            out = self.cache[-request.history :]
        else:
            pos = request.position
            assert pos is not None
            if pos.epoch != self.epoch:
                out = list(self.cache)  # unknown epoch: the current epoch's whole cache
            else:
                start = pos.seq - self.rewind
                out = [
                    m for m in self.cache if m.seq > start or (self.inclusive and m.seq == start)
                ]
        return out[: self.limit] if self.limit else out


def step(
    tracker: SubjectTracker, server: ModelServer, room: int = BIG, carry: Carry | None = None
) -> tuple[list[Event], bool]:
    """One poll, as the REST source does it: with ``carry``, a truncated answer's rest is
    handed back as the answer to the next positional request instead of asking again."""
    request = tracker.next_request()
    rest = carry.rest if carry is not None else None
    continued = rest is not None and request.kind is RequestKind.FROM
    answer: Sequence[Message] = rest if continued and rest is not None else server.consume(request)
    if carry is not None:
        carry.rest = None
    out = tracker.apply(request, answer, room_events=room, room_bytes=BIG, continued=continued)
    assert out.duplicates == 0 or server.rewind, "a well-behaved server caused duplicates"
    for item in out.items:  # a batch never spans a gap: one epoch, seqs one apart
        if isinstance(item, Batch):
            first = item.messages[0]
            assert item.subject == SUBJECT
            assert item.nbytes == sum(len(m.content) for m in item.messages)
            assert [(m.epoch, m.seq) for m in item.messages] == [
                (first.epoch, first.seq + i) for i in range(len(item.messages))
            ], f"a batch spans a gap: {item}"
    if carry is not None:
        carry.rest = out.rest
        carry.used += continued
    return out.events, out.progressed


@dataclass
class Carry:
    rest: Sequence[Message] | None = None
    used: int = 0


def drain(tracker: SubjectTracker, server: ModelServer, carry: Carry | None = None) -> list[Event]:
    events: list[Event] = []
    for _ in range(10_000):
        got, progressed = step(tracker, server, carry=carry)
        events += got
        if not progressed:
            return events
    raise AssertionError("the tracker never caught up")


def check_stream(
    events: list[Event], start: Position | None, published: list[Message]
) -> list[Message]:
    """Order, uniqueness, 'strictly after' and gap placement; returns the delivered messages."""
    order = {m.position: i for i, m in enumerate(published)}
    delivered: list[Message] = []
    prev = start
    pending_gap: Gap | None = None
    for event in events:
        if isinstance(event, Gap):
            assert pending_gap is None, "two gaps in a row"
            pending_gap = event
            continue
        assert isinstance(event, Message), f"a tracker never yields {event!r}"
        pos = event.position
        assert pos in order, f"delivered {pos}, which was never published"
        if delivered:
            assert order[pos] > order[delivered[-1].position], "out of order or repeated"
        elif start is not None and start in order:
            assert order[pos] > order[start], "delivered something not after the checkpoint"
        contiguous = prev is not None and prev.epoch == pos.epoch and pos.seq == prev.seq + 1
        if prev is None or contiguous:
            assert pending_gap is None, f"gap reported before {pos} though nothing is missing"
        else:
            assert pending_gap is not None, f"no gap reported between {prev} and {pos}"
            assert pending_gap.after == prev
            assert pending_gap.resumed_at == pos
            if prev.epoch != pos.epoch:
                assert pending_gap.kind is GapKind.EPOCH_CHANGE
                assert pending_gap.missing is None
            else:
                assert pending_gap.kind in (GapKind.SEQ_JUMP, GapKind.CACHE_EXPIRED)
                assert pending_gap.missing == pos.seq - prev.seq - 1
        pending_gap = None
        prev = pos
        delivered.append(event)
    assert pending_gap is None, "a gap was not followed by its message"
    return delivered


# -- hypothesis: random streams, checkpoints, server readings, page limits, rooms --------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(1, 25), st.sampled_from([0, 0, 0, 0, 3])),
        st.tuples(st.just("poll"), st.integers(1, 40), st.just(0)),
        st.tuples(st.just("expire"), st.integers(1, 30), st.just(0)),
        st.tuples(st.just("bump"), st.just(0), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    inclusive=st.booleans(),
    # Not 1: an inclusive server answering one message at a time would only ever repeat the
    # checkpoint (documented in docs/SOURCE.md); 2 is the smallest page that always moves on.
    limit=st.sampled_from([0, 2, 3, 7, 50]),
    cache_size=st.integers(1, 60),
    rewind=st.sampled_from([0, 0, 1, 5]),
    before=st.integers(0, 40),
    checkpoint=st.one_of(
        st.integers(0, 39).map(lambda i: ("published", i)),
        st.just(("unknown_epoch", 0)),
        st.just(("before_first", 0)),
    ),
    ops=OPS,
    carried=st.booleans(),
)
def test_resume_delivers_exactly_what_follows_the_checkpoint(
    carried: bool,
    inclusive: bool,
    limit: int,
    cache_size: int,
    rewind: int,
    before: int,
    checkpoint: tuple[str, int],
    ops: list[tuple[str, int, int]],
) -> None:
    if limit and limit <= rewind + 1:
        limit = rewind + 2  # a page must hold more than what the server repeats, or none moves on
    server = ModelServer(inclusive=inclusive, limit=limit, cache_size=cache_size, rewind=rewind)
    server.publish(before)
    how, index = checkpoint
    if how == "published" and index < len(server.published):
        after = server.published[index].position
    elif how == "unknown_epoch":
        after = Position(77, 5)
    else:
        after = Position(1, 0)
    tracker = SubjectTracker(SUBJECT, after=after)
    carry = Carry() if carried else None
    events: list[Event] = []
    for op, n, extra in ops:
        if op == "publish":
            server.publish(n, skip=extra)
        elif op == "poll":
            got, _ = step(tracker, server, room=n, carry=carry)
            events += got
        elif op == "expire":
            server.expire(n)
        else:
            server.bump()
    events += drain(tracker, server, carry)

    delivered = check_stream(events, after, server.published)
    positions = [m.position for m in server.published]
    if after in positions:
        newer = server.published[positions.index(after) + 1 :]
    else:  # before the first message, or an epoch the server does not know: all is newer
        newer = list(server.published)
    # Whatever is still cached and newer than the checkpoint was delivered...
    assert all(m in delivered for m in server.cache if m in newer)
    # ...and when nothing ever left the cache, exactly everything newer was, in order.
    if not server.evicted:
        assert delivered == newer
    if server.cache and server.cache[-1] in newer:
        assert tracker.last == server.cache[-1].position
        assert tracker.head == server.cache[-1].position


@settings(max_examples=200, deadline=None)
@given(
    policy=st.sampled_from(["snapshot", "latest", "history:1", "history:5", "history:100"]),
    inclusive=st.booleans(),
    limit=st.sampled_from([0, 2, 9]),
    before=st.integers(0, 30),
    after_sub=st.lists(st.integers(1, 12), max_size=6),
)
def test_first_start_then_everything_that_follows(
    policy: str, inclusive: bool, limit: int, before: int, after_sub: list[int]
) -> None:
    server = ModelServer(inclusive=inclusive, limit=limit)
    server.publish(before)
    tracker = SubjectTracker(SUBJECT, after=None, policy=StartPolicy.parse(policy))
    events = drain(tracker, server)
    published_at_start = list(server.published)
    for count in after_sub:
        server.publish(count)
        events += drain(tracker, server)
    delivered = check_stream(events, None, server.published)
    later = server.published[len(published_at_start) :]
    if policy == "latest":
        expected_start: list[Message] = []
    elif policy == "snapshot":
        expected_start = published_at_start[-1:]
    else:
        expected_start = published_at_start[-int(policy.split(":")[1]) :]
    assert delivered == expected_start + later


# -- examples that pin each rule down -----------------------------------------------------------


def answer(tracker: SubjectTracker, messages: list[Message], room: int = BIG) -> list[Event]:
    request = tracker.next_request()
    return tracker.apply(request, messages, room_events=room, room_bytes=BIG).events


def test_requests_from_the_checkpoint_itself_not_the_next_seq() -> None:
    tracker = SubjectTracker(SUBJECT, after=Position(3, 41))
    request = tracker.next_request()
    assert request.kind is RequestKind.FROM
    assert request.params() == {"epoch": "3", "seq": "41"}


@pytest.mark.parametrize("inclusive", [True, False])
def test_checkpoint_message_itself_is_never_redelivered(inclusive: bool) -> None:
    tracker = SubjectTracker(SUBJECT, after=Position(1, 5))
    first = [msg(1, 5)] if inclusive else []
    request = tracker.next_request()
    out = tracker.apply(request, [*first, msg(1, 6)], room_events=BIG, room_bytes=BIG)
    assert out.events == [msg(1, 6)]
    assert out.duplicates == 0  # the echo of the requested position is expected, not a duplicate


def test_repeated_and_out_of_order_messages_are_dropped_and_counted() -> None:
    tracker = SubjectTracker(SUBJECT, after=Position(1, 5))
    request = tracker.next_request()
    out = tracker.apply(
        request,
        [msg(1, 3), msg(1, 6), msg(1, 4), msg(1, 6), msg(1, 7)],
        room_events=BIG,
        room_bytes=BIG,
    )
    assert out.events == [msg(1, 6), msg(1, 7)]
    assert out.duplicates == 3


def test_jump_at_the_start_of_an_answer_is_cache_expiry() -> None:
    tracker = SubjectTracker(SUBJECT, after=Position(2, 10))
    events = answer(tracker, [msg(2, 25), msg(2, 26)])
    assert events == [
        Gap(SUBJECT, GapKind.CACHE_EXPIRED, Position(2, 10), Position(2, 25), 14),
        msg(2, 25),
        msg(2, 26),
    ]


def test_hole_between_two_messages_of_one_answer_is_a_seq_jump() -> None:
    tracker = SubjectTracker(SUBJECT, after=Position(2, 10))
    events = answer(tracker, [msg(2, 10), msg(2, 11), msg(2, 14)])
    assert events == [
        msg(2, 11),
        Gap(SUBJECT, GapKind.SEQ_JUMP, Position(2, 11), Position(2, 14), 2),
        msg(2, 14),
    ]


def test_other_epoch_is_an_epoch_change_with_unknown_missing_count() -> None:
    tracker = SubjectTracker(SUBJECT, after=Position(2, 10))
    events = answer(tracker, [msg(3, 1), msg(3, 2)])
    assert events == [
        Gap(SUBJECT, GapKind.EPOCH_CHANGE, Position(2, 10), Position(3, 1), None),
        msg(3, 1),
        msg(3, 2),
    ]
    assert tracker.next_request().position == Position(3, 2)


def test_room_limits_what_is_accepted_and_the_rest_is_fetched_again() -> None:
    tracker = SubjectTracker(SUBJECT, after=Position(1, 0))
    request = tracker.next_request()
    out = tracker.apply(request, [msg(1, i) for i in range(1, 6)], room_events=2, room_bytes=BIG)
    assert out.events == [msg(1, 1), msg(1, 2)]
    assert out.truncated
    assert out.progressed
    assert tracker.next_request().position == Position(1, 2)


def test_gap_and_its_message_are_accepted_together_or_not_at_all() -> None:
    tracker = SubjectTracker(SUBJECT, after=Position(1, 0))
    request = tracker.next_request()
    out = tracker.apply(request, [msg(1, 5)], room_events=1, room_bytes=BIG)
    assert out.events == []
    assert out.truncated
    assert tracker.last == Position(1, 0)


def test_byte_room_and_force_first() -> None:
    big = Message(SUBJECT, b"x" * 100, 1, 1, "RECOVERED")
    tracker = SubjectTracker(SUBJECT, after=Position(1, 0))
    request = tracker.next_request()
    assert tracker.apply(request, [big], room_events=BIG, room_bytes=50).events == []
    out = tracker.apply(request, [big, msg(1, 2)], room_events=BIG, room_bytes=50, force_first=True)
    assert out.events == [big]  # one oversized message passes alone into an empty buffer


def test_snapshot_policy_delivers_the_snapshot_then_follows_it() -> None:
    tracker = SubjectTracker(SUBJECT, after=None, policy=StartPolicy.parse("snapshot"))
    assert tracker.next_request().kind is RequestKind.SNAPSHOT
    snap = msg(4, 17, kind="SNAPSHOT")
    assert answer(tracker, [snap]) == [snap]
    assert tracker.next_request() == ConsumeRequest(RequestKind.FROM, position=Position(4, 17))


def test_latest_policy_learns_the_position_without_delivering() -> None:
    tracker = SubjectTracker(SUBJECT, after=None, policy=StartPolicy.parse("latest"))
    assert tracker.next_request() == ConsumeRequest(RequestKind.HISTORY, history=1)
    assert answer(tracker, [msg(4, 17)]) == []
    assert tracker.phase is Phase.FOLLOW
    assert tracker.last == Position(4, 17)


def test_empty_subject_polls_history_and_delivers_what_appears() -> None:
    tracker = SubjectTracker(SUBJECT, after=None, history_fetch=250)
    assert answer(tracker, []) == []
    assert tracker.phase is Phase.EMPTY
    assert tracker.next_request() == ConsumeRequest(RequestKind.HISTORY, history=250)
    assert answer(tracker, [msg(1, 1), msg(1, 2)]) == [msg(1, 1), msg(1, 2)]
    assert tracker.next_request().position == Position(1, 2)


def test_history_policy_keeps_only_the_last_n_even_if_the_server_sends_more() -> None:
    tracker = SubjectTracker(SUBJECT, after=None, policy=StartPolicy.parse("history:2"))
    assert answer(tracker, [msg(1, i) for i in range(1, 6)]) == [msg(1, 4), msg(1, 5)]


def test_an_answer_to_another_request_is_refused() -> None:
    tracker = SubjectTracker(SUBJECT, after=Position(1, 1))
    with pytest.raises(ValueError, match="does not answer"):
        tracker.apply(ConsumeRequest(RequestKind.SNAPSHOT), [], room_events=BIG, room_bytes=BIG)


def test_a_truncated_answer_hands_back_its_rest_and_continues_from_it() -> None:
    tracker = SubjectTracker(SUBJECT, after=Position(1, 0))
    request = tracker.next_request()
    answer = [msg(1, i) for i in range(1, 8)]
    out = tracker.apply(request, answer, room_events=3, room_bytes=BIG)
    assert [m.seq for m in out.events if isinstance(m, Message)] == [1, 2, 3]
    assert out.truncated
    assert out.rest is not None
    assert [m.seq for m in out.rest] == [4, 5, 6, 7]
    # A hole right at the cut is the server's own (it held both): a seq jump, not expiry.
    rest = [msg(1, 5), msg(1, 6)]
    out = tracker.apply(
        tracker.next_request(), rest, room_events=BIG, room_bytes=BIG, continued=True
    )
    assert out.events[0] == Gap(SUBJECT, GapKind.SEQ_JUMP, Position(1, 3), Position(1, 5), 1)
    assert out.rest is None
    with pytest.raises(ValueError, match="positional"):
        SubjectTracker(SUBJECT, after=None).apply(
            ConsumeRequest(RequestKind.SNAPSHOT), [], room_events=1, room_bytes=1, continued=True
        )
