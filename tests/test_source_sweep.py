"""Parked idle subjects (peer/source/sweep.py): in doorbell mode an idle, armed subject's task
ends and its safety fetches are sent from the loop's callbacks. Against the reference server,
with the stand-in doorbell client: a changed answer found by a sweep is delivered once and in
order, a ring starts the task at once, unsubscribing and subscribing again forget and park
anew, a denial stops the subject, and server faults during sweeps fall back to the ordinary
path without losing or repeating a message."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from peer.dev.sim.server import SimServer
from peer.model import Message, Position
from peer.source.base import Event, SubjectFault
from peer.source.wakeups import DoorbellSource, Wakeups
from peer.testing import STANDIN_DIR, wait_until
from tests.fixtures.doorbell import deny_and_await_fault, drain, started_doorbell_source

pytestmark = pytest.mark.sim

SUBJECTS = [f"/park/s{i}" for i in range(5)]

Setup = tuple[SimServer, DoorbellSource, Wakeups]


@pytest.fixture(params=[1000])
def parked_source(
    sim_factory: Callable[..., SimServer],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Setup]:
    """``request.param``: the safety interval (ms); 1 s (the default here) sweeps often."""
    monkeypatch.syspath_prepend(str(STANDIN_DIR))
    sim = sim_factory(cache_size=1000)
    with started_doorbell_source(
        sim, idle_max_ms=1000, safety_ms=request.param, fast_retries=True
    ) as (source, wakeups):
        yield sim, source, wakeups


def parked(source: DoorbellSource) -> int:
    return len(source.sweeper)


def park_all(sim: SimServer, source: DoorbellSource, subjects: list[str]) -> dict[str, Position]:
    """One message in each subject, subscribed after it; wait until every subject is parked
    (its task ended). The position of each subject's message."""
    after = {s: Position(*sim.publish(s, "before")) for s in subjects}
    for subject in subjects:
        source.subscribe(subject, after=after[subject])
    wait_until(lambda: parked(source) == len(subjects), 20, "every subject parked")
    return after


def set_rate(sim: SimServer, fault: str, rate: float) -> None:
    if fault == "fail_rate":
        sim.set_faults(fail_rate=rate)  # a 503 answer
    else:
        sim.set_faults(drop_rate=rate)  # the connection dropped, no answer


def contents(events: list[Event], subject: str) -> list[bytes]:
    return [e.content for e in events if isinstance(e, Message) and e.subject == subject]


def test_a_changed_answer_found_by_a_sweep_is_delivered_once_in_order(
    parked_source: Setup,
) -> None:
    sim, source, _ = parked_source
    park_all(sim, source, SUBJECTS)
    assert not source._tasks, "a parked subject has no task"
    sim.set_faults(notify_drop_rate=1.0)  # no doorbell: only the sweeps can find the news
    events: list[Event] = []
    sent: dict[str, list[bytes]] = {s: [] for s in SUBJECTS}
    for round_ in range(3):
        for subject in SUBJECTS:
            for i in range(3):
                text = f"{subject} r{round_} m{i}"
                sim.publish(subject, text)
                sent[subject].append(text.encode())
        wait_until(
            lambda: drain(source, events) or all(contents(events, s) == sent[s] for s in SUBJECTS),
            20,
            f"round {round_} delivered",
        )
        # parked again once the news is taken (the same answer twice)
        wait_until(lambda: parked(source) == len(SUBJECTS), 20, "parked again")
    drain(source, events)
    for subject in SUBJECTS:
        assert contents(events, subject) == sent[subject]  # once each, in order
    assert not any(isinstance(e, SubjectFault) for e in events)


