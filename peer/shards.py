"""The shard function: which control-topic partition owns a subject.

``shard_of(subject, P)`` must give the same answer in every process, every mdpeer version and
every language, forever: it decides which peer fetches a subject and where its checkpoints
live. So it is not Python's ``hash`` but the murmur2 of Kafka's Java client
(``org.apache.kafka.common.utils.Utils.murmur2``, the default partitioner's hash), including
its signed 32-bit quirks, followed by the same ``toPositive`` the Java partitioner applies. A
keyed record a Java producer sends with the subject as key lands on the same partition.
"""

from __future__ import annotations

import functools
from typing import Final

_SEED: Final = 0x9747B28C
_M: Final = 0x5BD1E995
_R: Final = 24
_MASK32: Final = 0xFFFFFFFF


def _mul32(a: int, b: int) -> int:
    # Java int multiplication: keep the low 32 bits (two's complement wraps the same way).
    return (a * b) & _MASK32


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` as a signed 32-bit integer (a Java ``int``)."""
    length = len(data)
    # Work on unsigned 32-bit values; a logical shift (Java's >>>) is then a plain >>.
    h = (_SEED ^ length) & _MASK32
    full = length - length % 4
    for i in range(0, full, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = _mul32(k, _M)
        k ^= k >> _R
        k = _mul32(k, _M)
        h = _mul32(h, _M)
        h ^= k
    tail = length % 4
    # The Java switch falls through from case 3 to case 1; the multiply happens once.
    if tail == 3:
        h ^= data[full + 2] << 16
    if tail >= 2:
        h ^= data[full + 1] << 8
    if tail >= 1:
        h ^= data[full]
        h = _mul32(h, _M)
    h ^= h >> 13
    h = _mul32(h, _M)
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(n: int) -> int:
    """Kafka's ``Utils.toPositive``: clear the sign bit (not ``abs``: MIN_VALUE maps to 0)."""
    return n & 0x7FFFFFFF


@functools.lru_cache(maxsize=1 << 16)
def shard_of(subject: str, shards: int) -> int:
    """The control partition (shard) that owns ``subject`` when the topic has ``shards``.

    Cached: a rebuild asks it for every control record and a commit for every checkpoint, and
    murmur2 in Python costs about 3 µs.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    return to_positive(murmur2(subject.encode("utf-8"))) % shards
