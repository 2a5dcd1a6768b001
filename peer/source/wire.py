"""Decoding the documented ``GET /rest/consume`` answer into :class:`Message` objects.

The answer is all or nothing: one malformed message rejects the whole answer (nothing of it is
delivered, the subject is asked again later), so a bad message can never be skipped silently
or delivered out of order with its neighbours.

The whole answer is parsed and type-checked at once by a typed decoder (msgspec, in C: about
three times faster than ``json`` plus checks in Python, and the error names the path, e.g.
``messages[2].seq``). :class:`Message` objects are built only when first looked at
(:class:`MessageList`): an answer larger than the room left in the buffer is cut by the
tracker, and the source hands the rest back to it when there is room again.

Required per message: ``message_type`` (string), ``content`` (string), ``epoch`` and ``seq``
(non-negative integers; ``true`` is no number). ``closure`` (string or null), ``retained`` and
``compressed`` (booleans) are type-checked when present and default to null / true / false
when absent: the documentation lists them, but their absence does not make the message
ambiguous. Unknown fields are ignored (a newer server may add some).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Annotated, overload

import msgspec

from peer.errors import SourceError
from peer.model import Message


class MalformedResponseError(SourceError):
    """The server's answer for a subject is not the documented JSON (counted, then retried)."""

    def __init__(self, subject: str, reason: str) -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(f"subject {subject!r}: malformed consume answer: {reason}")


_Count = Annotated[int, msgspec.Meta(ge=0)]


class _WireMessage(msgspec.Struct, frozen=True, gc=False):
    message_type: str
    content: str
    epoch: _Count
    seq: _Count
    closure: str | None = None
    retained: bool = True
    compressed: bool = False


class _Answer(msgspec.Struct, frozen=True):
    messages: list[_WireMessage]
    subject: str | None = None


_DECODER = msgspec.json.Decoder(_Answer)
#: msgspec's "... - at `$.messages[2].seq`" → ("...", "messages[2].seq")
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)


class MessageList(Sequence[Message]):
    """The messages of one consume answer, each built on first access.

    A slice is another lazy ``MessageList`` (what is not reached is never built); ``base`` is
    the index of its first message in the answer, so errors name the answer's index.
    """

    __slots__ = ("_base", "_built", "_raw", "_subject")

    def __init__(
        self,
        subject: str,
        raw: list[_WireMessage],
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
        answer = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise MalformedResponseError(subject, _where(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise MalformedResponseError(subject, f"not JSON ({_short(str(exc))})") from None
    if answer.subject is not None and answer.subject != subject:
        raise MalformedResponseError(subject, f"answer is for subject {_short(answer.subject)}")
    return MessageList(subject, answer.messages)


def _where(error: str) -> str:
    """``messages[2].seq: Expected `int`, got `str``` from msgspec's wording."""
    match = _AT.match(error)
    if match is None or not match.group("path"):
        return _short(error)
    return _short(f"{match.group('path')}: {match.group('what')}")


def _message(subject: str, index: int, item: _WireMessage) -> Message:
    try:
        data = item.content.encode()
    except UnicodeEncodeError:  # a lone surrogate escape (\ud800) is valid JSON, not UTF-8
        raise MalformedResponseError(
            subject, f"messages[{index}].content is not valid UTF-8 text"
        ) from None
    return Message(
        subject,
        data,
        item.epoch,
        item.seq,
        item.message_type,
        item.closure,
        item.retained,
        item.compressed,
    )


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
