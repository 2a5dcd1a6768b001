"""The base of every process that tests, benchmarks, the demo and the chaos harness start.

One way to run a child, so that all of them behave the same:

* its own session and process group: a Ctrl-C in the terminal reaches only the parent, which
  then stops its children in order;
* on Linux, tied to the parent (``setpriv --pdeathsig KILL``, util-linux): even a SIGKILL of
  the parent leaves nothing running. The signal fires when the *thread* that started the child
  ends, so children are started from long-lived threads (the main one, in practice);
* a scrubbed environment: the parent's ``MDPEER_*`` must not become the child's settings
  (only what the caller passes does), and ``PYTHONFAULTHANDLER=1``, so a child that hangs can
  be made to print its Python stacks (SIGABRT) before it is killed;
* stopped with SIGTERM, then after a grace SIGABRT (stacks into its log), then SIGKILL;
* stdout and stderr go to a log file: the caller's (kept), or a temporary one that is
  deleted at :meth:`ManagedProcess.close` unless the run failed or ``MDPEER_TEST_LOG_DIR`` is
  set, which then gets a copy (to read a failed CI run's logs).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Self

from peer.testing.wait import WaitTimeoutError

#: a directory that receives a copy of every temporary child log (CI sets it)
KEEP_LOGS_ENV: Final = "MDPEER_TEST_LOG_DIR"
#: after SIGABRT, how long a child gets to print its stacks before SIGKILL
ABORT_WAIT_S: Final = 5.0
#: how long a SIGKILLed child takes to be reaped at most (the kernel is quick; a bound anyway)
KILL_WAIT_S: Final = 10.0


def mdpeer_argv() -> list[str]:
    """This installation's ``mdpeer`` (next to the interpreter), independent of PATH."""
    script = Path(sys.executable).with_name("mdpeer")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from peer.cli import app; app()"]


