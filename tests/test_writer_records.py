"""The record a message becomes: the per-route template's fast headers and size agree with the
plain definitions (``message_headers``, ``record_size``) for every message shape."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peer.model import Message
from peer.routes.model import Route
from peer.writer.records import RecordTemplate, message_headers, record_size

SUBJECTS = st.sampled_from(["/a/b", "/ünï/cödé", "/server/status1"])


@given(
    subject=SUBJECTS,
    key=st.one_of(st.none(), st.sampled_from(["k", "ключ", "user-42"])),
    prefix=st.sampled_from(["md.", "", "мд-"]),
    messages=st.lists(
        st.tuples(
            st.binary(max_size=64),
            st.integers(0, 2**40),
            st.integers(0, 2**62),
            st.sampled_from(["SNAPSHOT", "UPDATE", "RECOVERED", "HISTORICAL", "NEW_KIND"]),
            st.one_of(
                st.none(), st.text(max_size=20).map(lambda t: t.encode("utf-8", "replace").decode())
            ),
            st.booleans(),
            st.one_of(st.none(), st.sampled_from(["standard", "guaranteed"])),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_template_headers_and_size_match_the_definitions(
    subject: str,
    key: str | None,
    prefix: str,
    messages: list[tuple[bytes, int, int, str, str | None, bool, str | None]],
) -> None:
    route = Route(subject, "topic-1", key=key)
    template = RecordTemplate(route, 3, prefix, lambda _err, _msg: None)
    assert template.partition == 3
    assert template.key == (key.encode() if key is not None else None)
    for content, epoch, seq, kind, closure, retained, qos in messages:
        message = Message(subject, content, epoch, seq, kind, closure, retained, qos=qos)
        headers, size = template.headers_and_size(message)
        expected = message_headers(message, prefix)
        assert headers == expected
        assert size == record_size(content, template.key, expected)


def test_template_headers_follow_a_closure_that_repeats_changes_and_comes_back() -> None:
    """The closure header is encoded once and reused while messages share it."""
    route = Route("/a/b", "topic-1")
    template = RecordTemplate(route, 0, "md.", lambda _err, _msg: None)
    closures = ["c1", "c1", "ç2", None, "ç2", "c1", "", "c1"]
    for seq, closure in enumerate(closures):
        message = Message("/a/b", b"v" * seq, 1, seq, "UPDATE", closure, seq % 2 == 0)
        headers, size = template.headers_and_size(message)
        expected = message_headers(message, "md.")
        assert headers == expected
        assert size == record_size(message.content, None, expected)
