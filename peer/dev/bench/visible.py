"""When a contender's records became visible, measured without competing with it.

While a contender is timed, the script only asks the broker for the last stable offset of
each partition of the target topic (one ListOffsets request, read_committed, every ``step``
seconds) and reads the contender's CPU from /proc. Nothing is consumed then. Once the ends
have stopped moving, :func:`read_committed` reads the whole topic, and :func:`window` finds,
in the samples taken, when the first record and when the last record became visible: the
first sample whose end lies past that record's offset.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from peer.dev.bench.quiet import jiffies
from peer.testing import cpu_seconds
from peer.testing.wait import WaitTimeoutError

#: how often the ends are asked for: the resolution of every time measured here
STEP_S = 0.05
#: the ends must stand still this long (with at least the expected records) to end a watch
QUIET_S = 1.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sample:
    """What one poll saw: when, each partition's last stable offset, each pid's CPU seconds,
    and the machine's (all, idle) jiffies (:func:`peer.dev.bench.quiet.jiffies`)."""

    mono: float
    ends: tuple[int, ...]
    cpu: tuple[float, ...]
    machine: tuple[int, int] = (0, 0)


@dataclass
class EndWatch:
    """Samples of ``topic``'s last stable offsets and of ``pids``' CPU (/proc, all threads)."""

    bootstrap: str
    topic: str
    partitions: int
    pids: Sequence[int]
    step: float = STEP_S
    samples: list[Sample] = field(default_factory=list)
    #: this script's own CPU while it watched (the cost of watching, for the record)
    own_cpu_s: float = 0.0

    def __post_init__(self) -> None:
        self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        self._tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        self._latest: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]

    def _ends(self, timeout: float = 10.0) -> dict[int, int]:
        deadline = time.monotonic() + timeout
        while True:
            futures = self._admin.list_offsets(
                dict.fromkeys(self._tps, self._latest),
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=timeout,
            )
            try:
                return {tp.partition: int(f.result().offset) for tp, f in futures.items()}
            except KafkaException:
                # a topic just created: its leader may answer "not leader" for a moment
                if time.monotonic() >= deadline:
                    raise
                time.sleep(self.step)

    def sample(self) -> Sample:
        by_partition = self._ends()
        got = Sample(
            time.monotonic(),
            tuple(by_partition[p] for p in range(self.partitions)),
            tuple(cpu_seconds(pid) for pid in self.pids),
            jiffies(),
        )
        self.samples.append(got)
        return got

    def until_quiet(
        self,
        at_least: int,
        *,
        timeout: float,
        check: Callable[[], None] = lambda: None,
        quiet: float = QUIET_S,
    ) -> Sample:
        """Sample until the ends add up to ``at_least`` (every record counts, and so does
        every transaction marker, so this is necessary, not sufficient) and have not moved for
        ``quiet`` seconds; ``check`` runs before each sample (it raises if a contender died).
        Returns the last sample; :class:`WaitTimeoutError` after ``timeout`` seconds."""
        own0 = cpu_seconds(os.getpid())
        deadline = time.monotonic() + timeout
        last = self.sample() if not self.samples else self.samples[-1]
        moved = last.mono
        while True:
            check()
            now = self.sample()
            if now.ends != last.ends:
                moved, last = now.mono, now
            elif sum(now.ends) >= at_least and now.mono - moved >= quiet:
                self.own_cpu_s += cpu_seconds(os.getpid()) - own0
                return now
            if now.mono >= deadline:
                raise WaitTimeoutError(
                    f"timed out after {timeout:g}s waiting for {at_least} records in "
                    f"{self.topic} (ends {list(now.ends)})"
                )
            time.sleep(self.step)


@dataclass(frozen=True, slots=True)
class Window:
    """The samples at which the first and the last record were first seen visible."""

    first: Sample
    last: Sample

    @property
    def seconds(self) -> float:
        return max(self.last.mono - self.first.mono, 1e-3)


def window(
    samples: Sequence[Sample], firsts: Mapping[int, int], lasts: Mapping[int, int]
) -> Window:
    """``firsts`` / ``lasts``: per partition, the offset of its first / last record read.

    First visible: the first sample in which some partition's end is past its first record;
    last visible: the first sample in which every partition's end is past its last record.
    """

    def seen(pos: Mapping[int, int], every: bool) -> Sample:
        test = all if every else any
        for s in samples:
            if test(s.ends[p] > offset for p, offset in pos.items()):
                return s
        raise ValueError(f"no sample saw records at {dict(pos)}")

    return Window(seen(firsts, every=False), seen(lasts, every=True))


def read_committed(
    bootstrap: str, topic: str, take: Callable[[Any], None], *, timeout: float = 300.0
) -> tuple[dict[int, int], dict[int, int]]:
    """Every record of ``topic`` from offset 0 to its last stable offset, read_committed,
    each passed to ``take`` (in order within a partition); returns (first offsets, last
    offsets) of the partitions that had records; :class:`WaitTimeoutError` after
    ``timeout`` seconds."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-read-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    firsts: dict[int, int] = {}
    lasts: dict[int, int] = {}
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        pending = set(parts)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(f"partitions {sorted(pending)} of {topic} not read")
            for msg in consumer.consume(5000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(int(msg.partition() or 0))
                    continue
                p, offset = int(msg.partition() or 0), int(msg.offset() or 0)
                firsts.setdefault(p, offset)
                lasts[p] = offset
                take(msg)
    finally:
        consumer.close()
    return firsts, lasts


def measure(
    watch: EndWatch,
    n: int,
    convert: Callable[[Any], T],
    *,
    check: Callable[[], None],
    timeout: float = 600.0,
) -> tuple[list[T], Window]:
    """Watch until ``n`` records may be there and the ends stand still, then read them all
    (each consumed message passed through ``convert``): the records and their window. Fewer
    than ``n`` means the contender stood still for a while: it is watched on."""
    while True:
        watch.until_quiet(n, timeout=timeout, check=check)
        records: list[T] = []

        def take(msg: Any, into: list[T] = records) -> None:
            into.append(convert(msg))

        firsts, lasts = read_committed(watch.bootstrap, watch.topic, take)
        if len(records) >= n:
            return records, window(watch.samples, firsts, lasts)


def rates(n: int, size: int, win: Window, start: Sample, cpu_s: float) -> dict[str, Any]:
    """A contender's figures: its rate from first to last record visible, the time from
    ``start`` (it was given the work) to its first record, and ``cpu_s``, its CPU from
    ``start`` to its last record, per message and in cores."""
    return {
        "messages": n,
        "seconds": round(win.seconds, 3),
        "msgs_per_s": round(n / win.seconds),
        "mb_per_s": round(n * size / win.seconds / 1e6, 2),
        "startup_s": round(win.first.mono - start.mono, 2),
        "cpu_s": round(cpu_s, 2),
        "cpu_cores": round(cpu_s / max(win.last.mono - start.mono, 1e-3), 2),
        "cpu_us_per_msg": round(cpu_s / n * 1e6, 2),
        "poll_interval_s": STEP_S,
    }


__all__ = [
    "QUIET_S",
    "STEP_S",
    "EndWatch",
    "Sample",
    "Window",
    "measure",
    "rates",
    "read_committed",
    "window",
]
