"""Broker processes: start, recognise, signal, probe, and read the tail of their logs."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from peer.dev.localkafka.layout import HOST, NodeSpec, PortInUseError
from peer.errors import LocalKafkaError

MAIN_CLASS: Final = "kafka.Kafka"
STORAGE_TOOL: Final = "kafka.tools.StorageTool"

# librdkafka logs every refused connection while a broker is still starting; the probes
# expect that, so their clients log into a logger that goes nowhere.
_quiet = logging.getLogger("peer.dev.localkafka.probe")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


class NodeNotReadyError(LocalKafkaError):
    """A node did not answer a metadata request in time, or its JVM exited."""

    def __init__(
        self,
        node_id: int,
        reason: str,
        log_path: Path,
        tail: list[str],
        *,
        hint: str = "the log lines above say why; `mdpeer kafka up --fresh` starts from "
        "empty storage",
    ) -> None:
        self.node_id = node_id
        self.log_path = log_path
        self.tail = tail
        shown = "\n".join(f"  | {line}" for line in tail) or "  | (the log is empty)"
        super().__init__(
            f"Kafka node {node_id} {reason}; last lines of {log_path}:\n{shown}",
            hint=hint,
        )


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node as ``status`` reports it."""

    id: int
    port: int
    controller_port: int
    pid: int | None
    #: its JVM is alive (and is the broker we started)
    running: bool
    #: it answered a metadata request and is a registered broker
    answering: bool


def jvm_command(
    java: str,
    classpath: str,
    *,
    heap_mb: int,
    logs_dir: Path,
    log4j_config: Path,
    extra: Sequence[str] = (),
) -> list[str]:
    """The JVM part of a broker command line (main class and config path follow).

    ``extra`` comes last, so it overrides (e.g. ``-XX:TieredStopAtLevel=4`` for full JIT).
    """
    return [
        java,
        f"-Xmx{heap_mb}m",
        f"-Xms{min(heap_mb, 128)}m",
        # A small heap on a small machine: the serial collector starts fastest and uses
        # no GC threads; tests care about start-up, not pause times.
        "-XX:+UseSerialGC",
        # C1 only: a third less CPU to start on 2 cores (3 nodes: ~7 s instead of ~10 s);
        # plenty for tests and demos. MDPEER_KAFKA_JVM_OPTS can turn C2 back on.
        "-XX:TieredStopAtLevel=1",
        "-XX:+ExitOnOutOfMemoryError",
        "-XX:-UsePerfData",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={logs_dir}",
        f"-Dlog4j2.configurationFile={log4j_config}",
        *extra,
        "-cp",
        classpath,
    ]


