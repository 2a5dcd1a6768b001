"""The source's counters and heads (peer/source/tally.py): kept as answers come, so the
peer's once-a-second stats name only the subjects that may lag."""

from __future__ import annotations

from peer.model import Message, Position, StartPolicy
from peer.source.resume import SubjectTracker
from peer.source.tally import Tally


def _answer(tally: Tally, tracker: SubjectTracker, seqs: range, room: int) -> None:
    request = tracker.next_request()
    messages = [Message("/a", b"x", 1, s, "UPDATE") for s in seqs]
    outcome = tracker.apply(request, messages, room_events=room, room_bytes=1 << 20)
    tally.accepted("/a", tracker, outcome)


def test_a_subject_lags_while_its_head_is_ahead_or_its_events_are_buffered() -> None:
    tally = Tally()
    tracker = SubjectTracker("/a", after=Position(1, 1), policy=StartPolicy())
    _answer(tally, tracker, range(2, 6), room=2)  # room for two of four
    stats = tally.stats(())
    assert stats.server_head == {"/a": Position(1, 5)}
    assert stats.lagging == {"/a": Position(1, 5)}
    assert stats.messages == 2
    _answer(tally, tracker, range(4, 6), room=100)  # the rest: delivered, not lagging
    assert tally.stats(()).lagging == {}
    assert tally.stats(["/a"]).lagging == {"/a": Position(1, 5)}  # still buffered
    assert tally.stats(["/unknown"]).lagging == {}
    tally.forget("/a")
    assert tally.stats(["/a"]).server_head == {}
    assert tally.stats(()).messages == 4
