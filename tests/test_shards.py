"""peer.control.shards: Kafka's murmur2, bit for bit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.control.shards import murmur2, shard_of, to_positive

# org.apache.kafka.common.utils.UtilsTest.testMurmur2 (apache/kafka): Java ints.
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]

# librdkafka's unittest_murmur2 (src/rdmurmur2.c): the Java client's results as uint32 bit
# patterns. They add the lengths Kafka's own vectors miss (tails of 1 and 3, and empty).
_UNALIGNED = b"PreAmbleWillBeRemoved,ThePrePartThatIs"
LIBRDKAFKA_VECTORS = [
    (b"kafka", 0xD067CF64),
    (b"giberish123456789", 0x8F552B0C),
    (b"1234", 0x9FC97B14),
    (b"234", 0xE7C009CA),
    (b"34", 0x873930DA),
    (b"4", 0x5A4B5CA1),
    (_UNALIGNED, 0x78424F1C),
    (_UNALIGNED[1:], 0x4A62B377),
    (_UNALIGNED[2:], 0xE0E4E09E),
    (_UNALIGNED[3:], 0x62B8B43F),
    (b"", 0x106E08D9),
]


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS)
def test_murmur2_matches_kafka_utils_test(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


@pytest.mark.parametrize(("data", "expected_bits"), LIBRDKAFKA_VECTORS)
def test_murmur2_matches_librdkafka_unittest(data: bytes, expected_bits: int) -> None:
    assert murmur2(data) & 0xFFFFFFFF == expected_bits


def test_every_tail_length_is_covered_by_the_vectors() -> None:
    lengths = {len(d) % 4 for d, _ in KAFKA_VECTORS + LIBRDKAFKA_VECTORS}
    assert lengths == {0, 1, 2, 3}


def test_to_positive_clears_only_the_sign_bit() -> None:
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0  # Java's Integer.MIN_VALUE: not abs()
    assert to_positive(5) == 5
    assert to_positive(-973932308) == -973932308 & 0x7FFFFFFF


def test_shard_of_is_the_java_partitioner_formula() -> None:
    # toPositive(murmur2(utf8(subject))) % P, worked through for one vector.
    assert shard_of("21", 12) == (-973932308 & 0x7FFFFFFF) % 12
    assert shard_of("/server/status1", 1) == 0


def test_shard_of_hashes_utf8_bytes() -> None:
    subject = "/météo/zürich"
    assert shard_of(subject, 97) == to_positive(murmur2(subject.encode("utf-8"))) % 97


def test_shard_of_rejects_no_shards() -> None:
    with pytest.raises(ValueError, match="shards must be at least 1, got 0"):
        shard_of("/a", 0)


@given(st.binary(max_size=200))
def test_murmur2_is_a_deterministic_java_int(data: bytes) -> None:
    h = murmur2(data)
    assert -(2**31) <= h < 2**31
    assert murmur2(bytes(data)) == h


@given(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=80),
    st.integers(min_value=1, max_value=10_000),
)
def test_shard_of_is_in_range(subject: str, shards: int) -> None:
    assert 0 <= shard_of(subject, shards) < shards