def spawn(
    command: Sequence[str], *, stdout_log: Path, tie_to_parent: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session (a Ctrl-C in the shell does not reach it).

    ``tie_to_parent``: on Linux, the process gets SIGKILL when this one dies, so a crashed
    test run leaves no broker behind. util-linux ``setpriv`` sets that and then execs the
    command (same pid); a ``preexec_fn`` would do the same but is unsafe with librdkafka's
    threads running in this process.
    """
    stdout_log.parent.mkdir(parents=True, exist_ok=True)
    prefix: list[str] = []
    if tie_to_parent and sys.platform == "linux":
        setpriv = shutil.which("setpriv")
        if setpriv:
            prefix = [setpriv, "--pdeathsig", "KILL", "--"]
    with stdout_log.open("ab") as out:
        return subprocess.Popen(
            [*prefix, *command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def cmdline(pid: int) -> list[str] | None:
    """The command line of ``pid``, or None when it does not exist (or is a zombie)."""
    if Path("/proc/self").is_dir():
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        # An empty cmdline is a zombie (or a kernel thread): not a running broker.
        return raw.rstrip(b"\0").decode(errors="replace").split("\0") if raw else None
    out = subprocess.run(  # no /proc (macOS): ask ps; paths with spaces split, which is fine
        ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return out.stdout.split() if out.returncode == 0 and out.stdout.strip() else None


def is_our_broker(pid: int, config: Path) -> bool:
    """Whether ``pid`` is a live JVM running :data:`MAIN_CLASS` with our config file.

    Pids are recycled: this check is what keeps ``down`` from signalling a stranger.
    """
    args = cmdline(pid)
    if not args:
        return False
    return MAIN_CLASS in args and str(config) in args and "java" in Path(args[0]).name


def signal_pid(pid: int, sig: signal.Signals) -> bool:
    """Send ``sig``; False when the process is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_gone(
    pid: int, config: Path, deadline: float, proc: subprocess.Popen[bytes] | None = None
) -> bool:
    """Wait until ``pid`` no longer runs our broker; reap it when it is our child."""
    while True:
        if proc is not None and proc.poll() is not None:
            return True
        if proc is None and not is_our_broker(pid, config):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_pid(
    pid: int, config: Path, *, grace: float, proc: subprocess.Popen[bytes] | None = None
) -> str:
    """SIGTERM, then SIGKILL after ``grace`` seconds. Returns how it ended.

    "not running": nothing of ours had that pid; "stopped": it exited on SIGTERM;
    "killed": it needed SIGKILL.
    """
    if not is_our_broker(pid, config) and (proc is None or proc.poll() is not None):
        return "not running"
    signal_pid(pid, signal.SIGTERM)
    if wait_gone(pid, config, time.monotonic() + grace, proc):
        return "stopped"
    kill_pid(pid, config, proc=proc)
    return "killed"


def kill_pid(
    pid: int, config: Path, *, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10.0
) -> bool:
    """SIGKILL our broker and wait until it is gone. False when it was not running."""
    if not is_our_broker(pid, config) and (proc is None or proc.poll() is not None):
        return False
    signal_pid(pid, signal.SIGKILL)
    wait_gone(pid, config, time.monotonic() + timeout, proc)
    return True


def log_tail(paths: Sequence[Path], lines: int = 20) -> list[str]:
    """The last ``lines`` lines of the first of ``paths`` that has any."""
    for path in paths:
        with contextlib.suppress(OSError), path.open("r", errors="replace") as fh:
            tail = [ln.rstrip("\n") for ln in collections.deque(fh, maxlen=lines)]
            if tail:
                return tail
    return []


def first_error(path: Path, start: int = 0, limit: int = 300) -> str | None:
    """The first ERROR/FATAL message of a Kafka log after byte ``start`` (+ its exception)."""
    with contextlib.suppress(OSError), path.open("r", errors="replace") as fh:
        fh.seek(start)
        lines = iter(fh)
        for line in lines:
            if " ERROR " in line or " FATAL " in line:
                # '[time] ERROR message (logger)': keep the message
                text = line.split("] ", 1)[-1].strip()
                after = next(lines, "").strip()
                # Kafka often logs a generic line, then the exception that says why.
                if (
                    after
                    and not after.startswith("[")
                    and ("Exception" in after or "Error" in after)
                ):
                    text = f"{text}: {after}"
                return text if len(text) <= limit else text[: limit - 3] + "..."
    return None


def not_ready_error(
    node: NodeSpec, logs_dir: Path, reason: str, *, log_start: int = 0, hint: str | None = None
) -> LocalKafkaError:
    """Why ``node`` is not ready, from its logs: the first ERROR and the last lines.

    A port taken between the check and the JVM's bind is a :class:`PortInUseError`, so
    callers may retry on other ports.
    """
    server_log, stdout_log = logs_dir / "server.log", logs_dir / "stdout.log"
    error = first_error(server_log, log_start)
    if error and ("Address already in use" in error or "BindException" in error):
        return PortInUseError(node.port, f"client, controller or internal port of node {node.id}")
    if error:
        reason = f"{reason}: {error}"
    extra = {"hint": hint} if hint else {}
    tail = log_tail([server_log], 20)
    if not tail:  # died before log4j started (bad JVM flag, missing class): JVM output
        tail, server_log = log_tail([stdout_log]), stdout_log
    return NodeNotReadyError(node.id, reason, server_log, tail, **extra)


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``HOST:port``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def metadata_brokers(
    bootstrap: str, timeout: float, login: Mapping[str, str] | None = None
) -> set[int] | None:
    """Broker ids in a metadata response from ``bootstrap``, or None when none arrived.

    ``login``: client settings that log in to a secured cluster (TLS, SASL), or none.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            **(login or {}),
            "bootstrap.servers": bootstrap,
            "socket.connection.setup.timeout.ms": 2000,
        },
        logger=_quiet,
    )
    try:
        md = admin.list_topics(timeout=max(timeout, 0.1))
    except KafkaException:
        return None
    return {int(b) for b in md.brokers}
