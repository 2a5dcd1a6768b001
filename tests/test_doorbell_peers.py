"""Doorbell mode end to end (issue #16): real peers (``mdpeer run``) with the stand-in client
(``tests/standin``, our own notification channel, not MigratoryData's), a real broker and the
reference server. Each test checks exactly-once delivery from what a read_committed consumer
sees; the doorbell may only make fetching earlier or rarer, never lose or duplicate."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from peer.dev.sim.server import SimServer
from peer.model import StartPolicy
from peer.routes.model import Route
from peer.testing import PeerProcess, SimProcess, doorbell_env, split_evenly, wait_until
from peer.testing.net import http_json
from tests.fixtures.deploy import Deploy, routed
from tests.fixtures.kafka import TopicFactory
from tests.peers import check_exactly_once, read_committed

pytestmark = [pytest.mark.kafka, pytest.mark.sim, pytest.mark.slow]

HISTORY = StartPolicy.parse("history:100000")


def consumes(sim: SimServer) -> int:
    return int(sim.state()["requests"].get("consume", 0))


def settled_window(seconds: float) -> None:
    started = time.monotonic()
    wait_until(lambda: time.monotonic() - started > seconds, seconds + 5, "a measuring window")


def subscriptions(sim: SimServer) -> int:
    return int(sim.state()["notify"]["subscriptions"])


def connected(peer: PeerProcess) -> bool:
    return peer.metric("mdpeer_source_doorbell_connected") == 1


def test_doorbells_bridge_exactly_once_and_idle_subjects_are_not_polled(
    deploy: Deploy, unique_topic: TopicFactory, sim_factory: Callable[..., SimServer]
) -> None:
    sim = sim_factory(cache_size=100_000)
    topic = unique_topic(2)
    subjects, routes = routed(topic, "/bell", 30, start=HISTORY)
    with deploy(sim.url, routes) as dep:
        # the idle back-off up to 1 s (the default): polled, 30 idle subjects would cost
        # about 30 requests a second (tests/test_source_wakeups.py shows that a doorbell
        # alone delivers, with the back-off at 30 s)
        peer = dep.start_peer("bell", env=doorbell_env(poll_safety_interval_ms=60_000))
        wait_until(lambda: len(peer.owned()) == dep.shards, 60, "the peer owning every shard")
        wait_until(lambda: connected(peer), 30, "the doorbell connected")
        assert json.loads(peer.scrape("/readyz"))["source_mode"]["mode"] == "doorbell"
        sent: dict[str, list[tuple[int, int]]] = {s: [] for s in subjects}
        for i in range(5):
            for s in subjects[:3]:
                sent[s].append(sim.publish(s, f"{s}#{i}"))
            wait_until(
                lambda: len(read_committed(dep.bootstrap, [topic])) == 3 * (i + 1),  # noqa: B023
                10,
                "a doorbell's delivery",
            )
        check_exactly_once(read_committed(dep.bootstrap, [topic]), sent)
        assert peer.metric("mdpeer_source_doorbells_total") >= 15
        # settled: 30 idle armed subjects cost next to no requests; polled, about 120 in 4 s
        before = consumes(sim)
        settled_window(4)
        assert consumes(sim) - before <= 3
        assert peer.stop() == 0


def test_dropped_doorbells_only_delay(
    deploy: Deploy, unique_topic: TopicFactory, sim_factory: Callable[..., SimServer]
) -> None:
    sim = sim_factory(cache_size=100_000, notify_drop_rate=0.5)
    topic = unique_topic(2)
    subjects, routes = routed(topic, "/drop", 10, start=HISTORY)
    with deploy(sim.url, routes) as dep:
        peers = [
            dep.start_peer(f"d{i}", env=doorbell_env(poll_safety_interval_ms=2000))
            for i in range(2)
        ]
        wait_until(lambda: split_evenly(peers, dep.shards), 60, "the shards split")
        wait_until(lambda: all(connected(p) for p in peers), 60, "both doorbells connected")
        wait_until(lambda: subscriptions(sim) == len(subjects), 30, "every subject subscribed")
        sent: dict[str, list[tuple[int, int]]] = {s: [] for s in subjects}
        for i in range(20):  # paced: each round rings anew, half of the rings dropped
            for s in subjects:
                sent[s].append(sim.publish(s, f"{s}#{i}"))
            time.sleep(0.05)
        wait_until(lambda: len(read_committed(dep.bootstrap, [topic])) >= 200, 90, "every message")
        check_exactly_once(read_committed(dep.bootstrap, [topic]), sent)
        assert sim.state()["notify"].get("news_dropped", 0) > 0
        for peer in peers:
            peer.check_alive()


def test_a_denied_subscription_blocks_its_subject_only(
    deploy: Deploy, unique_topic: TopicFactory, sim_factory: Callable[..., SimServer]
) -> None:
    sim = sim_factory(cache_size=100_000)
    topic = unique_topic(2)
    s_denied, s_ok = "/ent/denied", "/ent/ok"
    sim.deny_subjects(s_denied)
    routes = [Route(s, topic, start=HISTORY) for s in (s_denied, s_ok)]
    with deploy(sim.url, routes, blocked_retry_max_ms=1000) as dep:
        peer = dep.start_peer("ent", env=doorbell_env())
        wait_until(lambda: connected(peer), 60, "the doorbell connected")
        sent = {s_ok: [sim.publish(s_ok, f"ok#{i}") for i in range(3)]}
        wait_until(lambda: peer.blocked() == {s_denied: "entitlement_denied"}, 30, "blocked")
        wait_until(lambda: len(read_committed(dep.bootstrap, [topic])) == 3, 30, "the allowed")
        check_exactly_once(read_committed(dep.bootstrap, [topic]), sent)
        assert peer.metric('mdpeer_blocked_subjects{reason="entitlement_denied"}') == 1
        assert peer.stop() == 0


def produce(proc: SimProcess, subject: str, content: str) -> None:
    status, body = http_json(
        "POST", proc.url + "/rest/produce", {"subject": subject}, content.encode()
    )
    assert (status, body["status"]) == (200, "OK")


def test_the_client_reconnects_after_the_server_restarts(
    deploy: Deploy, unique_topic: TopicFactory, sim_process_factory: Callable[..., SimProcess]
) -> None:
    sim = sim_process_factory()
    topic = unique_topic(2)
    subjects, routes = routed(topic, "/re", 4, start=HISTORY)
    with deploy(sim.hostport, routes) as dep:
        peer = dep.start_peer(
            "re", env=doorbell_env(poll_idle_max_ms=30_000, poll_safety_interval_ms=60_000)
        )
        wait_until(lambda: connected(peer), 60, "the doorbell connected")
        for s in subjects:
            produce(sim, s, "before")
        wait_until(lambda: len(read_committed(dep.bootstrap, [topic])) == 4, 30, "before")
        port = sim.port
        sim.kill()
        wait_until(lambda: not connected(peer), 30, "the doorbell down")
        again = sim_process_factory("--first-epoch", "2", port=port)
        wait_until(lambda: connected(peer), 60, "the doorbell up again")
        wait_until(lambda: again.state()["notify"]["subscriptions"] == 4, 30, "resubscribed")
        for s in subjects:
            produce(again, s, "after")
        wait_until(lambda: len(read_committed(dep.bootstrap, [topic])) == 8, 30, "after")
        seen = check_exactly_once(read_committed(dep.bootstrap, [topic]))
        assert {s: len(v) for s, v in seen.items()} == dict.fromkeys(subjects, 2)
        assert peer.stop() == 0
