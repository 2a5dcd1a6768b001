"""peer.runner.quarantine: the books of stopped subjects (pure logic, a fake clock)."""

from __future__ import annotations

import logging
import random

import pytest

from peer.errors import FaultReason
from peer.runner.quarantine import (
    CREATING_RETRY_S,
    WARNINGS_PER_WINDOW,
    Quarantine,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def quarantine(
    clock: Clock, *, retry_min: float = 1.0, retry_max: float = 60.0, confirm_after: float = 30.0
) -> Quarantine:
    return Quarantine(
        retry_min=retry_min,
        retry_max=retry_max,
        confirm_after=confirm_after,
        clock=clock,
        wall=lambda: 1_796_000_000.0,
        rng=random.Random(7),
    )


def test_backoff_grows_to_the_ceiling_and_a_retry_waits_for_it(clock: Clock) -> None:
    q = quarantine(clock, retry_min=1.0, retry_max=8.0)
    waits = []
    for _ in range(6):
        block, _news = q.block("/a", FaultReason.OVERSIZE, "too big")
        waits.append(block.retry_at - clock.now)
        assert q.due() == []  # not before its time
        clock.now = block.retry_at
        assert [s for s, _ in q.due()] == ["/a"]
    # jittered within [ceiling/2, ceiling], the ceiling doubling from 1 s up to 8 s
    for wait, ceiling in zip(waits, (1, 2, 4, 8, 8, 8), strict=True):
        assert ceiling / 2 <= wait <= ceiling


def test_a_topic_being_created_is_asked_again_quickly_and_quietly(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    q = quarantine(clock)
    with caplog.at_level(logging.INFO, logger="peer.runner"):
        block, news = q.block("/a", FaultReason.TOPIC_CREATING, "creating", topic="t")
    assert news
    assert block.retry_at - clock.now == CREATING_RETRY_S
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_news_only_for_a_new_fault_or_cause_and_since_is_kept(clock: Clock) -> None:
    q = quarantine(clock)
    first, news = q.block("/a", FaultReason.TOPIC_CREATING, "x", topic="t", topic_wide=True)
    assert news
    clock.now += 30
    _again, news = q.block("/a", FaultReason.TOPIC_CREATING, "x", topic="t", topic_wide=True)
    assert not news
    missing, news = q.block("/a", FaultReason.TOPIC_MISSING, "gone", topic="t", topic_wide=True)
    assert news  # the cause changed: a new note
    assert missing.since == first.since  # the same incident
    # a former owner's "since" carries on
    other, _ = q.block("/b", FaultReason.OVERSIZE, "big", since="2026-11-30T10:00:00+00:00")
    assert other.since == "2026-11-30T10:00:00+00:00"


def test_warnings_are_one_per_subject_and_cause_and_rate_limited(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    q = quarantine(clock)
    with caplog.at_level(logging.WARNING, logger="peer.runner"):
        for i in range(WARNINGS_PER_WINDOW + 5):
            q.block(f"/s/{i}", FaultReason.TOPIC_MISSING, "gone", topic="t", topic_wide=True)
        q.block("/s/0", FaultReason.TOPIC_MISSING, "gone", topic="t", topic_wide=True)  # again
        stopped = [r for r in caplog.records if r.msg.startswith("subject stopped")]
        assert len(stopped) == WARNINGS_PER_WINDOW
        clock.now += 11  # the next window reports what was left out
        q.block("/late", FaultReason.OVERSIZE, "big")
    summary = [r for r in caplog.records if "more subjects stopped" in r.getMessage()]
    assert len(summary) == 1
    assert summary[0].not_logged == 5  # type: ignore[attr-defined]


def test_retrying_subjects_are_confirmed_after_a_quiet_while_then_lifted(clock: Clock) -> None:
    q = quarantine(clock, confirm_after=30)
    q.block("/a", FaultReason.ENTITLEMENT_DENIED, "403")
    assert q.stopped("/a")
    q.retrying("/a")
    assert not q.stopped("/a")  # fetched again: its events count
    assert q.confirmed() == []
    clock.now += 30
    assert q.confirmed() == ["/a"]
    assert q.lift("/a") is not None
    assert len(q) == 0
    assert q.lift("/a") is None


def test_counts_and_summary_for_metrics_and_readyz(clock: Clock) -> None:
    q = quarantine(clock)
    q.block("/b", FaultReason.TOPIC_MISSING, "gone", topic="t", topic_wide=True)
    q.block("/a", FaultReason.TOPIC_MISSING, "gone", topic="t", topic_wide=True)
    q.block("/c", FaultReason.OVERSIZE, "big")
    assert q.counts() == {"topic_missing": 2, "oversize": 1}
    summary = q.summary()
    assert summary["count"] == 3
    assert [e["subject"] for e in summary["subjects"]] == ["/a", "/b", "/c"]
    assert summary["subjects"][0]["reason"] == "topic_missing"
    assert summary["subjects"][0]["topic"] == "t"
    version = q.version
    q.forget(["/a", "/nope"])
    assert q.counts() == {"topic_missing": 1, "oversize": 1}
    assert q.version == version + 1
