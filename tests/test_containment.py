"""Fault containment end to end: a bad route, message or subject stops only its subjects.

Real peers (``mdpeer run`` subprocesses), a real broker and the reference server. Each test
checks that no peer exits, that the rest flows exactly once while the fault lasts, that the
fault is visible (``mdpeer status``, ``/readyz``, metrics), and that the stopped subjects
resume exactly once from their checkpoints when the cause is gone.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from peer.control.reader import read_control_topic
from peer.dev.sim.server import SimServer
from peer.model import StartPolicy
from peer.routes.model import Oversize, Route
from peer.testing import PeerProcess, create_topics, free_port, mdpeer_argv, wait_until
from tests.fixtures.cli import Cli
from tests.fixtures.deploy import Deploy, routed
from tests.fixtures.kafka import GroupFactory, TopicFactory, own_cluster, skip_if_external
from tests.peers import Deployment, Publisher, check_exactly_once, deployment, read_committed

pytestmark = [pytest.mark.kafka, pytest.mark.sim, pytest.mark.slow]

DATA = Path(__file__).parent / "data"

# every message since the start: a subject stopped before its first one starts by its policy
HISTORY = StartPolicy.parse("history:100000")
#: retries of stopped subjects every second at most (the setting's floor)
FAST_RETRY: dict[str, Any] = {"blocked_retry_max_ms": 1000}


@pytest.fixture
def sim(sim_factory: Callable[..., SimServer]) -> SimServer:
    return sim_factory(cache_size=100_000)


@pytest.fixture(scope="module")
def refusing_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker that does not create topics on first use (auto.create.topics.enable=false)."""
    skip_if_external("needs a broker started here with auto-creation off")
    noauto = {"auto.create.topics.enable": "false"}
    with own_cluster(tmp_path_factory, "kafka-noauto", overrides=noauto) as cluster:
        yield cluster.bootstrap


def blocked_of(peers: list[PeerProcess]) -> dict[str, str]:
    """subject -> reason, over every peer's /readyz."""
    out: dict[str, str] = {}
    for peer in peers:
        out.update(peer.blocked())
    return out


