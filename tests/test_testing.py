"""``peer.testing`` itself: the wait, the process base, the reference server and peer state
readers, and the exactly-once verdict every test, benchmark and harness relies on.

Processes here are real (small Python children, ``mdpeer sim serve``); nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from peer.testing import (
    KEEP_LOGS_ENV,
    ChildExitedError,
    ManagedProcess,
    Readiness,
    SimProcess,
    WaitTimeoutError,
    read_readiness,
    wait_until,
)
from peer.testing.verdict import Delivered, Gap, judge, totals

# --- wait_until -------------------------------------------------------------------------------


def test_wait_until_returns_when_the_condition_holds_and_names_what_it_waited_for() -> None:
    calls = iter([False, False, True])
    before = time.monotonic()
    held = wait_until(lambda: next(calls), 5, "the third call", step=0.01)
    assert before <= held <= time.monotonic()
    with pytest.raises(WaitTimeoutError, match=r"after 0\.1s waiting for the impossible"):
        wait_until(lambda: False, 0.1, "the impossible", step=0.01)
    assert issubclass(WaitTimeoutError, AssertionError)  # a test's failure, not an error


# --- the process base -------------------------------------------------------------------------


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_gets_a_scrubbed_environment_its_own_group_and_a_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MDPEER_BOOTSTRAP", "inherited:1")
    monkeypatch.delenv(KEEP_LOGS_ENV, raising=False)
    code = (
        "import os, sys\n"
        "print(sorted(k for k in os.environ if k.startswith('MDPEER_')))\n"
        "print(os.environ.get('PYTHONFAULTHANDLER'), file=sys.stderr)\n"
    )
    child = ManagedProcess(python(code), name="env", env={"MDPEER_GROUP": "given"})
    try:
        assert os.getpgid(child.pid) == child.pid  # its own group (a zombie still has one)
        assert child.wait(10) == 0
        assert child.logs().splitlines() == ["['MDPEER_GROUP']", "1"]
    finally:
        child.close()
    assert not child.log.exists()  # a run that went well leaves no temporary log behind


def test_a_child_ignoring_sigterm_is_aborted_with_its_stacks_in_its_log_then_gone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(KEEP_LOGS_ENV, raising=False)
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = ManagedProcess(python(code), name="stubborn", grace=0.5)
    try:
        wait_until(lambda: "up" in child.logs(), 10, "the child up")
        assert child.stop() == -signal.SIGABRT
        assert child.forced
        assert "Fatal Python error: Aborted" in child.logs()  # PYTHONFAULTHANDLER's stacks
        with pytest.raises(ChildExitedError, match="stubborn exited -6"):
            child.check_alive()
    finally:
        child.close()
    assert child.log.exists()  # forced: kept, and where it is was said
    assert f"log of stubborn kept: {child.log}" in capsys.readouterr().err
    child.log.unlink()


def test_logs_are_copied_to_the_keep_dir_and_a_failed_wait_names_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep = tmp_path / "kept"
    monkeypatch.setenv(KEEP_LOGS_ENV, str(keep))
    child = ManagedProcess(
        python("import time; print('hello', flush=True); time.sleep(60)"), name="w"
    )
    try:
        wait_until(lambda: "hello" in child.logs(), 10, "its line")
        with pytest.raises(WaitTimeoutError, match=r"w did not exit within 0\.1s"):
            child.wait(0.1)
        assert child.stop(grace=10) == -signal.SIGTERM
    finally:
        child.close()
    assert (keep / f"w-{child.pid}.log").read_text() == "hello\n"
    child.log.unlink()  # the failed wait kept the temporary one too


# --- the reference server as a process --------------------------------------------------------


@pytest.mark.sim
def test_the_reference_server_process_says_where_it_listens_and_answers_its_admin_api() -> None:
    sim = SimProcess("--cache-size", "5")
    try:
        assert sim.url == f"http://{sim.hostport}"
        sim.generate("/t", 2, 0, 10, 6)
        sim.wait_generated(30)
        assert set(sim.state()["subjects"]) == {"/t/1", "/t/2"}
        assert sim.stop() == 0
        assert sim.stdout_lines == [f"listening on {sim.url}\n"]
    finally:
        sim.close()


# --- a peer's state: its /readyz --------------------------------------------------------------


@pytest.fixture
def readyz() -> Iterator[tuple[int, list[tuple[int, dict[str, object]]]]]:
    """A server answering /readyz with the (status, body) pairs queued, the last one kept."""
    answers: list[tuple[int, dict[str, object]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answers[0] if len(answers) == 1 else answers.pop(0)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), answers
    finally:
        server.shutdown()
        server.server_close()


def test_readiness_is_read_from_the_503_body_too(
    readyz: tuple[int, list[tuple[int, dict[str, object]]]],
) -> None:
    port, answers = readyz
    rebuilding = {"ready": False, "owned_shards": [1, 4], "rebuilding": [4], "reason": "why"}
    blocked = {"count": 1, "subjects": [{"subject": "/a", "reason": "oversize"}]}
    answers += [(503, rebuilding), (200, {**rebuilding, "ready": True, "blocked": blocked})]
    first = read_readiness(port)
    assert first == Readiness(
        ready=False, owned_shards=frozenset({1, 4}), rebuilding=frozenset({4}), reason="why"
    )
    assert first.working == {1}  # owned and rebuilt: the shards it works on
    second = read_readiness(port)
    assert second is not None
    assert second.ready
    assert second.blocked_subjects() == {"/a": "oversize"}
    server_gone = read_readiness(1)  # nothing listens on port 1
    assert server_gone is None


# --- the exactly-once verdict -----------------------------------------------------------------


def rec(pos: tuple[int, int] | None, offset: int, partition: int = 0, **kw: object) -> Delivered:
    epoch, seq = pos if pos is not None else (None, None)
    subject = kw.pop("subject", "/s")
    assert subject is None or isinstance(subject, str)
    value = kw.pop("value", None)
    assert value is None or isinstance(value, bytes)
    return Delivered(subject, epoch, seq, partition, offset, value, "t")


def test_every_message_once_in_order_is_ok() -> None:
    expected = {"/s": [(1, 1), (1, 2), (1, 3)]}
    (v,) = judge(expected, [rec((1, s), s) for s in (1, 2, 3)])
    assert v.ok
    assert (v.expected, v.delivered, v.missing, v.partitions) == (3, 3, 0, 1)
    assert v.line() == (
        "exactly-once /s: expected 3, delivered 3, duplicates 0, missing 0 (0 reported), "
        "order violations 0, corrupt 0, unexpected 0, partitions 1: OK"
    )


def test_missing_messages_a_gap_reported_are_no_violation_the_others_are() -> None:
    expected = {"/s": [(1, 1), (1, 2), (2, 1), (2, 2)]}
    gap = Gap("/s", after=(1, 1), resumed_at=(2, 1))
    (covered,) = judge(expected, [rec((1, 1), 0), rec((2, 1), 1), rec((2, 2), 2)], [gap])
    assert covered.ok
    assert (covered.missing_reported, covered.missing_unreported) == (1, 0)
    (silent,) = judge(expected, [rec((1, 1), 0), rec((1, 2), 1), rec((2, 2), 2)], [gap])
    assert not silent.ok
    assert silent.unreported_positions == ((2, 1),)


def test_duplicates_order_and_a_second_partition_are_violations() -> None:
    expected = {"/s": [(1, 1), (1, 2), (1, 3)]}
    (dup,) = judge(expected, [rec((1, 1), 0), rec((1, 2), 1), rec((1, 2), 2), rec((1, 3), 3)])
    assert (dup.ok, dup.duplicates, dup.order_violations) == (False, 1, 1)
    (swap,) = judge(expected, [rec((1, 1), 0), rec((1, 3), 1), rec((1, 2), 2)])
    assert (swap.ok, swap.duplicates, swap.order_violations) == (False, 0, 1)
    # in offset order within each partition, whatever order they are given in
    split = judge(expected, [rec((1, 3), 5, partition=1), rec((1, 2), 1), rec((1, 1), 0)])
    assert (split[0].ok, split[0].partitions, split[0].order_violations) == (False, 2, 1)
    assert totals(split)["split_subjects"] == 1


def test_a_stream_spread_over_partitions_is_judged_in_each_partition() -> None:
    expected = {"/s": [(1, 1), (1, 2), (1, 3), (1, 4)]}
    spread = [rec((1, 1), 0), rec((1, 2), 0, partition=1), rec((1, 3), 1), rec((1, 4), 1, 1)]
    (v,) = judge(expected, spread, one_partition=False)
    assert (v.ok, v.partitions, v.order_violations) == (True, 2, 0)
    behind = [rec((1, 2), 0), rec((1, 1), 1), rec((1, 3), 0, partition=1), rec((1, 4), 1, 1)]
    (late,) = judge(expected, behind, one_partition=False)
    assert (late.ok, late.order_violations) == (False, 1)


def test_corrupt_records_and_what_is_unexpected_depends_on_an_exhaustive_expectation() -> None:
    expected = {"/s": [(1, 1)]}

    def value_of(subject: str, pos: tuple[int, int]) -> bytes:
        return f"{subject}@{pos}".encode()

    records = [
        rec((1, 1), 0, value=b"not what was published"),
        rec((1, 2), 1),  # never published
        rec(None, 2),  # no md.epoch / md.seq
        rec(None, 3, subject=None),  # no header at all: no subject to file it under
    ]
    s, unknown = judge(expected, records, value_of=value_of)
    assert (s.subject, s.corrupt, s.unexpected, s.ok) == ("/s", 3, 1, False)
    assert (unknown.subject, unknown.corrupt, unknown.ok) == ("<unknown>", 1, False)
    # a test that expects only part of what it published: others are counted, not failed
    (partial,) = judge(expected, [rec((1, 1), 0), rec((1, 2), 1)], exhaustive=False)
    assert (partial.ok, partial.unexpected, partial.corrupt) == (True, 1, 0)


def test_a_record_is_read_from_kafka_headers() -> None:
    headers = [("md.subject", b"/s"), ("md.epoch", b"3"), ("md.seq", b"7"), ("other", None)]
    got = Delivered.from_kafka("t", 2, 9, headers, b"v")
    assert got == Delivered("/s", 3, 7, 2, 9, b"v", "t")
    assert got.position == (3, 7)
    garbled = Delivered.from_kafka("t", 0, 0, [("md.seq", b"x")], None)
    assert (garbled.subject, garbled.position) == (None, None)
