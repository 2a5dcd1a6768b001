"""Decoding the documented ``GET /rest/consume`` answer into :class:`Message` objects.

The answer is all or nothing: one malformed message rejects the whole answer (nothing of it is
delivered, the subject is asked again later), so a bad message can never be skipped silently
or delivered out of order with its neighbours.

The JSON is parsed whole, but each message is validated and built only when it is first
looked at (:class:`MessageList`): an answer larger than the room left in the buffer is cut by
the tracker, and the messages it never reached cost nothing beyond parsing (the source hands
them back to the tracker when there is room again, or fetches them again). A malformed message
raises while the tracker reads the answer, before it commits anything, so all-or-nothing holds
for every message that could be delivered.

Required per message: ``message_type`` (string), ``content`` (string), ``epoch`` and ``seq``
(non-negative integers). ``closure`` (string or null), ``retained`` and ``compressed``
(booleans) are type-checked when present and default to null / true / false when absent: the
documentation lists them, but their absence does not make the message ambiguous.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, overload

from peer.errors import SourceError
from peer.source.base import Message


class MalformedResponseError(SourceError):
    """The server's answer for a subject is not the documented JSON (counted, then retried)."""

    def __init__(self, subject: str, reason: str) -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(f"subject {subject!r}: malformed consume answer: {reason}")


class MessageList(Sequence[Message]):
    """The messages of one consume answer, each validated and built on first access.

    A slice is another lazy ``MessageList`` (what is not reached is never built); ``base`` is
    the index of its first message in the answer, so errors name the answer's index.
    """

    __slots__ = ("_base", "_built", "_raw", "_subject")

    def __init__(
        self,
        subject: str,
        raw: list[Any],
        built: list[Message | None] | None = None,
        base: int = 0,
    ) -> None:
        self._subject = subject
        self._raw = raw
        self._built: list[Message | None] = [None] * len(raw) if built is None else built
        self._base = base

    def __len__(self) -> int:
        return len(self._raw)

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> MessageList: ...

    def __getitem__(self, index: int | slice) -> Message | MessageList:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self._raw))
            if step != 1:
                raise ValueError("a MessageList slice must be contiguous")
            stop = max(start, stop)
            return MessageList(
                self._subject, self._raw[start:stop], self._built[start:stop], self._base + start
            )
        n = len(self._raw)
        if not -n <= index < n:
            raise IndexError(index)
        return self._get(index % n)

    def _get(self, i: int) -> Message:
        msg = self._built[i]
        if msg is None:
            msg = self._built[i] = _message(self._subject, self._base + i, self._raw[i])
        return msg

    def __iter__(self) -> Iterator[Message]:
        built, raw, subject, base = self._built, self._raw, self._subject, self._base
        for i, item in enumerate(raw):
            msg = built[i]
            if msg is None:
                msg = built[i] = _message(subject, base + i, item)
            yield msg


def decode_consume(subject: str, body: bytes) -> MessageList:
    """Parse and validate a consume answer for ``subject``; raise MalformedResponseError."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedResponseError(subject, f"not JSON ({_short(exc)})") from None
    if type(doc) is not dict:
        raise MalformedResponseError(subject, "expected a JSON object")
    got = doc.get("subject")
    if got is not None and got != subject:
        raise MalformedResponseError(subject, f"answer is for subject {_short(got)}")
    raw = doc.get("messages")
    if type(raw) is not list:
        raise MalformedResponseError(subject, "'messages' is missing or not a list")
    return MessageList(subject, raw)


def _message(subject: str, index: int, item: Any) -> Message:
    if type(item) is not dict:
        raise MalformedResponseError(subject, f"messages[{index}] is not an object")
    try:
        message_type = item["message_type"]
        content = item["content"]
        epoch = item["epoch"]
        seq = item["seq"]
    except KeyError as exc:
        raise MalformedResponseError(subject, f"messages[{index}] lacks {exc.args[0]!r}") from None
    closure = item.get("closure")
    retained = item.get("retained", True)
    compressed = item.get("compressed", False)
    # type() is, not isinstance: bool is an int subclass, and True is no sequence number.
    if (
        type(message_type) is not str
        or type(content) is not str
        or type(epoch) is not int
        or type(seq) is not int
        or epoch < 0
        or seq < 0
        or (closure is not None and type(closure) is not str)
        or type(retained) is not bool
        or type(compressed) is not bool
    ):
        raise MalformedResponseError(subject, f"messages[{index}] has a field of the wrong type")
    try:
        data = content.encode()
    except UnicodeEncodeError:
        raise MalformedResponseError(
            subject, f"messages[{index}] content is not valid UTF-8 text"
        ) from None
    return Message(subject, data, epoch, seq, message_type, closure, retained, compressed)


def decode_error(body: bytes) -> str:
    """The server's own words from an error answer (``{"error": ...}``), bounded in length."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _short(body.decode("utf-8", "replace").strip())
    if isinstance(doc, dict) and "error" in doc:
        return _short(doc["error"])
    return _short(doc)


def _short(value: object, limit: int = 200) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