def status(dep: Deployment, *extra: str, ok: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = Cli(dep.bootstrap, dep.group).json("status", *extra, ok=ok)
    return data


def status_blocked(dep: Deployment) -> dict[str, str]:
    return {
        r["subject"]: r["blocked"]["reason"]
        for r in status(dep)["subjects"]
        if r["blocked"] is not None
    }


def alive(peers: list[PeerProcess]) -> None:
    for peer in peers:
        peer.check_alive()  # fails with the tail of its log


def test_a_missing_topic_stops_its_route_only_and_its_subjects_resume_once_created(
    refusing_kafka: str, tmp_path: Path, sim: SimServer
) -> None:
    admin = AdminClient({"bootstrap.servers": refusing_kafka})
    run = uuid.uuid4().hex[:6]
    topics = {name: f"t.{name}.{run}" for name in ("a", "b", "c", "d")}
    for name in ("a", "b", "c"):  # "d" is missing: the cluster will not create it
        create_topics(admin, [topics[name]], 2)
    subjects = {name: [f"/c/{name}1", f"/c/{name}2"] for name in topics}
    routes = [Route(s, topics[name], start=HISTORY) for name in topics for s in subjects[name]]
    flowing = [s for name in ("a", "b", "c") for s in subjects[name]]
    stopped = subjects["d"]
    with (
        deployment(refusing_kafka, admin, tmp_path, sim.url, routes, **FAST_RETRY) as dep,
        Publisher(sim, flowing + stopped, interval=0.02) as pub,
    ):
        peers = [dep.start_peer(f"peer{i}") for i in range(3)]

        def counts() -> dict[str, int]:
            seen = check_exactly_once(read_committed(dep.bootstrap, list(topics.values())[:3]))
            return {s: len(seen.get(s, [])) for s in flowing}

        wait_until(lambda: min(counts().values()) >= 20, 90, "the six good subjects flowing")
        # The missing topic's route is stopped, and says why, everywhere an operator looks.
        wait_until(
            lambda: blocked_of(peers) == dict.fromkeys(stopped, "topic_missing"),
            60,
            "the missing topic's subjects reported blocked in /readyz",
        )
        assert all(p.ready() for p in peers)  # a data fault, not a dead peer
        blocked_metric = sum(
            p.metric('mdpeer_blocked_subjects{reason="topic_missing"}') for p in peers
        )
        assert blocked_metric == 2
        wait_until(
            lambda: status_blocked(dep) == dict.fromkeys(stopped, "topic_missing"),
            30,
            "mdpeer status showing the blocked subjects",
        )
        code, _out, err = Cli(dep.bootstrap, dep.group)("status", "--check", ok=False)
        assert code == 3
        assert "2 subject(s) blocked (topic_missing)" in err
        before = counts()
        wait_until(lambda: min(counts().values()) > max(before.values()), 60, "still flowing")
        alive(peers)

        # The operator creates the topic: the stopped subjects resume from their checkpoints.
        create_topics(admin, [topics["d"]], 2)
        wait_until(lambda: not blocked_of(peers), 60, "the blocked subjects flowing again")
        pub.stop()
        every = list(topics.values())

        def all_delivered() -> bool:
            seen = check_exactly_once(read_committed(dep.bootstrap, every))
            return all(len(seen.get(s, [])) == len(pub.sent[s]) for s in pub.sent)

        try:
            wait_until(all_delivered, 90, "every published message delivered")
        except AssertionError:
            seen = check_exactly_once(read_committed(dep.bootstrap, every))
            short = {
                s: (len(seen.get(s, [])), len(sent), sorted(set(sent) - set(seen.get(s, [])))[:5])
                for s, sent in pub.sent.items()
                if len(seen.get(s, [])) != len(sent)
            }
            raise AssertionError(f"not all delivered: {short}") from None
        check_exactly_once(read_committed(dep.bootstrap, every), pub.sent)
        wait_until(lambda: not status_blocked(dep), 30, "status no longer showing blocks")
        Cli(dep.bootstrap, dep.group)("status", "--check")  # exit 0: nothing needs attention
        alive(peers)
        for peer in peers:
            assert peer.stop() == 0


def test_oversize_under_fail_stops_the_subject_before_it_until_the_route_says_skip(
    deploy: Deploy, unique_topic: TopicFactory, sim: SimServer
) -> None:
    big_topic, other_topic = unique_topic(1), unique_topic(1)
    s_big, s_other = "/size/big", "/size/other"
    fail_route = Route(s_big, big_topic, on_oversize=Oversize.FAIL, start=HISTORY)
    with deploy(
        sim.url,
        [fail_route, Route(s_other, other_topic, start=HISTORY)],
        kafka_producer={"message.max.bytes": "2000"},
        **FAST_RETRY,
    ) as dep:
        small1 = sim.publish(s_big, "small")
        oversized = sim.publish(s_big, "x" * 5000)
        small2 = sim.publish(s_big, "small again")
        others = [sim.publish(s_other, f"o{i}") for i in range(5)]
        peer = dep.start_peer("size")
        wait_until(
            lambda: len(read_committed(dep.bootstrap, [other_topic])) == 5, 60, "the other subject"
        )
        wait_until(lambda: peer.blocked() == {s_big: "oversize"}, 30, "the big one stopped")
        assert [(r.epoch, r.seq) for r in read_committed(dep.bootstrap, [big_topic])] == [small1]
        # Retried (every second here) and stopped again at the same message: nothing more.
        more = [sim.publish(s_other, f"p{i}") for i in range(5)]
        wait_until(
            lambda: len(read_committed(dep.bootstrap, [other_topic])) == 10, 30, "still flowing"
        )
        assert [(r.epoch, r.seq) for r in read_committed(dep.bootstrap, [big_topic])] == [small1]
        wait_until(lambda: status_blocked(dep) == {s_big: "oversize"}, 30, "status says so")
        alive([peer])

        # The operator switches the route to skip: the subject resumes after its checkpoint.
        dep.write_routes([Route(s_big, big_topic, on_oversize=Oversize.SKIP, start=HISTORY)])
        wait_until(
            lambda: len(read_committed(dep.bootstrap, [big_topic])) == 2, 30, "the rest of it"
        )
        seen = check_exactly_once(
            read_committed(dep.bootstrap, [big_topic, other_topic]),
            {s_big: [small1, small2], s_other: others + more},
        )
        assert oversized not in seen[s_big]
        assert peer.metric(f'mdpeer_oversized_total{{topic="{big_topic}",action="skip"}}')
        wait_until(lambda: not status_blocked(dep), 30, "the block note removed")
        assert peer.stop() == 0


def test_a_denied_subject_stops_alone_and_resumes_when_entitled_again(
    deploy: Deploy, unique_topic: TopicFactory, sim: SimServer
) -> None:
    topic = unique_topic(2)
    s_denied, s_ok = "/ent/denied", "/ent/ok"
    sim.deny_subjects(s_denied)
    with deploy(
        sim.url, [Route(s, topic, start=HISTORY) for s in (s_denied, s_ok)], **FAST_RETRY
    ) as dep:
        sent = {s: [sim.publish(s, f"{s}#{i}") for i in range(3)] for s in (s_denied, s_ok)}
        peer = dep.start_peer("ent")
        wait_until(lambda: len(read_committed(dep.bootstrap, [topic])) == 3, 60, "the allowed one")
        wait_until(lambda: peer.blocked() == {s_denied: "entitlement_denied"}, 30, "the denied one")
        assert peer.metric('mdpeer_blocked_subjects{reason="entitlement_denied"}') == 1
        alive([peer])
        sim.deny_subjects()  # entitled again: the next retry takes it from its checkpoint
        wait_until(lambda: len(read_committed(dep.bootstrap, [topic])) == 6, 30, "all of it")
        check_exactly_once(read_committed(dep.bootstrap, [topic]), sent)
        wait_until(lambda: not peer.blocked(), 60, "no longer reported blocked")
        assert peer.stop() == 0


def test_a_peer_that_cannot_reach_migratorydata_says_so_and_turns_unready(
    deploy: Deploy, unique_topic: TopicFactory
) -> None:
    topic = unique_topic(1)
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    with deploy(nowhere, [Route("/far/away", topic)], source_unready_after_ms=3000) as dep:
        peer = dep.start_peer("far")

        def unreachable_for() -> float:
            state = peer.readiness()
            return 0.0 if state is None else float(state.source.get("unreachable_for_s", 0))

        wait_until(lambda: unreachable_for() > 0, 60, "/readyz counting the source unreachable")
        wait_until(lambda: peer.readiness() is not None and not peer.ready(), 30, "not ready")
        state = peer.readiness()
        assert state is not None
        assert "no MigratoryData server answered" in (state.reason or "")
        assert peer.metric("mdpeer_source_reachable") == 0
        # what the operator reads in the log: the warning itself is what is checked here
        wait_until(lambda: peer.log_entries("no MigratoryData server answers"), 30, "the warning")

        def flagged() -> bool:
            peers = {p["peer"]: p["source"] for p in status(dep)["peers"]}
            return bool(peers.get("far", {}).get("state") == "unreachable")

        wait_until(flagged, 30, "status flagging the peer")
        code, _out, err = Cli(dep.bootstrap, dep.group)("status", "--check", ok=False)
        assert code == 3
        assert "peer far: MigratoryData unreachable" in err
        alive([peer])
        assert peer.stop() == 0
        # leaving cleanly removes its note from the control topic
        snapshot = read_control_topic({"bootstrap.servers": dep.bootstrap}, dep.control)
        assert snapshot.peers() == {}


def control_lags(dep: Deployment) -> dict[int, str]:
    """partition -> LAG of the control topic, as Kafka's own kafka-consumer-groups shows it."""
    result = subprocess.run(
        [
            *mdpeer_argv(),
            *("kafka", "tool", "kafka-consumer-groups"),
            *("--bootstrap-server", dep.bootstrap, "--describe", "--group", dep.group),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lags: dict[int, str] = {}
    header: list[str] | None = None
    for line in result.stdout.splitlines():
        cells = line.split()
        if cells[:2] == ["GROUP", "TOPIC"]:
            header = cells
        elif header and len(cells) >= len(header) - 3 and dep.control in cells:
            row = dict(zip(header, cells, strict=False))
            lags[int(row["PARTITION"])] = row["LAG"]
    return lags


def test_an_idle_deployment_shows_zero_control_lag_in_kafkas_consumer_group_tool(
    deploy: Deploy, unique_topic: TopicFactory, sim: SimServer
) -> None:
    topic = unique_topic(2)
    subjects, routes = routed(topic, "/lag", 4)
    with deploy(sim.url, routes) as dep:
        peers = [dep.start_peer("lag-a"), dep.start_peer("lag-b")]
        for s in subjects:
            sim.publish(s, "first")
        wait_until(lambda: len(read_committed(dep.bootstrap, [topic])) == 4, 60, "delivered")
        for s in subjects:  # a busy moment: checkpoints and markers land after the offsets
            for i in range(20):
                sim.publish(s, f"busy{i}")
        wait_until(lambda: len(read_committed(dep.bootstrap, [topic])) == 84, 60, "delivered")
        # Then idle: every control partition's lag goes to 0 (not "3 per partition").
        wait_until(
            lambda: control_lags(dep) == dict.fromkeys(range(dep.shards), "0"),
            60,
            "zero lag on every control partition",
        )
        alive(peers)
        for peer in peers:
            assert peer.stop() == 0


def test_the_vendor_quickstart_connector_as_is_reaches_topics_the_cluster_creates(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    unique_group: GroupFactory,
    sim: SimServer,
) -> None:
    connector = DATA / "connector.json"  # the vendor's quick start, untouched
    existing = kafka_admin.list_topics(timeout=10).topics
    assert "topic1" not in existing  # nobody creates them by hand
    assert "topic2" not in existing
    cli = Cli(kafka_bootstrap, unique_group("vendor"))
    _code, _out, err = cli("init", "--from-connector", str(connector))
    assert "12 shards" in err
    assert "topic topic1 does not exist (target of /server/status1)" in err
    # the JSON's servers are the vendor's localhost:8800; here the reference server is elsewhere
    env = {
        "MDPEER_BOOTSTRAP": kafka_bootstrap,
        "MDPEER_GROUP": cli.group,
        "MDPEER_SERVERS": sim.url,
    }
    peers = [PeerProcess(connector, f"vendor{i}", env=env) for i in range(2)]
    try:
        first = {s: [sim.publish(s, "hello")] for s in ("/server/status1", "/server/status2")}
        wait_until(
            lambda: len(read_committed(kafka_bootstrap, ["topic1", "topic2"])) == 2,
            90,
            "the first messages in topic1 and topic2, created on first use",
        )
        sent = {s: first[s] + [sim.publish(s, f"m{i}") for i in range(20)] for s in first}
        wait_until(
            lambda: len(read_committed(kafka_bootstrap, ["topic1", "topic2"])) == 42,
            60,
            "every message",
        )
        records = read_committed(kafka_bootstrap, ["topic1", "topic2"])
        check_exactly_once(records, sent)
        assert {r.key for r in records if r.topic == "topic2"} == {b"mykey"}
        assert {r.key for r in records if r.topic == "topic1"} == {None}
        alive(peers)
        for peer in peers:
            assert peer.stop() == 0
    finally:
        for peer in peers:
            peer.close()
        kafka_admin.delete_topics(["topic1", "topic2", f"{cli.group}.control"])
