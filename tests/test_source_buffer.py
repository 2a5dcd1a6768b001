"""The bounded per-subject event buffer and the idle-poll pacing."""

from __future__ import annotations

import asyncio
import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.model import Message, Position
from peer.source.base import Batch, Event, Gap, GapKind, Item, flatten
from peer.source.buffer import EventBuffer
from peer.source.pacing import (
    CarryBudget,
    CatchUpTurns,
    FirstFetches,
    IdleBackoff,
    jittered_backoff,
)


def m(subject: str, seq: int, size: int = 1) -> Message:
    return Message(subject, b"x" * size, 1, seq, "RECOVERED")


async def settle() -> None:
    """Let every task that can run, run (a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_take_keeps_per_subject_order_and_rotates_subjects() -> None:
    buf = EventBuffer[Event](100, 10_000)
    buf.extend("/a", [m("/a", 1), m("/a", 2), m("/a", 3)], 3)
    buf.extend("/b", [m("/b", 1)], 1)
    assert [(e.subject, e.seq) for e in buf.take(2) if isinstance(e, Message)] == [
        ("/a", 1),
        ("/a", 2),
    ]
    buf.extend("/a", [m("/a", 4)], 1)
    # /a had to go to the back of the line: /b comes first now
    assert [(e.subject, e.seq) for e in buf.take(10) if isinstance(e, Message)] == [
        ("/b", 1),
        ("/a", 3),
        ("/a", 4),
    ]
    assert len(buf) == 0
    assert buf.nbytes == 0


def test_a_batch_counts_as_its_messages_and_is_cut_only_where_the_count_runs_out() -> None:
    buf = EventBuffer[Item](100, 10_000)
    gap = Gap("/a", GapKind.SEQ_JUMP, Position(1, 0), Position(1, 2), 1)
    buf.extend("/a", [gap, Batch("/a", [m("/a", s, 10) for s in range(2, 7)], 50)], 50)
    buf.extend("/b", [Batch("/b", [m("/b", 1, 7)], 7)], 7)
    assert (len(buf), buf.nbytes) == (7, 57)  # the gap counts one, each message one
    first = buf.take(4)
    assert first[0] == gap
    assert first[1] == Batch("/a", [m("/a", s, 10) for s in range(2, 5)], 30)
    assert len(first) == 2
    assert (len(buf), buf.nbytes) == (3, 27)
    # /a's rest waits behind /b, whole and in order
    assert buf.take(10) == [
        Batch("/b", [m("/b", 1, 7)], 7),
        Batch("/a", [m("/a", 5, 10), m("/a", 6, 10)], 20),
    ]
    assert (len(buf), buf.nbytes) == (0, 0)
    buf.extend("/c", [Batch("/c", [m("/c", 1, 3), m("/c", 2, 3)], 6)], 6)
    assert buf.discard("/c") == 2
    assert buf.room() == (100, 10_000)
    assert flatten([gap, Batch("/a", [m("/a", 2)], 1)]) == [gap, m("/a", 2)]


def test_discard_forgets_one_subject_and_frees_its_room() -> None:
    buf = EventBuffer[Event](10, 1000)
    gap = Gap("/a", GapKind.EPOCH_CHANGE, Position(1, 1), Position(2, 1))
    buf.extend("/a", [gap, m("/a", 1, 100)], 100)
    buf.extend("/b", [m("/b", 1, 10)], 10)
    assert buf.discard("/a") == 2
    assert buf.discard("/a") == 0
    assert buf.room() == (9, 990)
    assert buf.take(10) == [m("/b", 1, 10)]


def test_fetchable_has_hysteresis() -> None:
    buf = EventBuffer[Event](8, 10**6)
    assert buf.fetchable()
    buf.extend("/a", [m("/a", i) for i in range(8)], 8)
    assert not buf.fetchable()
    buf.take(1)
    assert not buf.fetchable()  # 7 of 8: still above the low mark (6)
    buf.take(1)
    assert buf.fetchable()
    buf.extend("/a", [m("/a", 9, 10**6)], 10**6)  # the byte bound counts too
    assert not buf.fetchable()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("put"), st.sampled_from(["/a", "/b", "/c"]), st.integers(1, 5)),
            st.tuples(st.just("take"), st.just(""), st.integers(1, 7)),
            st.tuples(st.just("discard"), st.sampled_from(["/a", "/b", "/c"]), st.just(0)),
        ),
        max_size=60,
    )
)
def test_buffer_counts_and_order_hold_under_any_interleaving(
    ops: list[tuple[str, str, int]],
) -> None:
    buf = EventBuffer[Event](1000, 10**6)
    next_seq = {"/a": 0, "/b": 0, "/c": 0}
    expected: dict[str, list[int]] = {"/a": [], "/b": [], "/c": []}
    for op, subject, n in ops:
        if op == "put":
            events: list[Event] = []
            for _ in range(n):
                next_seq[subject] += 1
                events.append(m(subject, next_seq[subject], 2))
                expected[subject].append(next_seq[subject])
            buf.extend(subject, events, 2 * n)
        elif op == "take":
            for event in buf.take(n):
                assert isinstance(event, Message)
                assert expected[event.subject].pop(0) == event.seq
        else:
            buf.discard(subject)
            expected[subject].clear()
        assert len(buf) == sum(len(v) for v in expected.values())
        assert buf.nbytes == 2 * len(buf)


def test_idle_backoff_doubles_to_the_maximum_and_resets() -> None:
    idle = IdleBackoff(0.05, 1.0, rng=random.Random(3))
    delays = [idle.next_delay() for _ in range(8)]
    assert 0.045 <= delays[0] <= 0.05
    assert all(b > a for a, b in itertools.pairwise(delays[:5]))
    assert all(0.9 <= d <= 1.0 for d in delays[5:])
    idle.reset()
    assert idle.next_delay() <= 0.05


def test_jittered_backoff_stays_within_bounds() -> None:
    rng = random.Random(5)
    for failures in range(1, 40):
        delay = jittered_backoff(failures, 0.1, 5.0, rng)
        assert 0.05 <= delay <= 5.0


def test_a_rest_that_did_not_fit_is_reserved_before_it_is_fetched_again() -> None:
    async def scenario() -> None:
        budget = CarryBudget(100)
        assert budget.keep(80)
        assert not budget.keep(30)  # over the bound: not kept, and nothing counted for it
        assert budget.used == 80
        first = asyncio.create_task(budget.reserve(60))
        second = asyncio.create_task(budget.reserve(60))
        await settle()
        assert not first.done()  # fetching that rest again now would only drop it again
        budget.release(80)
        assert await asyncio.wait_for(first, 5) == 60
        await settle()
        # one release lets through only what fits, not every waiter after the same room
        assert not second.done()
        budget.release(60)
        assert await asyncio.wait_for(second, 5) == 60
        budget.release(60)
        # with nothing held even a rest larger than the whole bound goes ahead (cut as any)
        assert await asyncio.wait_for(budget.reserve(500), 5) == 500

    asyncio.run(scenario())


def test_catch_up_turns_let_one_subject_behind_fetch_at_a_time_and_others_freely() -> None:
    async def scenario() -> None:
        turns = CatchUpTurns()
        first = await turns.take(behind=True)
        assert first
        second = asyncio.create_task(turns.take(behind=True))
        await settle()
        assert not second.done()  # a second whole-cache answer waits for the first's turn
        assert await asyncio.wait_for(turns.take(behind=False), 5) is False  # caught up: no wait
        assert turns.give_back(first) is False
        assert await asyncio.wait_for(second, 5)
        assert turns.give_back(held=True) is False
        assert turns.give_back(held=False) is False  # not held: nothing to give back
        assert await asyncio.wait_for(turns.take(behind=True), 5)

    asyncio.run(scenario())


def test_first_fetches_start_slow_grow_with_small_answers_and_halve_with_large() -> None:
    async def scenario() -> None:
        # 4 at most; an answer is small when 4 of them fit 100 events and 1,000 bytes
        starts = FirstFetches(4, events=100, nbytes=1000)
        assert (starts.limit, starts.crowded) == (2, False)
        assert starts.small(25, 250)
        assert not starts.small(26, 250)
        assert not starts.small(25, 251)
        await starts.take()
        await starts.take()
        third = asyncio.create_task(starts.take())
        await settle()
        assert not third.done()  # two first answers of unknown size at once, no more
        starts.done(small=True)  # a small one: one more may go, and the waiter goes in its place
        await asyncio.wait_for(third, 5)
        assert (starts.limit, starts.in_flight) == (3, 2)
        starts.done(small=True)
        starts.done(small=True)
        assert (starts.limit, starts.open) == (4, True)  # never past max_concurrency
        # open: every first fetch goes, bounded by the client alone (a trickle would queue
        # each one behind every caught-up subject's poll there)
        for _ in range(6):
            await asyncio.wait_for(starts.take(), 5)
        assert starts.in_flight == 6
        for _ in range(5):
            starts.done(small=None)
        starts.done(small=False)  # large, cut or let go: halved
        assert (starts.limit, starts.open, starts.in_flight, starts.crowded) == (2, False, 0, False)
        await starts.take()
        starts.done(small=False)
        assert (starts.limit, starts.crowded) == (1, True)  # now also in catch-up turns
        await starts.take()
        starts.done(small=None)  # a fault says nothing about sizes
        assert (starts.limit, starts.in_flight) == (1, 0)

    asyncio.run(scenario())


def test_a_first_fetch_cancelled_while_waiting_or_let_through_holds_no_place() -> None:
    async def scenario() -> None:
        starts = FirstFetches(4, events=100, nbytes=1000, initial=1)
        await starts.take()
        waiting = [asyncio.create_task(starts.take()) for _ in range(3)]
        await settle()
        waiting[0].cancel()  # unsubscribed while waiting: skipped, no place taken
        await settle()
        starts.done(small=None)  # the place goes to the next one still waiting
        await settle()
        assert (waiting[1].done(), waiting[2].done(), starts.in_flight) == (True, False, 1)
        starts.done(small=None)
        await settle()
        assert waiting[2].done()
        starts.done(small=None)
        assert starts.in_flight == 0
        # let through and cancelled before it ran: its place is given back
        await starts.take()
        late = asyncio.create_task(starts.take())
        await settle()
        starts.done(small=None)
        late.cancel()
        await settle()
        assert late.cancelled()
        assert starts.in_flight == 0
        await asyncio.wait_for(starts.take(), 5)

    asyncio.run(scenario())


def test_a_first_fetch_that_never_ends_holds_the_others_back_one_stall_at_most() -> None:
    async def scenario() -> None:
        no_room = [True]
        asked: list[bool] = []  # each stall that went by unchanged asks whether to hold back
        three_stalls = asyncio.Event()

        def held_back() -> bool:
            asked.append(no_room[0])
            if len(asked) >= 3:
                three_stalls.set()
            return no_room[0]

        starts = FirstFetches(
            4, events=100, nbytes=1000, held_back=held_back, initial=1, stall=0.05
        )
        await starts.take()  # retried for as long as its server fails: never done here
        second = asyncio.create_task(starts.take())
        third = asyncio.create_task(starts.take())
        await asyncio.wait_for(three_stalls.wait(), 5)
        assert not second.done()  # no room: every fetch waits, a first one too
        no_room[0] = False
        await asyncio.wait_for(second, 5)  # past the limit, once a stall went by unchanged
        assert asked[-1] is False  # let through by a stall with room, not by anything else
        assert not third.done()  # one per stall, not all of them at once
        before = len(asked)
        await asyncio.wait_for(third, 5)
        assert len(asked) > before  # by the next stall
        assert (starts.in_flight, starts.limit) == (3, 1)

    asyncio.run(scenario())


def test_a_rest_is_kept_by_its_share_of_the_answers_bytes_or_reserved_for_later() -> None:
    budget = CarryBudget(100)
    answer = [m("/a", seq, size=10) for seq in range(1, 11)]
    # 4 of 10 messages of a 120-byte answer: 48 bytes held
    assert budget.keep_rest(answer[6:], answer, 120) == (answer[6:], 48, 0)
    assert budget.used == 48
    # no share known: the contents' bytes; and what does not fit is to be reserved instead
    assert budget.keep_rest(answer[1:], answer, 0) == (None, 0, 90)
    assert budget.used == 48
    assert budget.worth(60, room=True, position=False)  # taken now, whatever its size
    assert not budget.worth(40, room=False, position=False)  # no position: cannot be kept
    assert budget.worth(52, room=False, position=True)
    assert not budget.worth(53, room=False, position=True)
