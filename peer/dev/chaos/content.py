"""Message content the checker can verify byte for byte.

``<subject>|<counter>|<filler>``: the counter numbers a subject's publishes from 1 across
epochs; the filler is derived from (subject, counter), so a record whose bytes were cut,
swapped with another's or mixed up is caught, not only one with the wrong headers.
"""

from __future__ import annotations

import hashlib
from typing import Final

SEP: Final = "|"


def content(subject: str, counter: int, size: int) -> bytes:
    """The exact bytes of ``subject``'s ``counter``-th message, at least ``size`` long."""
    head = f"{subject}{SEP}{counter}{SEP}".encode()
    seed = hashlib.blake2b(head, digest_size=16).hexdigest().encode()
    room = max(size - len(head), 0)
    filler = (seed * (room // len(seed) + 1))[:room]
    return head + filler


def parse(value: bytes | None) -> tuple[str, int] | None:
    """(subject, counter) a value claims to be, or None when it is not ours."""
    if value is None:
        return None
    try:
        subject, counter, _ = value.decode("utf-8").split(SEP, 2)
        number = int(counter)
    except ValueError:
        return None
    return (subject, number) if number >= 1 else None