def run_mdpeer(args: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """One ``mdpeer`` command run to its end in a scrubbed environment, its output captured as
    text; the exit code is the caller's to judge (``subprocess.TimeoutExpired`` past
    ``timeout``)."""
    return subprocess.run(
        [*mdpeer_argv(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        check=False,
    )


def tied_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL --`` on Linux when util-linux has it, else nothing."""
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ``MDPEER_*``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDPEER_")}
    env["PYTHONFAULTHANDLER"] = "1"
    env.update(extra or {})
    return env


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        with contextlib.suppress(OSError):
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) from /proc; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid``'s live threads by role, from /proc (``schedstat``): ``main``
    (the thread whose id is the process's), ``librdkafka`` (threads named ``rdk:*``) and
    ``other`` (the rest: a peer's REST source thread above all). {} once it is gone."""
    out = {"main": 0.0, "librdkafka": 0.0, "other": 0.0}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        task = Path(f"/proc/{pid}/task/{tid}")
        try:
            name = (task / "comm").read_text().strip()
            ns = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        role = "main" if int(tid) == pid else "librdkafka" if name.startswith("rdk:") else "other"
        out[role] += ns / 1e9
    return out


def memory_mb(pid: int) -> dict[str, float]:
    """``rss_mb`` (now) and ``hwm_mb`` (peak) of ``pid`` from /proc/<pid>/status; {} if gone."""
    out: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out["rss_mb" if name == "VmRSS" else "hwm_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return out


class ChildExitedError(AssertionError):
    """A child that should be running has exited (the message carries its log's tail)."""


class ManagedProcess:
    """A child process this process owns: started, signalled, stopped and logged one way.

    ``log``: the caller's file (appended to, never deleted), or None for a temporary one.
    ``grace``: how long :meth:`stop` waits after SIGTERM. ``pipe_stdout``: stdout is a pipe the
    subclass reads (stderr still goes to the log).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        grace: float = 20.0,
        tie: bool = True,
        pipe_stdout: bool = False,
    ) -> None:
        self.name = name
        self.grace = grace
        self.argv = list(argv)
        self._own_log = log is None
        if log is None:
            fd, path = tempfile.mkstemp(prefix=f"mdpeer-{_safe(name)}-", suffix=".log")
            os.close(fd)
            log = Path(path)
        self.log = log
        #: SIGTERM was sent (once: a second one would cut a peer's own shutdown short)
        self.terminated = False
        #: it had to be SIGABRTed / SIGKILLed after its grace
        self.forced = False
        #: the run went wrong: its temporary log is kept (see :meth:`close`)
        self.failed = False
        self._closed = False
        with self.log.open("ab") as out:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                [*(tied_prefix() if tie else []), *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdout else out,
                stderr=out,
                env=child_env(env),
                start_new_session=True,
            )

    # -- state -----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise :class:`ChildExitedError` (with its log's tail) if it has exited."""
        code = self.proc.poll()
        if code is not None:
            self.failed = True
            raise ChildExitedError(f"{self.name} exited {code}; log:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        """Everything it wrote so far."""
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_entries(self, msg: str) -> list[dict[str, Any]]:
        """Its JSON log entries whose ``msg`` is ``msg``, oldest first: for checking what it
        logs, or a value it reports only there. Never a way to learn its state."""
        out: list[dict[str, Any]] = []
        needle = json.dumps(msg)
        for line in self.logs().splitlines():
            if line.startswith("{") and needle in line:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict) and entry.get("msg") == msg:
                        out.append(entry)
        return out

    # -- signals -----------------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        """Send ``sig`` if it still runs (a reaped pid may be someone else's)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def terminate(self) -> None:
        """SIGTERM once, without waiting (resumed first: a stopped process cannot act on it)."""
        if not self.terminated and self.proc.poll() is None:
            self.terminated = True
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """Its exit code; :class:`WaitTimeoutError` (with its log's tail) if it runs on."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.failed = True
            raise WaitTimeoutError(
                f"{self.name} did not exit within {timeout:g}s; log:\n{self.logs()[-3000:]}"
            ) from None

    def stop(self, grace: float | None = None) -> int:
        """SIGTERM, wait ``grace`` (default: the process's), then :meth:`force`; the exit code
        (negative: the signal that ended it)."""
        self.terminate()
        try:
            return self.proc.wait(self.grace if grace is None else grace)
        except subprocess.TimeoutExpired:
            return self.force()

    def force(self) -> int:
        """SIGABRT (Python prints every thread's stack into the log first), then SIGKILL."""
        self.forced = self.failed = True
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGABRT)
        try:
            return self.proc.wait(ABORT_WAIT_S)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """SIGKILL (as a crash would) and reap; the exit code."""
        self.signal(signal.SIGKILL)
        return self.proc.wait(KILL_WAIT_S)

    # -- the end ---------------------------------------------------------------------------

    def close(self, *, failed: bool = False) -> None:
        """Kill it if it still runs; keep or remove its log (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.proc.poll() is None:
            self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._after_close()
        self.failed = self.failed or failed
        keep = os.environ.get(KEEP_LOGS_ENV)
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copyfile(self.log, Path(keep) / f"{_safe(self.name)}-{self.pid}.log")
        if not self._own_log:
            return
        if self.failed:
            # a failed test shows its captured stderr: the path is there
            print(f"log of {self.name} kept: {self.log}", file=sys.stderr, flush=True)
        else:
            self.log.unlink(missing_ok=True)

    def _after_close(self) -> None:
        """For subclasses: release what they hold once the process is gone."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(failed=exc_type is not None)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


__all__ = [
    "ABORT_WAIT_S",
    "KEEP_LOGS_ENV",
    "ChildExitedError",
    "ManagedProcess",
    "alive",
    "child_env",
    "cpu_seconds",
    "mdpeer_argv",
    "memory_mb",
    "run_mdpeer",
    "thread_cpu_seconds",
    "tied_prefix",
]
