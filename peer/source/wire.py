"""Decoding the documented ``GET /rest/consume`` answer into :class:`Message` objects.

The answer is all or nothing: one malformed message rejects the whole answer (nothing of it is
delivered, the subject is asked again later), so a bad message can never be skipped silently
or delivered out of order with its neighbours.

The whole answer is parsed and type-checked at once by a typed decoder (msgspec, in C: about
three times faster than ``json`` plus checks in Python, and the error names the path, e.g.
``messages[2].seq``), then turned into :class:`Message` objects in one pass. (They were built
lazily once, so that what did not fit the buffer was never built; but the source keeps an
answer's rest for later, so nearly every message is built anyway, and one comprehension
costs a third of building them one call at a time.)

Required per message: ``message_type`` (string), ``content`` (string), ``epoch`` and ``seq``
(non-negative integers; ``true`` is no number). ``closure`` (string or null), ``retained`` and
``compressed`` (booleans) are type-checked when present and default to null / true / false
when absent: the documentation lists them, but their absence does not make the message
ambiguous. Unknown fields are ignored (a newer server may add some).
"""

from __future__ import annotations

import json
import re
from typing import Annotated

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


def decode_consume(subject: str, body: bytes | bytearray | memoryview) -> list[Message]:
    """Parse and validate a consume answer for ``subject``; raise MalformedResponseError."""
    try:
        answer = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise MalformedResponseError(subject, _where(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise MalformedResponseError(subject, f"not JSON ({_short(str(exc))})") from None
    if answer.subject is not None and answer.subject != subject:
        raise MalformedResponseError(subject, f"answer is for subject {_short(answer.subject)}")
    try:
        return [
            Message(
                subject,
                m.content.encode(),
                m.epoch,
                m.seq,
                m.message_type,
                m.closure,
                m.retained,
                m.compressed,
            )
            for m in answer.messages
        ]
    except UnicodeEncodeError:  # a lone surrogate (msgspec refuses those: never seen here)
        bad = next(i for i, m in enumerate(answer.messages) if not _utf8(m.content))
        raise MalformedResponseError(
            subject, f"messages[{bad}].content is not valid UTF-8 text"
        ) from None


def _where(error: str) -> str:
    """``messages[2].seq: Expected `int`, got `str``` from msgspec's wording."""
    match = _AT.match(error)
    if match is None or not match.group("path"):
        return _short(error)
    return _short(f"{match.group('path')}: {match.group('what')}")


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def decode_error(body: bytes | bytearray | memoryview) -> str:
    """The server's own words from an error answer (``{"error": ...}``), bounded in length."""
    if isinstance(body, memoryview):
        body = body.tobytes()
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
