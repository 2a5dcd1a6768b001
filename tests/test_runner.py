"""`mdpeer run` end to end: real broker, real reference server, peers as subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.control.reader import read_control_topic
from peer.dev.sim.server import SimServer
from peer.model import Position, StartPolicy
from peer.routes.model import Route
from peer.testing import child_env, mdpeer_argv, metric, wait_until
from tests.fixtures.deploy import Deploy, routed
from tests.fixtures.kafka import TopicFactory
from tests.peers import Deployment, Publisher, check_exactly_once, read_committed, read_raw

pytestmark = [pytest.mark.kafka, pytest.mark.sim, pytest.mark.slow]

S1, S2 = "/server/status1", "/server/status2"
HISTORY = StartPolicy.parse("history:1000")


def quickstart_routes(topic1: str, topic2: str) -> list[Route]:
    return [
        Route(S1, topic1, start=HISTORY),
        Route(S2, topic2, key="mykey", start=HISTORY),
    ]


def seen_count(dep: Deployment, topics: list[str]) -> int:
    return len(read_committed(dep.bootstrap, topics))


@pytest.fixture
def sim(sim_factory: Callable[..., SimServer]) -> SimServer:
    return sim_factory(cache_size=100_000)


@pytest.fixture
def quick(
    deploy: Deploy, unique_topic: TopicFactory, sim: SimServer
) -> Iterator[tuple[Deployment, list[str]]]:
    topics = [unique_topic(2), unique_topic(3)]
    with deploy(f"127.0.0.1:{sim.port}", quickstart_routes(*topics)) as dep:
        yield dep, topics


def test_one_peer_exactly_once_in_order_with_headers_and_checkpoints(
    quick: tuple[Deployment, list[str]], sim: SimServer
) -> None:
    dep, topics = quick
    pub = Publisher(sim, [S1, S2])
    pub.publish(100)  # before the peer: history start picks them up
    peer = dep.start_peer("one")
    pub.publish(100)
    wait_until(lambda: seen_count(dep, topics) >= pub.total(), 60, "all messages committed")
    records = read_committed(dep.bootstrap, topics)
    seen = check_exactly_once(records, pub.sent)
    assert len(seen[S1]) == len(seen[S2]) == 200
    by_subject = {r.subject: r for r in records}
    assert by_subject[S2].key == b"mykey"
    assert by_subject[S1].key is None
    assert {r.topic for r in records if r.subject == S1} == {topics[0]}
    for name in ("md.subject", "md.epoch", "md.seq", "md.type", "md.retained"):
        assert name in by_subject[S1].headers
    value = by_subject[S1].value
    assert value is not None
    assert value.startswith(b"m")

    def checkpointed() -> bool:
        snap = read_control_topic({"bootstrap.servers": dep.bootstrap}, dep.control, settle=0.5)
        ck = snap.checkpoints()
        return all(s in ck and ck[s].position == Position(*pub.sent[s][-1]) for s in (S1, S2))

    wait_until(checkpointed, 20, "checkpoints at the last published positions")
    assert peer.stop() == 0
    assert '"peer":"one"' in peer.logs()


@pytest.mark.parametrize("new_id", ["k2", "k1"], ids=["other-id", "same-id"])
def test_sigkill_mid_stream_then_new_peer_resumes_exactly_once(
    quick: tuple[Deployment, list[str]], sim: SimServer, new_id: str
) -> None:
    dep, topics = quick
    first = dep.start_peer("k1")
    with Publisher(sim, [S1, S2]) as pub:
        wait_until(lambda: seen_count(dep, topics) >= 50, 60, "the first peer producing")
        first.signal(signal.SIGKILL)
        killed = time.monotonic()
        first.wait(10)
        mark = pub.total()
        # another id: the dead one's transaction times out; the same id fences and aborts it
        second = dep.start_peer(new_id)
        everything = set(range(dep.shards))
        wait_until(lambda: second.owned() == everything, 60, "the shards moved")
        # a measurement for docs (-s shows it), not an assertion on timing
        print(f"sigkill_to_owned_s={time.monotonic() - killed:.2f}")
        wait_until(lambda: seen_count(dep, topics) >= mark + 50, 60, "the second peer producing")
    wait_until(lambda: seen_count(dep, topics) >= pub.total(), 60, "everything committed")
    check_exactly_once(read_committed(dep.bootstrap, topics), pub.sent)
    assert second.stop() == 0


@pytest.mark.parametrize(
    "group_settings",
    [
        {"assignment_strategy": "cooperative-sticky"},
        {"assignment_strategy": "range"},
        {"group_protocol": "consumer"},
    ],
    ids=["cooperative", "eager-range", "kip848"],
)
def test_two_peers_share_then_sigterm_hands_over(
    deploy: Deploy, unique_topic: TopicFactory, sim: SimServer, group_settings: dict[str, Any]
) -> None:
    topic = unique_topic(4)
    subjects, routes = routed(topic, "/share", 8, start=HISTORY)
    with deploy(f"127.0.0.1:{sim.port}", routes, **group_settings) as dep:
        a = dep.start_peer("a")
        b = dep.start_peer("b")
        with Publisher(sim, subjects, interval=0.01) as pub:

            def both_own() -> bool:
                mine, theirs = a.owned(), b.owned()
                return bool(mine) and bool(theirs) and mine | theirs == set(range(dep.shards))

            wait_until(both_own, 60, "both peers owning shards")
            wait_until(lambda: seen_count(dep, [topic]) >= 100, 60, "data flowing")
            started = time.monotonic()
            assert a.stop() == 0
            wait_until(lambda: b.owned() == set(range(dep.shards)), 30, "b owning all")
            # a measurement for docs (-s shows it), not an assertion on timing
            print(f"sigterm_handoff_s={time.monotonic() - started:.2f}")
            mark = pub.total()
            wait_until(lambda: seen_count(dep, [topic]) >= mark + 80, 60, "b producing")
        wait_until(lambda: seen_count(dep, [topic]) >= pub.total(), 60, "everything committed")
        check_exactly_once(read_committed(dep.bootstrap, [topic]), pub.sent)
        assert b.stop() == 0


def test_zombie_writes_nothing_visible(
    deploy: Deploy, unique_topic: TopicFactory, sim: SimServer
) -> None:
    topic = unique_topic(2)
    subjects, routes = routed(topic, "/zombie", 4, start=HISTORY)
    with deploy(f"127.0.0.1:{sim.port}", routes, shards=2) as dep:
        z = dep.start_peer("z")
        with Publisher(sim, subjects, interval=0.01) as pub:
            wait_until(lambda: seen_count(dep, [topic]) >= 40, 60, "zombie-to-be producing")
            other = dep.start_peer("o")
            everything = set(range(dep.shards))

            def shared() -> bool:
                mine, theirs = z.owned(), other.owned()
                return bool(mine) and bool(theirs) and mine | theirs == everything

            wait_until(shared, 60, "z and o sharing the shards")
            z.signal(signal.SIGSTOP)
            wait_until(lambda: other.owned() == everything, 60, "o owning all")
            z.signal(signal.SIGCONT)
            mark = pub.total()
            wait_until(lambda: seen_count(dep, [topic]) >= mark, 60, "o producing")
        wait_until(lambda: seen_count(dep, [topic]) >= pub.total(), 60, "everything committed")
        check_exactly_once(read_committed(dep.bootstrap, [topic]), pub.sent)
        # it stops non-zero (fenced) or rejoins cleanly and leaves with 0 on SIGTERM
        z.signal(signal.SIGTERM)
        code = z.wait(30)
        logs = z.logs()
        assert code in (0, 2), logs[-2000:]
        # it noticed: fenced (exit 2), or its commit was refused and its shards were lost
        assert code == 2 or '"msg":"shards lost"' in logs, logs[-2000:]
        check_exactly_once(read_committed(dep.bootstrap, [topic]), pub.sent)
        assert other.stop() == 0


def test_routes_added_and_removed_at_run_time(
    quick: tuple[Deployment, list[str]], sim: SimServer
) -> None:
    dep, topics = quick
    peer = dep.start_peer("r")
    sim.publish(S1, "x")
    wait_until(lambda: seen_count(dep, [topics[0]]) >= 1, 60, "the first route flowing")
    extra = "/server/status3"
    dep.write_routes([Route(extra, topics[1], key="k3", start=HISTORY)])
    sim.publish(extra, "y")
    wait_until(
        lambda: any(r.subject == extra for r in read_committed(dep.bootstrap, topics)),
        30,
        "the added route flowing",
    )
    from peer.control.admin import RouteRemoval, admin_producer, write_routes

    producer = admin_producer({"bootstrap.servers": dep.bootstrap}, dep.group)
    write_routes(producer, dep.control, dep.shards, [RouteRemoval(extra)])
    # applied once the peer fetches S1 and S2 only (its data was committed: it goes at once)
    wait_until(lambda: peer.metric("mdpeer_subjects") == 2, 30, "the removal applied")
    before = len(read_committed(dep.bootstrap, topics))
    sim.publish(extra, "z")
    sim.publish(S1, "after")
    wait_until(
        lambda: len(read_committed(dep.bootstrap, topics)) >= before + 1, 30, "S1 still flowing"
    )
    records = read_committed(dep.bootstrap, topics)
    assert [r.value for r in records if r.subject == extra] == [b"y"]
    check_exactly_once(records)
    assert peer.stop() == 0


def test_gap_after_epoch_bump_is_counted_and_logged(
    deploy: Deploy, unique_topic: TopicFactory, sim: SimServer
) -> None:
    topics = [unique_topic(1), unique_topic(1)]
    audit = unique_topic(1)
    with deploy(f"127.0.0.1:{sim.port}", quickstart_routes(*topics), audit_topic=audit) as dep:
        _gap_scenario(dep, topics, sim)
        (record,) = read_raw(dep.bootstrap, audit)
        event = json.loads(record)
        assert event["subject"] == S1
        assert event["kind"] == "epoch_change"
        assert event["event"] == "gap"


def _gap_scenario(dep: Deployment, topics: list[str], sim: SimServer) -> None:
    peer = dep.start_peer("g")
    sim.publish(S1, "before")
    wait_until(lambda: seen_count(dep, [topics[0]]) >= 1, 60, "S1 flowing")
    sim.bump_epoch(S1)
    sim.publish(S1, "after")
    wait_until(lambda: seen_count(dep, [topics[0]]) >= 2, 30, "S1 after the bump")
    # what is checked here is the log line itself: the gap is logged, once
    wait_until(lambda: '"msg":"gap in subject' in peer.logs(), 10, "the gap logged")
    gap_lines = [line for line in peer.logs().splitlines() if '"msg":"gap in subject' in line]
    assert len(gap_lines) == 1, gap_lines  # logged once, with its subject and kind
    assert S1 in gap_lines[0]
    assert "epoch_change" in gap_lines[0]
    check_exactly_once(read_committed(dep.bootstrap, topics))
    page = peer.scrape()
    assert metric(page, 'mdpeer_gaps_total{kind="epoch_change"}') == 1
    assert metric(page, f'mdpeer_messages_out_total{{topic="{topics[0]}"}}') == 2
    assert metric(page, 'mdpeer_commits_total{result="committed"}') >= 1
    assert metric(page, "mdpeer_owned_shards") == 4
    assert metric(page, "mdpeer_shard_rebuild_seconds_count") >= 1  # its assignment
    assert json.loads(peer.scrape("/readyz"))["ready"] is True
    assert peer.stop() == 0


def test_bad_config_exits_1_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        'bootstrap = "127.0.0.1:1"\ncommit_interval_ms = "soon"\n'
        '[source]\nservers = ["127.0.0.1:1"]\n'
    )
    done = subprocess.run(
        [*mdpeer_argv(), "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=child_env(),
    )
    assert done.returncode == 1
    assert "commit_interval_ms" in done.stderr
    assert "soon" in done.stderr


def test_checkpoint_reset_command_is_applied_and_acknowledged(
    quick: tuple[Deployment, list[str]], sim: SimServer
) -> None:
    from peer.control import Command
    from peer.control.admin import admin_producer, write_command

    dep, topics = quick
    peer = dep.start_peer("c")
    sent = [sim.publish(S1, f"m{i}") for i in range(10)]
    wait_until(lambda: seen_count(dep, [topics[0]]) >= 10, 60, "S1 flowing")
    epoch, seq = sent[4]
    command = Command.reset(f"{epoch}:{seq}")
    producer = admin_producer({"bootstrap.servers": dep.bootstrap}, dep.group)
    write_command(producer, dep.control, dep.shards, S1, command)
    # the operator asked to resume after the 5th message: the last 5 are produced again
    wait_until(lambda: seen_count(dep, [topics[0]]) >= 15, 30, "S1 re-produced after the reset")

    def acknowledged() -> bool:
        snap = read_control_topic({"bootstrap.servers": dep.bootstrap}, dep.control, settle=0.5)
        ck = snap.checkpoints().get(S1)
        return ck is not None and ck.cmd == command.id and S1 not in snap.pending_commands()

    wait_until(acknowledged, 20, "the command acknowledged by a checkpoint")
    again = [(r.epoch, r.seq) for r in read_committed(dep.bootstrap, [topics[0]])]
    assert again == sent + sent[5:]
    assert peer.stop() == 0


def test_oversize_skip_policy_uses_the_producers_limit(
    deploy: Deploy, unique_topic: TopicFactory, sim: SimServer
) -> None:
    from peer.routes.model import Oversize

    topic = unique_topic(1)
    route = Route(S1, topic, on_oversize=Oversize.SKIP, start=HISTORY)
    with deploy(
        f"127.0.0.1:{sim.port}", [route], kafka_producer={"message.max.bytes": "2000"}
    ) as dep:
        peer = dep.start_peer("o")
        small1 = sim.publish(S1, "small")
        sim.publish(S1, "x" * 5000)
        small2 = sim.publish(S1, "small again")
        wait_until(lambda: seen_count(dep, [topic]) >= 2, 60, "the small messages")
        seen = check_exactly_once(read_committed(dep.bootstrap, [topic]))
        assert seen[S1] == [small1, small2]
        assert peer.metric(f'mdpeer_oversized_total{{topic="{topic}",action="skip"}}') == 1
        assert peer.stop() == 0
