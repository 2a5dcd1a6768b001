"""The commit rules of the peer's loop (peer/runner/pace.py): age, cadence, the loop's wait."""

from __future__ import annotations

from peer.model import Message, Position
from peer.runner.pace import CommitPace
from peer.source.base import Batch, Gap, GapKind, Item

AGE = 0.1
BATCH = 10_000
IDLE = 0.02


def _batch(n: int) -> Batch:
    msgs = [Message("/s", b"x", 1, seq, "UPDATE") for seq in range(1, n + 1)]
    return Batch("/s", msgs, n)


#: a take that filled what was asked (2000 events): the source had more
FULL: list[Item] = [_batch(1999), Gap("/t", GapKind.SEQ_JUMP, Position(1, 1), Position(1, 5))]
#: a take that emptied the source
SOME: list[Item] = [_batch(3)]


def test_nothing_open_is_never_due_and_waits_the_idle_wait() -> None:
    pace = CommitPace(AGE, BATCH, IDLE)
    assert not pace.due(None, 0, 0.0, now=100.0)
    assert pace.wait(None, 0.0, now=100.0) == IDLE


def test_a_loop_that_is_behind_commits_by_age_only() -> None:
    pace = CommitPace(AGE, BATCH, IDLE)
    started, opened = 10.0, 10.03  # the previous commit took 30 ms
    pace.took(FULL, 2000, started)
    assert not pace.due(opened, 5000, started, now=10.12)  # 120 ms after the last start
    assert pace.due(opened, 5000, started, now=10.13)
    assert pace.due(opened, BATCH, started, now=10.05)  # full


def test_a_loop_that_keeps_up_commits_by_cadence_from_the_last_start() -> None:
    pace = CommitPace(AGE, BATCH, IDLE)
    started, opened = 10.0, 10.03
    pace.took(SOME, 2000, started)
    assert not pace.due(opened, 3, started, now=10.099)
    assert pace.due(opened, 3, started, now=10.1)  # 70 ms after the transaction opened


def test_cadence_is_earned_anew_after_each_commit() -> None:
    pace = CommitPace(AGE, BATCH, IDLE)
    pace.took(SOME, 2000, 10.0)
    later = 10.2  # a commit (say, a revoke's) started since
    pace.took(FULL, 2000, later)
    assert not pace.due(10.23, 5000, later, now=10.3)  # 100 ms after that start: not yet
    assert pace.due(10.23, 5000, later, now=10.33)


def test_a_record_after_a_quiet_spell_commits_at_once_but_never_twice_per_interval() -> None:
    pace = CommitPace(AGE, BATCH, IDLE)
    pace.took([], 2000, 10.0)
    assert pace.due(15.0, 1, 10.0, now=15.0)  # the last commit started 5 s ago
    pace.took(SOME, 2000, 15.0)  # that commit started at 15.0; the next record waits
    assert not pace.due(15.04, 1, 15.0, now=15.05)
    assert pace.due(15.04, 1, 15.0, now=15.1)


def test_the_loop_waits_no_longer_than_until_due() -> None:
    pace = CommitPace(AGE, BATCH, IDLE)
    started, opened = 10.0, 10.03
    assert abs(pace.wait(opened, started, now=10.12) - 0.01) < 1e-9  # by age: due at 10.13
    pace.took(SOME, 2000, started)
    assert pace.wait(opened, started, now=10.12) == 0.0  # by cadence: due at 10.1, overdue
    assert pace.wait(opened, started, now=10.05) == IDLE
