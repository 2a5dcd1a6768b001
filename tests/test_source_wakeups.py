"""The REST source in doorbell mode (peer/source/wakeups.py), with the stand-in client against
the reference server: a doorbell fetches at once, an armed idle subject waits the safety
interval, a wake during a fetch is not lost, a denied subscription stops its subject."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from peer.config.settings import SourceSettings
from peer.dev.sim.server import SimServer
from peer.model import Message
from peer.source.base import Event
from peer.source.wakeups import DoorbellSource, Wakeups, _Bell
from peer.testing import STANDIN_DIR, run_mdpeer, wait_until
from tests.fixtures.doorbell import deny_and_await_fault, drain, started_doorbell_source

pytestmark = pytest.mark.sim

SUBJECTS = [f"/idle/s{i}" for i in range(20)]


@pytest.fixture(params=[30_000])
def doorbell_source(
    sim_factory: Callable[..., SimServer],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[SimServer, DoorbellSource, Wakeups]]:
    """``request.param``: ``poll_idle_max_ms``; 30 s (the default here): a delivery within
    seconds can only be the doorbell's doing."""
    monkeypatch.syspath_prepend(str(STANDIN_DIR))
    sim = sim_factory(cache_size=1000)
    with started_doorbell_source(sim, idle_max_ms=request.param, safety_ms=60_000) as (
        source,
        wakeups,
    ):
        yield sim, source, wakeups


def subscribe_armed(source: DoorbellSource, wakeups: Wakeups) -> None:
    """Subscribe every subject and wait until the doorbell covers each of them."""
    for subject in SUBJECTS:
        source.subscribe(subject, after=None)
    wait_until(lambda: wakeups.stats()["armed"] == len(SUBJECTS), 20, "every subject armed")


def consumes(sim: SimServer) -> int:
    return int(sim.state()["requests"].get("consume", 0))


def test_a_doorbell_fetches_at_once(
    doorbell_source: tuple[SimServer, DoorbellSource, Wakeups],
) -> None:
    sim, source, wakeups = doorbell_source
    subscribe_armed(source, wakeups)
    events: list[Event] = []
    for round_ in range(3):
        sim.publish(SUBJECTS[round_], f"news {round_}")
        wait_until(
            lambda: drain(source, events) or len(events) == round_ + 1,  # noqa: B023
            10,
            "the message fetched",
        )
    assert [m.subject for m in events if isinstance(m, Message)] == SUBJECTS[:3]
    assert wakeups.stats()["doorbells"] >= 3


@pytest.mark.parametrize("doorbell_source", [1000], indirect=True)
def test_armed_idle_subjects_are_not_polled(
    doorbell_source: tuple[SimServer, DoorbellSource, Wakeups],
) -> None:
    sim, source, wakeups = doorbell_source
    subscribe_armed(source, wakeups)
    settled = time.monotonic()  # the rings of the subscriptions' allowances fetch once more
    wait_until(lambda: time.monotonic() - settled > 1, 5, "the allowances' fetches")
    # over a 3 s window, 20 armed idle subjects cost (almost) no requests; polled with the
    # idle back-off up to 1 s, they would be asked 60 times
    before, started = consumes(sim), time.monotonic()
    wait_until(lambda: time.monotonic() - started > 3, 10, "a 3 s window")
    assert consumes(sim) - before <= 2


def test_a_wake_during_a_fetch_fetches_once_more(
    doorbell_source: tuple[SimServer, DoorbellSource, Wakeups],
) -> None:
    sim, source, wakeups = doorbell_source
    subject = SUBJECTS[0]
    source.subscribe(subject, after=None)
    wait_until(lambda: wakeups.stats()["armed"] == 1, 20, "armed")
    events: list[Event] = []
    # each publish rings while the previous ring's fetch may be in flight: all must arrive
    for i in range(50):
        sim.publish(subject, f"m{i}")
    wait_until(lambda: drain(source, events) or len(events) == 50, 20, "all 50 fetched")
    assert [m.content for m in events if isinstance(m, Message)] == [
        f"m{i}".encode() for i in range(50)
    ]


def test_a_denied_subscription_stops_only_its_subject(
    doorbell_source: tuple[SimServer, DoorbellSource, Wakeups],
) -> None:
    sim, source, wakeups = doorbell_source
    source.subscribe("/idle/s0", after=None)
    source.subscribe("/idle/s1", after=None)
    wait_until(lambda: wakeups.stats()["armed"] == 2, 20, "both armed")
    # s1 sleeps the safety interval (60 s): only the doorbell's denial can wake and stop it,
    # before any fetch could meet consume's own 403
    fault = deny_and_await_fault(sim, source, wakeups, "/idle/s1")
    assert "MigratoryData denied the subscription" in str(fault.error)
    assert wakeups.stats()["denied"] == 1
    events: list[Event] = []
    sim.publish("/idle/s0", "still flowing")
    wait_until(
        lambda: drain(source, events) or any(isinstance(e, Message) for e in events), 10, "s0"
    )


def test_run_refuses_doorbell_on_without_a_client(tmp_path: Path) -> None:
    config = tmp_path / "peer.toml"
    config.write_text(
        'bootstrap = "127.0.0.1:1"\n[source]\nservers = "127.0.0.1:2"\ndoorbell = "on"\n'
        'doorbell_module = "no_such_client_xyz"\n'
    )
    done = run_mdpeer(["run", "--config", str(config)], timeout=60)
    assert done.returncode == 1, done.stderr
    assert "source.doorbell" in done.stderr
    assert "'no_such_client_xyz' is not importable" in done.stderr


@pytest.mark.parametrize(
    ("subjects", "ticks"),
    [(0, 1), (100, 20), (10_000, 9), (100_000, 1)],  # 5 ms ticks; at most 100 ms
)
def test_safety_waits_are_grouped_by_about_max_concurrency(
    monkeypatch: pytest.MonkeyPatch, subjects: int, ticks: int
) -> None:
    monkeypatch.syspath_prepend(str(STANDIN_DIR))
    settings = SourceSettings(
        servers=("http://127.0.0.1:1",),
        doorbell="on",
        doorbell_module="mdclient_standin",
        poll_safety_interval_ms=30_000,
        max_concurrency=16,
    )
    wakeups = Wakeups(settings)  # not attached: no connection is made
    wakeups._bells.update((f"/s/{i}", _Bell()) for i in range(subjects))
    assert wakeups._grain() == ticks
