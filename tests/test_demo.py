"""``mdpeer demo`` end to end: a real local Kafka, the reference server and real peers.

The demo runs as a subprocess through a tiny typer app holding only ``demo`` (the same
command the root app registers), with piped output, so its view degrades to plain lines.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from peer.dev.demo.orchestrate import DemoError, DemoOptions
from peer.dev.demo.summary import DemoResult
from peer.dev.demo.view import DemoStatus, PeerRow, View
from peer.testing import alive, wait_until
from peer.testing.verdict import Delivered, judge

_APP = (
    "import typer\n"
    "from peer.cli.demo_cmd import register\n"
    "app = typer.Typer()\n"
    "register(app)\n"
    "@app.callback()\n"
    "def main() -> None:\n"
    "    pass\n"
    "app()\n"
)


def _demo_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", _APP, "demo", *args]


def _env() -> dict[str, str]:
    # the demo starts its own Kafka; a test session's MDPEER_BOOTSTRAP must not leak in.
    # PYTHONFAULTHANDLER: a demo that hangs prints every thread's stack on SIGABRT.
    env = {k: v for k, v in os.environ.items() if k != "MDPEER_BOOTSTRAP"}
    return {**env, "PYTHONFAULTHANDLER": "1"}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """The demo's ``--run-dir``, where it records the processes it started (pids.json)."""
    return tmp_path / "run"


def _wait_gone(pids: list[int], timeout: float) -> None:
    wait_until(
        lambda: not any(alive(p) for p in pids),
        timeout,
        f"every process the demo started gone (left: {[p for p in pids if alive(p)]})",
    )


def _status() -> DemoStatus:
    return DemoStatus(
        elapsed_s=12.5,
        phase="publishing",
        published={"/server/status1": 10, "/server/status2": 12},
        visible={"topic1": 9, "topic2": 12},
        peers=(PeerRow("demo-1", 11, "ready", (0, 1)), PeerRow("demo-2", 12, "killed", ())),
        group_state="STABLE",
        unowned=(),
        shard_moves=2,
    )


#: what a plain view (its output is no terminal) prints of _status()
PLAIN = [
    "published /server/status1=10 /server/status2=12",
    "visible topic1=9 topic2=12",
    "demo-2[killed]:-",
    "demo-1[ready]:0,1",
]
#: what the live view's tables show of it
TABLES = ["/server/status1 → topic1", "demo-2", "killed", "shard moves 2"]


@pytest.mark.parametrize(
    ("live", "shown"), [(None, PLAIN), (True, TABLES)], ids=["plain-when-not-a-terminal", "live"]
)
def test_the_view_shows_the_status_and_the_events(live: bool | None, shown: list[str]) -> None:
    out = io.StringIO()
    with View(out, live=live) as view:
        view.update(_status(), force=True)  # a plain view prints at once; a live one ignores it
        view.event("SIGKILL demo-2")
    text = out.getvalue()
    for part in [*shown, "SIGKILL demo-2"]:
        assert part in text, part


def test_summary_fails_with_the_reason() -> None:
    def records(subject: str, seqs: list[int]) -> list[Delivered]:
        return [Delivered(subject, 1, seq, partition=0, offset=i) for i, seq in enumerate(seqs)]

    published = {s: [(1, n) for n in range(1, 11)] for s in ("/server/status1", "/server/status2")}
    tenth_twice = [*range(1, 11), 10]
    bad, good = judge(
        published,
        [*records("/server/status1", tenth_twice), *records("/server/status2", [*range(1, 11)])],
    )
    result = DemoResult(checks=[bad, good], caught_up=True)
    assert not result.ok
    lines = result.lines()
    assert any("exactly-once /server/status1" in ln and "duplicates 1" in ln for ln in lines)
    assert lines[-1] == "exactly-once check: FAILED: subjects failing: /server/status1"
    assert DemoResult(checks=[good], caught_up=True).ok
    assert not DemoResult(checks=[good], caught_up=False).ok
    assert not DemoResult(checks=[good], caught_up=True, left_running=[123]).ok


def test_options_are_validated() -> None:
    with pytest.raises(DemoError, match="duration"):
        DemoOptions(duration=0)
    with pytest.raises(DemoError, match="kill_one"):
        DemoOptions(kill_one=True, peers=1)
    assert DemoOptions(duration=30).kill_after() == 10.0


@pytest.mark.kafka
@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_demo_duration_kill_one_exactly_once(run_dir: Path) -> None:
    proc = subprocess.run(
        _demo_argv("--duration", "20", "--kill-one", "--json", "--run-dir", str(run_dir)),
        capture_output=True,
        text=True,
        timeout=400,
        env=_env(),
        check=False,
    )
    tail = proc.stderr[-6000:]
    assert proc.returncode == 0, f"exit {proc.returncode}; stderr:\n{tail}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True, summary
    assert summary["per_topic"]["topic1"] > 0
    assert summary["per_topic"]["topic2"] > 0
    assert summary["killed"] is not None
    checks = {c["subject"]: c for c in summary["checks"]}
    assert set(checks) == {"/server/status1", "/server/status2"}
    for subject, check in checks.items():
        assert check["expected"] > 0, subject
        assert check["delivered"] == check["expected"], check
        assert check["duplicates"] == check["missing"] == check["order_violations"] == 0
    # the human summary (stderr under --json): the lines a person reads
    assert "exactly-once /server/status1: expected" in proc.stderr
    assert "exactly-once /server/status2: expected" in proc.stderr
    assert "exactly-once check: PASSED" in proc.stderr
    # plain periodic lines, not a live table: the output is a pipe
    assert "demo " in proc.stderr
    assert "published /server/status1=" in proc.stderr
    # the killed peer died by SIGKILL; the others stopped cleanly on SIGTERM
    exits = summary["peer_exits"]
    assert exits.pop(summary["killed"]) == -signal.SIGKILL
    assert exits == dict.fromkeys(exits, 0), exits
    assert len(exits) == 2
    # every process it started (3 peers + the broker) is gone, as recorded
    pids = summary["pids"]
    assert len(pids) == 4, pids
    recorded = json.loads((run_dir / "pids.json").read_text())
    assert recorded == pids
    _wait_gone(list(pids.values()), 5.0)


class _Lines:
    """Reads a pipe line by line in a thread (so the child never blocks on a full pipe)."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, needle: str, timeout: float) -> None:
        try:
            wait_until(lambda: any(needle in line for line in list(self.lines)), timeout, needle)
        except AssertionError:
            raise AssertionError(
                f"no {needle!r} within {timeout}s:\n{self.text()[-4000:]}"
            ) from None

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        return "".join(self.lines)


@pytest.mark.kafka
@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_sigterm_stops_everything(run_dir: Path) -> None:
    with subprocess.Popen(
        _demo_argv("--json", "--run-dir", str(run_dir)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    ) as proc:
        try:
            assert proc.stderr is not None
            lines = _Lines(proc.stderr)
            lines.wait_for("publishing 50 msg/s", 240)
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGABRT)
                proc.wait(10)
                lines.join(10)
                pytest.fail(f"the demo still ran 120 s after SIGTERM:\n{lines.text()[-12000:]}")
            lines.join(10)
            assert code == 130, lines.text()[-3000:]
            assert "interrupted (stopped by signal SIGTERM)" in lines.text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    pids = json.loads((run_dir / "pids.json").read_text())
    assert len(pids) == 4, pids
    _wait_gone(list(pids.values()), 5.0)
