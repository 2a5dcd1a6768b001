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
from peer.errors import EntitlementDeniedError
from peer.model import Message
from peer.source.base import Event, SubjectFault
from peer.source.rest import RestSource, RestSourceConfig
from peer.source.wakeups import DoorbellSource, Wakeups, _Bell
from peer.testing import STANDIN_DIR, run_mdpeer, wait_until

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
    settings = SourceSettings(
        servers=(sim.url,),
        doorbell="on",
        doorbell_module="mdclient_standin",
        poll_idle_max_ms=request.param,
        poll_safety_interval_ms=60_000,
    )
    wakeups = Wakeups(settings)
    source = DoorbellSource(RestSourceConfig.from_settings(settings.rest_settings()), wakeups)
    source.start()
    try:
        yield sim, source, wakeups
    finally:
        source.close()


def drain(source: RestSource, into: list[Event]) -> bool:
    """Poll what is there into ``into``; False (for ``drain(...) or condition``)."""
    into.extend(source.poll(1000, 0.05))
    return False


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
    sim.deny_subjects("/idle/s1")
    wakeups.door.unsubscribe(["/idle/s1"])
    wakeups.door.subscribe(["/idle/s1"])  # asked again: denied now
    events: list[Event] = []
    wait_until(
        lambda: drain(source, events) or any(isinstance(e, SubjectFault) for e in events),
        20,
        "the denied subject's fault",
    )
    faults = [e for e in events if isinstance(e, SubjectFault)]
    assert [f.subject for f in faults] == ["/idle/s1"]
    assert isinstance(faults[0].error, EntitlementDeniedError)
    assert "MigratoryData denied the subscription" in str(faults[0].error)
    assert wakeups.stats()["denied"] == 1
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
