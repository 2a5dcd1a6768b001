"""`mdpeer kafka ...` as an operator runs it: separate processes, a state file in between."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.dev.localkafka import KAFKA_VERSION, free_port_base, resolve_jars
from peer.dev.localkafka.layout import ClusterLayout, State, save_state
from peer.dev.localkafka.process import cmdline
from peer.testing import mdpeer_argv


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*mdpeer_argv(), "kafka", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else clean_env(),
        check=False,
    )


def clean_env(**changes: str | None) -> dict[str, str]:
    """This environment without MDPEER_KAFKA_* settings, plus ``changes`` (None removes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDPEER_KAFKA_")}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert any(ln.strip().startswith("hint: ") for ln in lines), done.stderr
    return errors[0]


def is_kafka(pid: int) -> bool:
    args = cmdline(pid)
    return bool(args) and "kafka.Kafka" in (args or [])


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "kafka"
    yield path
    if (path / "localkafka.json").exists():  # never leave a broker behind, whatever failed
        run("down", "--data-dir", str(path), "--grace", "2")


@pytest.mark.kafka
@pytest.mark.slow
def test_up_status_down_from_separate_processes(data_dir: Path) -> None:
    port = free_port_base(1)
    up = run("up", "--port", str(port), "--data-dir", str(data_dir), "--json")
    assert up.returncode == 0, up.stderr
    started: dict[str, Any] = json.loads(up.stdout)
    assert started["bootstrap"] == f"127.0.0.1:{port}"
    [node] = started["nodes"]
    assert (node["id"], node["port"]) == (1, port)
    assert is_kafka(node["pid"])

    status = run("status", "--data-dir", str(data_dir), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["nodes"] == [
        {"id": 1, "pid": node["pid"], "port": port, "running": True, "answering": True}
    ]

    # A second `up` on the same data dir refuses to start a duplicate.
    assert_one_line_error(
        run("up", "--port", str(port), "--data-dir", str(data_dir)), "already running"
    )

    down = run("down", "--data-dir", str(data_dir))
    assert down.returncode == 0, down.stderr
    assert "node 1: stopped" in down.stderr
    assert not is_kafka(node["pid"])  # `down` returns once the JVM is gone

    after = run("status", "--data-dir", str(data_dir), "--json")
    assert after.returncode == 1
    assert json.loads(after.stdout)["nodes"][0]["running"] is False


@pytest.mark.parametrize("taken", ["client", "controller"])
def test_up_refuses_a_port_in_use(data_dir: Path, taken: str) -> None:
    port = free_port_base(1)
    busy = port if taken == "client" else port + 100
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", busy))
        holder.listen()
        done = run("up", "--port", str(port), "--data-dir", str(data_dir))
    assert_one_line_error(done, f"port {busy}", "in use")
    assert not (data_dir / "localkafka.json").exists()


def test_up_without_java_says_so(tmp_path: Path, data_dir: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = run(
        "up",
        "--port",
        str(free_port_base(1)),
        "--data-dir",
        str(data_dir),
        env=clean_env(PATH=str(empty), JAVA_HOME=None),
    )
    assert_one_line_error(done, "java not found")


def test_install_without_maven_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = clean_env(PATH=str(empty), MDPEER_CACHE_DIR=str(tmp_path / "cache"), KAFKA_HOME=None)
    assert_one_line_error(run("install", env=env), "mvn not found")


def test_install_refuses_a_kafka_home_that_is_not_kafka(tmp_path: Path) -> None:
    env = clean_env(KAFKA_HOME=str(tmp_path))
    assert_one_line_error(run("install", env=env), "KAFKA_HOME=", str(tmp_path))


def test_install_when_cached_needs_no_maven(tmp_path: Path) -> None:
    jars = resolve_jars()  # the suite's cache (scripts/test installs it first)
    java = shutil.which("java")
    assert java is not None, "the suite needs java on PATH"
    only_java = tmp_path / "bin"
    only_java.mkdir()
    (only_java / "java").symlink_to(java)
    started = time.monotonic()
    env = clean_env(PATH=str(only_java), KAFKA_HOME=None, MDPEER_KAFKA_CDS="0")
    done = run("install", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["libs"] == str(jars.libs)
    assert time.monotonic() - started < 30


def test_install_connect_adds_the_connect_runtime_beside_the_broker_jars() -> None:
    env = clean_env(KAFKA_HOME=None, MDPEER_KAFKA_CDS="0")
    plain = run("install", "--json", env=env)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["connect_libs"] is None  # not unless asked
    done = run("install", "--connect", "--json", env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    connect = Path(json.loads(done.stdout)["connect_libs"])
    assert connect != Path(json.loads(done.stdout)["libs"])
    for name in ("connect-runtime", "connect-file", "kafka-clients"):
        assert list(connect.glob(f"{name}-{KAFKA_VERSION}.jar")), name


def test_down_never_signals_a_process_that_is_not_our_broker(data_dir: Path) -> None:
    # A recycled pid: the state file names a process that is not a Kafka we started.
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        data_dir.mkdir()
        state = State(
            ClusterLayout.new(
                nodes=1, port=free_port_base(1), controller_port=None, kafka_version="4"
            )
        )
        state.pids[1] = stranger.pid
        save_state(data_dir, state)
        done = run("down", "--data-dir", str(data_dir))
        assert done.returncode == 0, done.stderr
        assert "no local Kafka was running" in done.stderr
        assert stranger.poll() is None  # still alive: it was not signalled
    finally:
        stranger.send_signal(signal.SIGKILL)
        stranger.wait()
