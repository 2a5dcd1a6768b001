"""Decoding consume answers: documented shape, all-or-nothing, lazy validation."""

from __future__ import annotations

import json

import pytest

from peer.source.base import Message, Position
from peer.source.resume import SubjectTracker
from peer.source.wire import MalformedResponseError, decode_consume, decode_error


def body(*messages: dict[str, object], subject: str = "/w/a") -> bytes:
    return json.dumps({"subject": subject, "messages": list(messages)}).encode()


def raw(n: int, **fields: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "message_type": "RECOVERED",
        "content": f"é{n}",
        "closure": "c",
        "retained": False,
        "compressed": False,
        "epoch": 2,
        "seq": n,
    }
    doc.update(fields)
    return doc


def test_the_documented_shape_decodes_to_messages() -> None:
    got = decode_consume("/w/a", body(raw(1), raw(2, closure=None)))
    assert len(got) == 2
    assert got[0] == Message(
        "/w/a", "é1".encode(), 2, 1, "RECOVERED", "c", retained=False, compressed=False
    )
    assert got[-1].closure is None
    assert list(got[0:2]) == list(got)
    with pytest.raises(IndexError):
        got[2]


def test_a_slice_is_lazy_and_names_the_answers_index() -> None:
    got = decode_consume("/w/a", body(raw(1), raw(2), {"content": "no type"}, raw(4)))
    tail = got[1:]
    assert len(tail) == 3
    assert tail[0].seq == 2  # built on access; the malformed one was not reached
    with pytest.raises(MalformedResponseError, match=r"messages\[2\] lacks 'message_type'"):
        tail[1]
    assert list(got[3:]) == [got[3]]
    assert len(got[5:]) == 0


def test_optional_fields_default_when_absent() -> None:
    minimal = {"message_type": "SNAPSHOT", "content": "x", "epoch": 0, "seq": 0}
    (msg,) = decode_consume("/w/a", body(minimal))
    assert (msg.closure, msg.retained, msg.compressed) == (None, True, False)


def test_messages_are_validated_when_reached_and_the_tracker_commits_nothing() -> None:
    answer = decode_consume("/w/a", body(raw(1), raw(2), raw(3, seq="3"), raw(4)))
    assert answer[0].seq == 1  # fine so far: nothing is validated before it is read
    tracker = SubjectTracker("/w/a", after=Position(2, 0))
    request = tracker.next_request()
    with pytest.raises(MalformedResponseError, match=r"messages\[2\]"):
        tracker.apply(request, answer, room_events=10, room_bytes=10**6)
    assert tracker.last == Position(2, 0)


def test_a_cut_answer_never_validates_what_it_does_not_deliver() -> None:
    answer = decode_consume("/w/a", body(raw(1), raw(2), raw(3, seq=None)))
    tracker = SubjectTracker("/w/a", after=Position(2, 0))
    request = tracker.next_request()
    with pytest.raises(MalformedResponseError):  # the head (last message) is always read
        tracker.apply(request, answer, room_events=1, room_bytes=10**6)
    ok = decode_consume("/w/a", body(raw(1), raw(2), raw(3, epoch=True), raw(4)))
    out = tracker.apply(request, ok, room_events=1, room_bytes=10**6)
    assert [m.seq for m in out.events if isinstance(m, Message)] == [1]
    assert out.truncated


def test_error_bodies_are_quoted_briefly() -> None:
    assert decode_error(b'{"error": "subscribe denied"}') == "subscribe denied"
    assert decode_error(b"<html>" + b"x" * 500).endswith("...")
    assert len(decode_error(b"<html>" + b"x" * 500)) == 200
