"""The chaos harness's own logic (peer.dev.chaos): schedule, content, verdict, reader.

The harness is only as good as its checker: these tests show that each kind of violation
it must catch (duplicate, reordering, split partition, corrupt bytes, wrong headers,
unreported loss) is caught, that a loss covered by a reported gap is not held against the
peers, and that a replayed seed gives the same schedule. The reader is checked against a
real broker: what an aborted transaction wrote must not reach the verdict.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from peer.dev.chaos import schedule as sch
from peer.dev.chaos.content import content, parse
from peer.dev.chaos.deployment import peer_toml
from peer.dev.chaos.main import _replay_args, options
from peer.dev.chaos.reader import CommittedReader
from peer.dev.chaos.verdict import ChaosVerdict, Ledger, gaps_from_log_lines, judge_run, totals
from peer.dev.sim.server import SimServer
from peer.model import Message
from peer.ops.logs import JsonFormatter
from peer.routes.model import Route
from peer.testing.peer import STANDIN_DIR, STANDIN_MODULE
from peer.testing.verdict import Delivered, Gap, gap_from_fields
from peer.writer.records import message_headers

SIZE = 64
SUBJECT = "/chaos/s1"


def plan(**changes: Any) -> sch.Plan:
    base = sch.Plan(
        duration=180.0,
        peers=3,
        max_peers=4,
        kafka_nodes=(1,),
        subjects=("/chaos/s1", "/chaos/s2", "/chaos/s3"),
        session_timeout_s=6.0,
    )
    return dataclasses.replace(base, **changes)


# --- content ----------------------------------------------------------------------------------


def test_content_names_subject_and_counter_and_has_the_size() -> None:
    value = content("/a/b", 42, 100)
    assert len(value) == 100
    assert parse(value) == ("/a/b", 42)
    assert content("/a/b", 42, 100) == value  # deterministic: the checker rebuilds it
    assert content("/a/b", 43, 100)[20:] != value[20:]  # the filler depends on the counter


@pytest.mark.parametrize("value", [None, b"", b"hello", b"/a|x|y", b"/a|0|pad", b"\xff\xfe|1|"])
def test_parse_refuses_what_is_not_ours(value: bytes | None) -> None:
    assert parse(value) is None


# --- schedule ---------------------------------------------------------------------------------


def test_a_seed_replays_the_same_schedule() -> None:
    one, two = sch.build(1234, plan()), sch.build(1234, plan())
    assert one.actions == two.actions
    assert one.episodes == two.episodes
    assert sch.build(1235, plan()).actions != one.actions


def _check_valid(schedule: sch.Schedule) -> None:
    """Replays the actions against a model of the fleet: each must make sense when it runs."""
    p = schedule.plan
    running = set(range(1, p.peers + 1))
    paused: set[int] = set()
    down: set[int] = set()
    stopped_at: dict[int, float] = {}
    kafka_down: set[str] = set()
    for a in schedule.actions:
        op = sch.Op
        if a.op in (op.SIGKILL, op.SIGTERM, op.SIGSTOP, op.RETIRE):
            slot = int(a.target)
            assert slot in running, a
            assert slot not in paused, a
            assert slot not in down, a
            if a.op is op.SIGSTOP:
                paused.add(slot)
                stopped_at[slot] = a.at
            elif a.op is op.RETIRE:
                running.discard(slot)
            else:
                down.add(slot)
        elif a.op is op.SIGCONT:
            slot = int(a.target)
            assert slot in paused, a
            # a zombie must outlive its session, or nothing is fenced
            assert a.at - stopped_at[slot] > p.session_timeout_s
            paused.discard(slot)
        elif a.op is op.START:
            slot = int(a.target)
            assert slot in down or slot not in running, a
            down.discard(slot)
            running.add(slot)
        elif a.op is op.KAFKA_KILL:
            assert not kafka_down, "one broker down at a time"
            kafka_down.add(a.target)
        elif a.op is op.KAFKA_RESTART:
            assert a.target in kafka_down
            kafka_down.discard(a.target)
        elif a.op is op.SERVER_RESTART:
            assert a.target == "server"
            assert 0 < a.value <= 3.0, a  # down, then up again within the one action
        # never more peers than allowed, and at least one kept (not counting outages)
        assert len(running) <= p.max_peers
        assert len(running) >= max(1, p.peers - 1)
    assert not paused, "every episode ends"
    assert not kafka_down
    assert not down
    assert sch.running_after(p.peers, schedule.actions) == running


@pytest.mark.parametrize("seed", range(40))
def test_every_action_is_valid_when_it_runs(seed: int) -> None:
    _check_valid(sch.build(seed, plan(kafka_nodes=(1, 2, 3), duration=600.0)))


def test_every_fault_kind_appears_in_a_long_3_node_schedule() -> None:
    counts = sch.build(99, plan(kafka_nodes=(1, 2, 3), duration=1800.0)).counts()
    assert all(n > 0 for n in counts.values()), counts


def test_one_node_has_no_broker_faults_and_disabled_kinds_stay_out() -> None:
    assert sch.build(5, plan(duration=900.0)).counts()["kafka_kill"] == 0
    only = sch.build(5, plan(faults=sch.parse_faults("kill,epoch"))).counts()
    assert {k for k, n in only.items() if n} == {"kill", "epoch"}


def test_lanes_are_independent_so_a_narrowed_replay_keeps_its_faults() -> None:
    full = sch.build(77, plan(kafka_nodes=(1, 2, 3)))
    peers_only = sch.build(77, plan(kafka_nodes=(1, 2, 3), faults=frozenset(sch.PEER_FAULTS)))
    peer_ops = {sch.Op.SIGKILL, sch.Op.SIGTERM, sch.Op.SIGSTOP, sch.Op.SIGCONT}
    peer_ops |= {sch.Op.START, sch.Op.RETIRE}

    def peer_actions(s: sch.Schedule) -> list[tuple[float, sch.Op, str]]:
        return [(a.at, a.op, a.target) for a in s.actions if a.op in peer_ops]

    assert peer_actions(full) == peer_actions(peers_only)
    assert peer_actions(full)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("3m", 180.0), ("1m30s", 90.0), ("1h", 3600.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert sch.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "3x", "m", "-5s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(sch.ScheduleError, match="duration"):
        sch.parse_duration(text)


def test_parse_faults() -> None:
    assert sch.parse_faults("all") == frozenset(sch.ALL_FAULTS)
    assert sch.parse_faults("none") == frozenset()
    assert sch.parse_faults("scale, 5xx") == {
        sch.Fault.SCALE_UP,
        sch.Fault.SCALE_DOWN,
        sch.Fault.FAIL,
    }
    assert sch.parse_faults("server_kill") == {sch.Fault.SERVER_KILL}
    with pytest.raises(sch.ScheduleError, match="'kil'"):
        sch.parse_faults("kil")


def test_the_server_restart_lane_leaves_the_older_lanes_in_place() -> None:
    full = sch.build(20261123, plan())
    without = sch.build(20261123, plan(faults=frozenset(sch.ALL_FAULTS) - {sch.Fault.SERVER_KILL}))

    def shape(actions: tuple[sch.Action, ...]) -> list[tuple[float, sch.Op, str, float]]:
        return [(a.at, a.op, a.target, a.value) for a in actions]  # episodes are renumbered

    restarts = [a for a in full.actions if a.op is sch.Op.SERVER_RESTART]
    assert len(restarts) == 2  # the CI run's seed restarts the server twice in 3 minutes
    others = tuple(a for a in full.actions if a.op is not sch.Op.SERVER_RESTART)
    assert shape(others) == shape(without.actions)


# --- verdict ----------------------------------------------------------------------------------


def rec(
    counter: int,
    ledger: Ledger,
    *,
    offset: int = 0,
    partition: int = 0,
    value: bytes | None = None,
    pos: tuple[int, int] | None = None,
) -> Delivered:
    epoch, seq = pos or ledger.position(counter)
    return Delivered(
        ledger.subject,
        epoch,
        seq,
        partition,
        offset,
        content(ledger.subject, counter, SIZE) if value is None else value,
        "chaos.a",
    )


def stream(ledger: Ledger, counters: list[int]) -> list[Delivered]:
    return [rec(c, ledger, offset=i) for i, c in enumerate(counters)]


def one(records: list[Delivered], ledger: Ledger, gaps: list[Gap] | None = None) -> ChaosVerdict:
    verdicts = judge_run(records, {ledger.subject: ledger}, gaps or [], SIZE)
    assert [v.common.subject for v in verdicts] == [ledger.subject]
    return verdicts[0]


def test_ledger_positions_across_epochs() -> None:
    ledger = Ledger(SUBJECT, 7, ((1, 1), (2, 4), (5, 6)))
    assert [ledger.position(c) for c in range(1, 8)] == [
        (1, 1),
        (1, 2),
        (1, 3),
        (2, 1),
        (2, 2),
        (5, 1),
        (5, 2),
    ]
    # a bump before the first publish: the subject starts in the new epoch
    assert Ledger(SUBJECT, 1, ((1, 1), (2, 1))).position(1) == (2, 1)
    with pytest.raises(ValueError, match="not published"):
        ledger.position(8)
    # and back: the counter of the message the server numbered (epoch, seq)
    assert [ledger.counter(ledger.position(c)) for c in range(1, 8)] == list(range(1, 8))
    with pytest.raises(ValueError, match="not published"):
        ledger.counter((1, 4))


def test_everything_once_in_order_is_ok() -> None:
    ledger = Ledger(SUBJECT, 5)
    v = one(stream(ledger, [1, 2, 3, 4, 5]), ledger)
    assert v.ok
    c = v.common
    assert (c.expected, c.delivered, c.duplicates, c.missing) == (5, 5, 0, 0)


def test_a_redelivered_message_is_a_duplicate_and_out_of_order() -> None:
    ledger = Ledger(SUBJECT, 4)
    v = one(stream(ledger, [1, 2, 3, 2, 3, 4]), ledger)
    assert not v.ok
    assert v.common.duplicates == 2
    assert v.common.order_violations == 1  # 2 after 3; then 3 after 2 is in order again


def test_a_swap_is_an_order_violation() -> None:
    ledger = Ledger(SUBJECT, 3)
    v = one(stream(ledger, [1, 3, 2]), ledger)
    c = v.common
    assert (v.ok, c.order_violations, c.duplicates, c.missing) == (False, 1, 0, 0)


def test_a_subject_in_two_partitions_fails() -> None:
    ledger = Ledger(SUBJECT, 2)
    v = one([rec(1, ledger), rec(2, ledger, partition=1)], ledger)
    assert not v.ok
    assert v.common.partitions == 2
    assert v.common.order_violations == 1  # across partitions no consumer sees an order
    assert totals([v])["split_subjects"] == 1


def test_unreported_loss_fails_and_names_the_range() -> None:
    ledger = Ledger(SUBJECT, 6)
    v = one(stream(ledger, [1, 2, 5, 6]), ledger)
    assert not v.ok
    assert (v.common.missing, v.common.missing_unreported, v.missing_avoidable) == (2, 2, 2)
    assert v.missing_ranges == ((3, 4, False, False),)


def test_a_reported_gap_does_not_excuse_a_loss_the_server_could_have_served() -> None:
    # one epoch, huge cache: a peer that skips 3..4 and reports it still lost data
    ledger = Ledger(SUBJECT, 6)
    gap = Gap(SUBJECT, after=(1, 2), resumed_at=(1, 5), source="audit")
    v = one(stream(ledger, [1, 2, 5, 6]), ledger, [gap])
    assert not v.ok
    assert v.common.ok  # the common verdict: a reported loss is no violation ...
    c = v.common  # ... but this harness's server still had them
    assert (c.missing_reported, c.missing_unreported, v.missing_avoidable) == (2, 0, 2)
    assert v.missing_ranges == ((3, 4, True, False),)


def test_only_the_unfetched_tail_of_a_bumped_epoch_counts_as_lost_to_the_bump() -> None:
    ledger = Ledger(SUBJECT, 8, ((1, 1), (2, 6)))
    # 2 is missing but 3 was delivered after it: the server had 2 all along
    gap = Gap(SUBJECT, after=(1, 1), resumed_at=(2, 1), source="audit")
    v = one(stream(ledger, [1, 3, 6, 7, 8]), ledger, [gap])
    assert not v.ok
    assert v.missing_avoidable == 1
    assert v.missing_ranges == ((2, 2, True, False), (4, 5, True, True))


def test_loss_inside_a_reported_epoch_change_is_not_held_against_the_peers() -> None:
    # epoch 1 held counters 1..5, the bump emptied the cache: 4 and 5 were never fetched
    ledger = Ledger(SUBJECT, 8, ((1, 1), (2, 6)))
    gap = Gap(SUBJECT, after=(1, 3), resumed_at=(2, 1), source="audit")
    v = one(stream(ledger, [1, 2, 3, 6, 7, 8]), ledger, [gap])
    assert v.ok
    assert (v.common.missing, v.common.missing_reported, v.common.missing_unreported) == (2, 2, 0)
    assert v.missing_avoidable == 0
    assert v.missing_ranges == ((4, 5, True, True),)


def test_a_gap_covers_only_its_own_subject_and_range() -> None:
    ledger = Ledger(SUBJECT, 8, ((1, 1), (2, 6)))
    elsewhere = Gap("/chaos/s2", after=(1, 3), resumed_at=(2, 1), source="log")
    too_late = Gap(SUBJECT, after=(1, 4), resumed_at=(2, 1), source="log")
    v = one(stream(ledger, [1, 2, 3, 6, 7, 8]), ledger, [elsewhere, too_late])
    assert not v.ok
    assert (v.common.missing_reported, v.common.missing_unreported) == (1, 1)  # 5 covered, 4 not


def test_wrong_bytes_or_headers_are_corrupt() -> None:
    ledger = Ledger(SUBJECT, 3)
    wrong_bytes = content(SUBJECT, 2, SIZE)[:-1] + b"?"
    records = [
        rec(1, ledger, offset=0),
        rec(2, ledger, offset=1, value=wrong_bytes),
        rec(3, ledger, offset=2, pos=(1, 4)),  # headers disagree with the content
    ]
    v = one(records, ledger)
    # a record is the message its headers name: (1, 4) was never published, (1, 3) is missing
    assert (v.ok, v.common.corrupt, v.common.unexpected, v.common.missing) == (False, 2, 1, 1)


def test_records_that_were_never_published_are_unexpected() -> None:
    ledger = Ledger(SUBJECT, 2)
    records = [*stream(ledger, [1, 2]), rec(2, ledger, offset=2, value=b"garbage")]
    records.append(Delivered(SUBJECT, 1, 3, 0, 3, content(SUBJECT, 3, SIZE), "chaos.a"))
    records.append(Delivered(None, None, None, 0, 4, b"no headers", "chaos.a"))
    verdicts = judge_run(records, {SUBJECT: ledger}, [], SIZE)
    v, unknown = verdicts
    # (1, 3) was never published; (1, 2) again with other bytes is a corrupt duplicate
    c = v.common
    assert (v.ok, c.unexpected, c.corrupt, c.duplicates, c.delivered) == (False, 1, 2, 1, 4)
    # a record without md.* headers names no subject: it fails the run on its own
    assert (unknown.ok, unknown.common.subject, unknown.common.corrupt) == (
        False,
        "<unknown>",
        1,
    )


def test_a_subject_nobody_delivered_is_all_missing() -> None:
    verdicts = judge_run([], {SUBJECT: Ledger(SUBJECT, 3)}, [], SIZE)
    assert (verdicts[0].common.missing_unreported, verdicts[0].ok) == (3, False)
    assert verdicts[0].missing_avoidable == 3


def test_gaps_are_read_from_the_peers_json_log_lines() -> None:
    """The lines are made by the peer's own JSON formatter, with the fields the source and
    the runner log (peer/source/rest.py, peer/runner/peer.py)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test_chaos.peer")
    log.propagate = False
    log.addHandler(handler)
    try:
        fields = {"subject": SUBJECT, "kind": "epoch_change", "after": "1:3",
                  "resumed_at": "2:1", "missing": None}  # fmt: skip
        log.warning("gap in subject stream", extra=fields)
        log.warning("gap in subject", extra={**fields, "after": None, "resumed_at": "3:7"})
        log.warning("something else", extra=fields)
    finally:
        log.removeHandler(handler)
    gaps = gaps_from_log_lines([*out.getvalue().splitlines(), "not json {", ""])
    assert gaps == [
        Gap(SUBJECT, (1, 3), (2, 1), "log"),
        Gap(SUBJECT, None, (3, 7), "log"),
    ]
    assert gap_from_fields({"subject": SUBJECT, "resumed_at": "x"}, "audit") is None


