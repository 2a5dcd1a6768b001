"""The follow loop (peer/source/follow.py): its shortcut for repeated answers (issue #16),
and the slow start of first fetches (issue #14).

An answer that changed nothing is kept; the same request answered with the same bytes is then
neither decoded nor applied. That is exact only if applying it again could not change anything
either: the property test checks it against the tracker for every start policy and answer
shape, whatever the room. The reference server checks that a changed answer is still
delivered, exactly once, and that the repeats really skip the decoding; and that subjects
starting far behind, all at once, are not fetched whole side by side only to be dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.config.servers import parse_servers
from peer.dev.sim.server import SimServer
from peer.model import Message, Position, StartPolicy
from peer.source import follow, wire
from peer.source.base import Event, SubjectStart
from peer.source.consume import ConsumeClient
from peer.source.follow import _unchanged
from peer.source.http1 import Body
from peer.source.rest import RestSource, RestSourceConfig
from peer.source.resume import ConsumeRequest, Outcome, SubjectTracker
from peer.testing import wait_until

SUBJECT = "/f/a"


def _message(epoch: int, seq: int) -> Message:
    return Message(SUBJECT, b"x" * (seq % 5), epoch, seq, "UPDATE")


_answers = st.lists(
    st.lists(st.tuples(st.integers(1, 2), st.integers(0, 6)), max_size=4).map(
        lambda pairs: [_message(e, s) for e, s in pairs]
    ),
    min_size=1,
    max_size=5,
)
_policies = st.sampled_from(
    [StartPolicy.parse(p) for p in ("snapshot", "latest", "history:1", "history:3")]
)
_afters = st.none() | st.builds(Position, st.integers(1, 2), st.integers(0, 6))


def _state(tracker: SubjectTracker) -> tuple[Any, ...]:
    return (tracker.last, tracker.head, tracker.phase, tracker.next_request())


@settings(max_examples=400, deadline=None)
@given(
    policy=_policies,
    after=_afters,
    answers=_answers,
    room=st.tuples(st.integers(0, 3), st.integers(0, 10), st.booleans()),
)
def test_an_answer_that_changed_nothing_changes_nothing_again(
    policy: StartPolicy,
    after: Position | None,
    answers: list[list[Message]],
    room: tuple[int, int, bool],
) -> None:
    tracker = SubjectTracker(SUBJECT, after=after, policy=policy, history_fetch=5)
    for messages in answers:
        request = tracker.next_request()
        outcome = tracker.apply(request, messages, room_events=100, room_bytes=1000)
        if not _unchanged(outcome, b""):
            continue
        assert outcome == Outcome()
        before = _state(tracker)
        assert before[3] == request  # the same request is asked again
        events, nbytes, force_first = room
        again = tracker.apply(
            request, messages, room_events=events, room_bytes=nbytes, force_first=force_first
        )
        assert again == Outcome()
        assert _state(tracker) == before


def test_only_small_answers_are_kept() -> None:
    assert _unchanged(Outcome(), b"x" * follow._SAME_MAX)
    assert not _unchanged(Outcome(), b"x" * (follow._SAME_MAX + 1))
    assert not _unchanged(Outcome(duplicates=1), b"")
    assert not _unchanged(Outcome(advanced=True), b"")


# -- against the reference server --------------------------------------------------------------


@pytest.fixture
def polling_source(sim_factory: Callable[..., SimServer]) -> Iterator[tuple[SimServer, RestSource]]:
    sim = sim_factory(cache_size=100)
    netloc = sim.url.split("://", 1)[1]
    config = RestSourceConfig(
        servers=parse_servers([netloc]), poll_idle_min=0.005, poll_idle_max=0.01
    )
    source = RestSource(config)
    source.start()
    try:
        yield sim, source
    finally:
        source.close()


def _consumes(sim: SimServer) -> int:
    return int(sim.state()["requests"].get("consume", 0))


def _drain(source: RestSource, into: list[Event]) -> bool:
    into.extend(source.poll(1000, 0.02))
    return False


def _positions(events: Sequence[Event]) -> list[Position]:
    return [e.position for e in events if isinstance(e, Message)]


@pytest.mark.sim
def test_repeats_skip_decoding_and_a_changed_answer_is_delivered_once(
    polling_source: tuple[SimServer, RestSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, source = polling_source
    decoded: list[str] = []
    real = wire.decode_consume

    def counting(subject: str, body: bytes) -> Sequence[Message]:
        decoded.append(subject)
        return real(subject, body)

    monkeypatch.setattr("peer.source.follow.decode_consume", counting)
    first = Position(*sim.publish(SUBJECT, "m0"))
    source.subscribe(SUBJECT, after=None)
    events: list[Event] = []
    wait_until(lambda: _drain(source, events) or len(events) == 1, 20, "the snapshot")
    for round_ in range(3):
        # idle: the server answers the same; after the first such answer none is decoded
        start, decodes = _consumes(sim), len(decoded)
        wait_until(lambda: _drain(source, events) or _consumes(sim) >= start + 10, 20, "idle")  # noqa: B023
        assert len(decoded) <= decodes + 1, "repeated answers were decoded again"
        sim.publish(SUBJECT, f"m{round_ + 1}")
        want = round_ + 2
        wait_until(lambda: _drain(source, events) or len(events) >= want, 20, "the new message")  # noqa: B023
    # a duplicate would come with the fetches that follow
    start = _consumes(sim)
    wait_until(lambda: _drain(source, events) or _consumes(sim) >= start + 10, 20, "idle")
    positions = _positions(events)
    assert positions == [Position(first.epoch, first.seq + i) for i in range(4)]
    stats = source.stats()
    assert (stats.messages, stats.duplicates_dropped, stats.gaps) == (4, 0, 0)
    assert stats.server_head is not None
    assert stats.lagging is not None
    assert stats.server_head[SUBJECT] == positions[-1]
    assert SUBJECT not in stats.lagging


def _start_together(
    sim: SimServer, subjects: list[str], want: int, **config: Any
) -> tuple[list[Event], int]:
    """Start ``subjects`` from their history, all at once, on a source of ``config``; the
    first ``want`` events polled, and the consume requests the server had answered then."""
    netloc = sim.url.split("://", 1)[1]
    source = RestSource(RestSourceConfig(servers=parse_servers([netloc]), **config))
    source.start()
    events: list[Event] = []
    try:
        history = StartPolicy.parse("history:1000")
        source.subscribe_many([SubjectStart(s, None, history) for s in subjects])
        wait_until(lambda: _drain(source, events) or len(events) >= want, 60, f"{want} events")
        return events, _consumes(sim)
    finally:
        source.close()


@pytest.mark.sim
def test_subjects_starting_far_behind_at_once_are_received_about_once(
    sim_factory: Callable[..., SimServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8 subjects of 300 messages (about 300 KB each) start from their history, 8 requests
    # at a time, for a buffer of 200 messages. Side by side, 7 of the first 8 answers found
    # no room and no position to keep them by, and were received again later: about twice
    # the bytes. Slow start sends first fetches 2 at a time, then, their answers being
    # large, one at a time in turn with the catch-ups.
    subjects, per_subject = [f"/far/s{i}" for i in range(8)], 300
    sim = sim_factory(cache_size=per_subject + 10)
    for subject in subjects:
        for seq in range(per_subject):
            sim.publish(subject, f"{seq:04d}" + "x" * 996)
    received: dict[str, list[int]] = {s: [] for s in subjects}
    real = ConsumeClient.fetch

    async def counting(
        self: ConsumeClient, subject: str, request: ConsumeRequest, target: str | None = None
    ) -> Body:
        body = await real(self, subject, request, target)
        received[subject].append(len(body))  # before it is given back and reused
        return body

    monkeypatch.setattr(ConsumeClient, "fetch", counting)
    events, _ = _start_together(
        sim,
        subjects,
        len(subjects) * per_subject,
        max_concurrency=8,
        max_buffered_messages=200,
        poll_idle_min=0.005,
        poll_idle_max=0.01,
    )
    # exactly once and in order, per subject
    seqs: dict[str, list[int]] = {s: [] for s in subjects}
    for event in events:
        assert isinstance(event, Message)
        seqs[event.subject].append(event.seq)
    first_seq = {s: seqs[s][0] for s in subjects}
    assert seqs == {s: list(range(first_seq[s], first_seq[s] + per_subject)) for s in subjects}
    # each subject's whole history is its largest answer; everything received, against it
    whole = sum(max(sizes) for sizes in received.values())
    got = sum(sum(sizes) for sizes in received.values())
    assert got <= 1.3 * whole, f"received {got:,} bytes for {whole:,} delivered"


@pytest.mark.sim
def test_thousands_of_caught_up_subjects_start_in_about_one_request_each(
    sim_factory: Callable[..., SimServer],
) -> None:
    # Small first answers open the slow start's gate: the first fetches all queue in the
    # client at once, as before it. Let through a few at a time instead, each one queued
    # behind every started subject's idle poll: the start took minutes, not seconds, and
    # the server answered many polls per subject started.
    n = 2000
    subjects = [f"/many/s{i}" for i in range(n)]
    sim = sim_factory(cache_size=10)
    for subject in subjects:
        sim.publish(subject, "x" * 100)
    events, requests = _start_together(sim, subjects, n, poll_idle_min=0.02, poll_idle_max=0.05)
    assert sorted(e.subject for e in events) == sorted(subjects)
    assert requests <= 1.5 * n, f"{requests:,} consume requests to start {n:,} subjects"
