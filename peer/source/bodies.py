"""Reused buffers for large answer bodies (issue #14).

A consume answer of a busy subject is one to a few megabytes. Received into a fresh
``bytearray`` each time, its pages were new to the process: the kernel zero-filled them on
first touch (about 0.3 page faults per message delivered, most of the source thread's
system time) and ``bytearray(n)`` zero-filled them again, all while the source thread held
the GIL. A body is decoded and let go within one turn of the source's loop, so a few
buffers, handed back after each decode, carry every large answer.

A lent body is a ``memoryview`` of a kept buffer, exactly the answer's length. Handing it
back releases that view: a use of it after that raises instead of reading the next answer's
bytes. A slice taken of it is not released with it: never keep one (copy with ``bytes``).
A body that is never handed back (a fault, a refusal, an answer let go unread) is simply
collected; the next large answer gets a new buffer.

One asyncio loop only (the source thread): no lock.
"""

from __future__ import annotations

from typing import Final

#: bodies at least this long are lent; smaller ones are plain ``bytearray`` s (and may be kept:
#: follow.py keeps unchanged answers of up to 2 KB)
LEND_MIN: Final = 64 * 1024
#: buffers are sized in steps of this, so that answers of about the same size share them
_STEP: Final = 256 * 1024


class _Kept(bytearray):
    """A buffer made here: the only kind taken back (a caller's own is never reused)."""

    __slots__ = ()


class BodyBuffers:
    """Buffers that large answer bodies are received into, lent and handed back; at most
    ``max_count`` idle ones (``max_bytes`` in all) are kept for the next answers."""

    __slots__ = ("_free", "_kept_bytes", "_max_bytes", "_max_count", "lent", "made")

    def __init__(self, max_count: int = 8, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._free: list[_Kept] = []
        self._kept_bytes = 0
        self._max_count = max_count
        self._max_bytes = max_bytes
        #: bodies lent in all, and buffers made for them (figures for tests and profiles)
        self.lent = 0
        self.made = 0

    def lend(self, n: int) -> memoryview:
        """A writable view of exactly ``n`` bytes on a kept buffer, or on a new one."""
        free = self._free
        best = -1
        for i, buf in enumerate(free):  # a handful at most: best fit
            if len(buf) >= n and (best < 0 or len(buf) < len(free[best])):
                best = i
        if best >= 0:
            buf = free.pop(best)
            self._kept_bytes -= len(buf)
        else:
            buf = _Kept(-(-n // _STEP) * _STEP)
            self.made += 1
        self.lent += 1
        return memoryview(buf)[:n]

    def give_back(self, body: object) -> None:
        """Take back a lent body (anything else is ignored); it must not be used after."""
        if not isinstance(body, memoryview):
            return
        try:
            buf = body.obj
        except ValueError:  # released already: handed back before
            return
        if not isinstance(buf, _Kept):
            return
        try:
            body.release()
        except BufferError:  # something still reads it: let it be collected, not reused
            return
        if len(self._free) < self._max_count and self._kept_bytes + len(buf) <= self._max_bytes:
            self._free.append(buf)
            self._kept_bytes += len(buf)


__all__ = ["LEND_MIN", "BodyBuffers"]
