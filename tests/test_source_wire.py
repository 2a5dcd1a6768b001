"""Decoding consume answers: documented shape, all-or-nothing, errors that name the path."""

from __future__ import annotations

import json

import pytest

from peer.model import Message
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


def test_an_answer_is_its_messages_in_order() -> None:
    got = decode_consume("/w/a", body(raw(3), raw(1), raw(2)))
    assert [m.seq for m in got] == [3, 1, 2]  # the tracker judges order, not the decoder
    assert [m.content for m in got] == ["é3".encode(), "é1".encode(), "é2".encode()]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"content": "no type", "epoch": 2, "seq": 3}, r"messages\[2\]: .*`message_type`"),
        (raw(3, seq="3"), r"messages\[2\]\.seq: Expected `int`, got `str`"),
        (raw(3, seq=True), r"messages\[2\]\.seq: Expected `int`, got `bool`"),
        (raw(3, epoch=-1), r"messages\[2\]\.epoch: Expected `int` >= 0"),
        (raw(3, closure=7), r"messages\[2\]\.closure: Expected `str \| null`"),
        (raw(3, retained="yes"), r"messages\[2\]\.retained: Expected `bool`"),
        ("text", r"messages\[2\]: Expected `object`"),
    ],
)
def test_one_malformed_message_rejects_the_whole_answer_naming_its_path(
    message: object, reason: str
) -> None:
    with pytest.raises(MalformedResponseError, match=reason):
        decode_consume("/w/a", json.dumps({"messages": [raw(1), raw(2), message]}).encode())


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"[1]", "Expected `object`, got `array`"),
        (b'{"messages": 3}', r"messages: Expected `array`"),
        (b"{}", "missing required field `messages`"),
        (b'{"messages": [', "not JSON"),
        (b'{"subject": "/w/b", "messages": []}', "answer is for subject /w/b"),
        # a lone surrogate escape is JSON text but no UTF-8: refused, never half-encoded
        (
            b'{"messages": [{"message_type": "x", "content": "\\ud800", "epoch": 1, "seq": 1}]}',
            "not JSON",
        ),
    ],
)
def test_an_answer_of_the_wrong_shape_is_refused_with_the_reason(
    answer: bytes, reason: str
) -> None:
    with pytest.raises(MalformedResponseError, match=reason):
        decode_consume("/w/a", answer)


def test_unknown_fields_are_ignored() -> None:
    (msg,) = decode_consume("/w/a", body(raw(1, ttl=5, extra={"a": 1})))
    assert msg.seq == 1


def test_optional_fields_default_when_absent() -> None:
    minimal = {"message_type": "SNAPSHOT", "content": "x", "epoch": 0, "seq": 0}
    (msg,) = decode_consume("/w/a", body(minimal))
    assert (msg.closure, msg.retained, msg.compressed) == (None, True, False)


def test_error_bodies_are_quoted_briefly() -> None:
    assert decode_error(b'{"error": "subscribe denied"}') == "subscribe denied"
    assert decode_error(b"<html>" + b"x" * 500).endswith("...")
    assert len(decode_error(b"<html>" + b"x" * 500)) == 200