@pytest.mark.parametrize("parked_source", [60_000], indirect=True)
def test_a_ring_of_a_parked_subject_fetches_at_once(parked_source: Setup) -> None:
    sim, source, wakeups = parked_source
    park_all(sim, source, SUBJECTS[:2])
    events: list[Event] = []
    for i in range(3):
        sim.publish(SUBJECTS[0], f"rung {i}")
        # the safety interval is 60 s: a delivery within seconds is the ring's doing
        wait_until(
            lambda: drain(source, events) or len(contents(events, SUBJECTS[0])) == i + 1,  # noqa: B023
            10,
            "the rung subject's message",
        )
        wait_until(lambda: parked(source) == 2, 20, "parked again after the news")
    assert contents(events, SUBJECTS[0]) == [f"rung {i}".encode() for i in range(3)]
    assert contents(events, SUBJECTS[1]) == []
    assert wakeups.stats()["doorbells"] >= 3


def test_unsubscribed_and_subscribed_again_while_parked(parked_source: Setup) -> None:
    sim, source, _ = parked_source
    subject = SUBJECTS[0]
    after = park_all(sim, source, [subject])[subject]
    source.unsubscribe(subject)
    wait_until(lambda: parked(source) == 0, 10, "forgotten when unsubscribed")
    sim.set_faults(notify_drop_rate=1.0)
    sim.publish(subject, "while away")
    events: list[Event] = []
    drain(source, events)
    assert contents(events, subject) == []
    source.subscribe(subject, after=after)  # from the same checkpoint: the news once
    wait_until(
        lambda: drain(source, events) or contents(events, subject) == [b"while away"],
        20,
        "the message published while unsubscribed",
    )
    wait_until(lambda: parked(source) == 1, 20, "parked again")
    sim.publish(subject, "after")
    wait_until(
        lambda: drain(source, events) or len(contents(events, subject)) == 2, 20, "the next one"
    )
    drain(source, events)
    assert contents(events, subject) == [b"while away", b"after"]
    # a parked subject subscribed again (a new owner's checkpoint) starts over from it
    source.subscribe(subject, after=after)
    wait_until(
        lambda: drain(source, events) or len(contents(events, subject)) == 4, 20, "from after"
    )
    assert contents(events, subject)[2:] == [b"while away", b"after"]
    wait_until(lambda: parked(source) == 1, 20, "parked again")


@pytest.mark.parametrize("parked_source", [60_000], indirect=True)
def test_a_denied_parked_subject_stops(parked_source: Setup) -> None:
    sim, source, wakeups = parked_source
    park_all(sim, source, SUBJECTS[:2])
    deny_and_await_fault(sim, source, wakeups, SUBJECTS[1])
    events: list[Event] = []
    wait_until(lambda: parked(source) == 1 and not source._tasks, 10, "only s0 parked")
    sim.publish(SUBJECTS[0], "still flowing")
    wait_until(
        lambda: drain(source, events) or contents(events, SUBJECTS[0]) == [b"still flowing"],
        10,
        "s0",
    )


@pytest.mark.parametrize("fault", ["fail_rate", "drop_rate"])
def test_server_faults_during_sweeps_fall_back_to_the_ordinary_path(
    parked_source: Setup, fault: str
) -> None:
    sim, source, _ = parked_source
    park_all(sim, source, SUBJECTS)
    sim.set_faults(notify_drop_rate=1.0)
    errors = source.stats().request_errors
    set_rate(sim, fault, 0.5)
    events: list[Event] = []
    sent: dict[str, list[bytes]] = {s: [] for s in SUBJECTS}
    for i in range(4):
        for subject in SUBJECTS:
            sim.publish(subject, f"{subject} {i}")
            sent[subject].append(f"{subject} {i}".encode())
        wait_until(
            lambda: drain(source, events) or all(contents(events, s) == sent[s] for s in SUBJECTS),
            30,
            f"batch {i} delivered through the faults",
        )
    assert source.stats().request_errors > errors
    set_rate(sim, fault, 0.0)
    wait_until(lambda: parked(source) == len(SUBJECTS), 20, "parked again once healthy")
    drain(source, events)
    for subject in SUBJECTS:
        assert contents(events, subject) == sent[subject]
    assert not any(isinstance(e, SubjectFault) for e in events)