# --- the reader, against a real broker ------------------------------------------------------


@pytest.mark.kafka
def test_reader_sees_committed_records_only_with_their_headers_and_audit_gaps(
    kafka_bootstrap: str, unique_topic: object
) -> None:
    from confluent_kafka import Producer

    make = unique_topic
    assert callable(make)
    topic, audit = make(2), make(1)
    ledger = Ledger(SUBJECT, 3)
    route = Route(SUBJECT, topic)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"chaos-test-{topic}"}
    )
    producer.init_transactions(30)

    def send(counter: int) -> None:
        epoch, seq = ledger.position(counter)
        msg = Message(SUBJECT, content(SUBJECT, counter, SIZE), epoch, seq, "RECOVERED")
        headers: list[tuple[str, str | bytes | None]] = list(message_headers(msg, "md."))
        producer.produce(route.topic, msg.content, partition=1, headers=headers)

    producer.begin_transaction()
    send(1)
    send(2)
    gap = {"subject": SUBJECT, "kind": "seq_jump", "after": "1:2", "resumed_at": "1:4"}
    producer.produce(audit, json.dumps(gap).encode(), SUBJECT.encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    send(3)  # a zombie's write: aborted, must never be seen
    producer.abort_transaction(30)
    producer.begin_transaction()
    send(3)
    producer.commit_transaction(30)

    reader = CommittedReader(kafka_bootstrap, [topic], audit)
    try:
        assert reader.read_to_end(timeout=30)
        records, gaps, errors = reader.snapshot()
    finally:
        reader.stop()
    assert errors == []
    assert [(r.partition, r.subject, r.epoch, r.seq) for r in records] == [
        (1, SUBJECT, 1, 1),
        (1, SUBJECT, 1, 2),
        (1, SUBJECT, 1, 3),
    ]
    assert gaps == [Gap(SUBJECT, (1, 2), (1, 4), "audit")]
    v = judge_run(records, {SUBJECT: ledger}, gaps, SIZE)[0]
    assert v.ok
    assert (v.common.delivered, v.common.duplicates) == (3, 0)


# --- regressions found by the harness -------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.sim
@pytest.mark.slow
def test_regression_sigterm_is_acted_on_while_a_commit_waits_for_kafka(
    tmp_path: Path, sim_factory: Callable[..., SimServer]
) -> None:
    """Found by the chaos harness; fixed: transactional calls run off the main thread.

    ``scripts/chaos.py --duration 3m --nodes 3 --seed 11``: after a broker SIGKILL, peers did
    not act on SIGTERM for 20+ s (no "stop requested" line; SIGKILLed by the harness after
    20 s). The SIGABRT stack dump showed the main thread inside
    ``producer.send_offsets_to_transaction`` (peer/writer/transactional.py, commit), called
    with the writer's whole operation budget (30 s, retried up to 5 times): Python runs
    signal handlers only between bytecodes of the main thread, so ``request_stop`` waits for
    librdkafka to give up. A rolling update's grace period (30 s by default in Kubernetes)
    can then run out, turning a clean handoff into a SIGKILL, and the peer fetches nothing
    meanwhile. Here the broker is paused (SIGSTOP) while the peer has data to commit.
    """
    from confluent_kafka.admin import AdminClient

    from peer.dev.localkafka import start_on_free_ports
    from peer.testing import create_topics, wait_until
    from tests.peers import deployment, read_committed

    cluster = start_on_free_ports(tmp_path / "kafka", 1)
    stop = threading.Event()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        create_topics(admin, ["target"], 1)
        sim = sim_factory()
        subject = "/regression/sigterm"
        sim.publish(subject, "first")
        servers = f"127.0.0.1:{sim.port}"
        with deployment(
            cluster.bootstrap, admin, tmp_path, servers, [Route(subject, "target")]
        ) as dep:
            peer = dep.start_peer("sigterm-1")
            wait_until(
                lambda: bool(read_committed(cluster.bootstrap, ["target"], timeout=1.0)),
                60,
                "the peer's first committed record",
            )

            def publish() -> None:  # something to commit every turn
                n = 0
                while not stop.wait(0.05):
                    n += 1
                    sim.publish(subject, f"m{n}")

            threading.Thread(target=publish, daemon=True).start()
            broker = cluster.pid(1)
            assert broker is not None
            os.kill(broker, signal.SIGSTOP)
            try:
                # not an assertion: time for the peer's next commit to reach the dead broker
                time.sleep(3.0)
                peer.signal(signal.SIGTERM)
                # its own word that it acted: the line it logs on acting on the signal
                wait_until(
                    lambda: peer.log_entries("stop requested"), 5.0, "the peer to act on SIGTERM"
                )
            finally:
                os.kill(broker, signal.SIGCONT)
                stop.set()
            assert peer.wait(60) == 0
    finally:
        stop.set()
        cluster.stop(grace=1.0)


def test_doorbell_mode_configures_the_stand_in_and_replays() -> None:
    args = options(["--duration", "90s", "--seed", "5", "--doorbell"])
    assert args.doorbell
    assert "--doorbell" in _replay_args(args)
    assert "--doorbell" not in _replay_args(options(["--duration", "90s", "--seed", "5"]))
    toml = peer_toml("127.0.0.1:9092", 8800, doorbell=True)
    assert f'doorbell_module = "{STANDIN_MODULE}"' in toml
    assert 'doorbell = "on"' in toml
    assert "doorbell" not in peer_toml("127.0.0.1:9092", 8800)
    assert (STANDIN_DIR / f"{STANDIN_MODULE}.py").is_file()
