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
import struct
from typing import Final

_SEED: Final = 0x9747B28C
_M: Final = 0x5BD1E995
_R: Final = 24
_MASK32: Final = 0xFFFFFFFF
#: the 4-byte little-endian words murmur2 reads, whatever the host's byte order
_WORDS: Final = struct.Struct("<I")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` as a signed 32-bit integer (a Java ``int``)."""
    length = len(data)
    # Work on unsigned 32-bit values; a logical shift (Java's >>>) is then a plain >>.
    # Java int multiplication keeps the low 32 bits: ``(a * b) & _MASK32``, inlined because
    # a rebuild hashes every subject of its shards (100k subjects: a function call each
    # multiply cost about a second).
    m, mask = _M, _MASK32
    h = (_SEED ^ length) & mask
    full = length - length % 4
    for (word,) in _WORDS.iter_unpack(data[:full]):
        k = (word * m) & mask
        k ^= k >> _R
        h = ((h * m) & mask) ^ ((k * m) & mask)
    tail = length % 4
    # The Java switch falls through from case 3 to case 1; the multiply happens once.
    if tail == 3:
        h ^= data[full + 2] << 16
    if tail >= 2:
        h ^= data[full + 1] << 8
    if tail >= 1:
        h ^= data[full]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(n: int) -> int:
    """Kafka's ``Utils.toPositive``: clear the sign bit (not ``abs``: MIN_VALUE maps to 0)."""
    return n & 0x7FFFFFFF


@functools.lru_cache(maxsize=1 << 16)
def shard_of(subject: str, shards: int) -> int:
    """The control partition (shard) that owns ``subject`` when the topic has ``shards``.

    Cached: a commit asks it for every checkpoint, and murmur2 in Python costs 1-2 µs. (A
    rebuild asks once per subject, see ``ShardState.apply``; beyond the cache's size it
    pays the hash.)
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    return to_positive(murmur2(subject.encode("utf-8"))) % shards
