"""The reference MigratoryData server as a real process: ``mdpeer sim serve --port 0``.

In its own process its CPU is its own (benchmarks read it from /proc) and it can be killed
like a server crash (failover tests). Its first stdout line says where it listens; the rest
of stdout is kept in :attr:`SimProcess.stdout_lines`, stderr goes to its log.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Final

from peer.testing.net import http_json
from peer.testing.process import ManagedProcess, mdpeer_argv
from peer.testing.wait import wait_until

_PREFIX: Final = "listening on "


class SimStartError(RuntimeError):
    """``mdpeer sim serve`` did not say where it listens (the message carries its log)."""


class SimAdminError(OSError):
    """An admin call answered an error status (an OSError, like a transport failure: callers
    that retry on one retry on the other)."""


class SimProcess(ManagedProcess):
    """``mdpeer sim serve --port PORT *args``; ``env`` adds settings (``MDPEER_SIM_*``).

    ``port`` 0 picks a free one; a restart after a kill passes the port the killed one had.
    """

    def __init__(
        self,
        *args: str,
        port: int = 0,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        start_timeout: float = 30.0,
        grace: float = 15.0,
    ) -> None:
        super().__init__(
            [*mdpeer_argv(), "sim", "serve", "--port", str(port), *args],
            name="sim",
            log=log,
            env=env,
            grace=grace,
            pipe_stdout=True,
        )
        #: every stdout line, the first included (it prints only that one)
        self.stdout_lines: list[str] = []
        first: queue.Queue[str] = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None
        # A reader thread: the pipe never fills (blocking the server), and the first line
        # is waited for with a deadline.
        self._reader = threading.Thread(
            target=self._read, args=(stdout, first), name="sim-stdout", daemon=True
        )
        self._reader.start()
        try:
            line = first.get(timeout=start_timeout)
        except queue.Empty:
            line = ""
        if not line.startswith(_PREFIX):
            self.failed = True
            self.close()
            raise SimStartError(
                f"mdpeer sim serve did not print its address within {start_timeout:g}s "
                f"(first line {line!r}); log {self.log}:\n{self.logs()[-2000:]}"
            )
        self.url = line[len(_PREFIX) :].strip()

    def _read(self, stdout: IO[bytes], first: queue.Queue[str]) -> None:
        for raw in stdout:
            line = raw.decode("utf-8", "replace")
            if not self.stdout_lines:
                first.put(line)
            self.stdout_lines.append(line)
        if not self.stdout_lines:
            first.put("")  # it exited without a word: do not make the caller wait

    def _after_close(self) -> None:
        self._reader.join(5)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def hostport(self) -> str:
        """``127.0.0.1:PORT``, as a peer's ``servers`` setting takes it."""
        return self.url.split("://", 1)[1]

    def stop(self, grace: float | None = None) -> int:
        code = super().stop(grace)
        self._reader.join(5)  # every stdout line is in once it has exited
        return code

    def interrupt(self, sig: int = signal.SIGINT) -> int:
        """Send ``sig`` once (SIGINT: a Ctrl-C; SIGTERM: as :meth:`stop`) and wait its grace;
        forced after that. The exit code."""
        if sig == signal.SIGTERM:
            return self.stop()
        self.signal(sig)
        try:
            code = self.proc.wait(self.grace)
        except subprocess.TimeoutExpired:
            code = self.force()
        self._reader.join(5)
        return code

    # -- the admin API -----------------------------------------------------------------------

    def admin(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> Any:
        """An admin call (``path`` with its query); the JSON answer. Error statuses raise
        :class:`SimAdminError`."""
        status, answer = http_json(method, self.url + path, body=body, timeout=timeout)
        if not 200 <= status < 300:
            raise SimAdminError(f"{method} {path} answered {status}: {answer}")
        return answer

    def state(self, subject: str | None = None) -> dict[str, Any]:
        query = "" if subject is None else "?" + urllib.parse.urlencode({"subject": subject})
        state: dict[str, Any] = self.admin("GET", "/admin/state" + query)
        return state

    def set_fault(self, name: str, value: float) -> None:
        self.admin("POST", "/admin/faults", {name: int(value) if name == "latency_ms" else value})

    def generate(
        self, prefix: str, count: int, rate: float, size: int, total: int | None = None
    ) -> None:
        """Start the server's own generator: ``count`` subjects ``prefix/1..``, ``rate``
        messages/s in all (0: as fast as it can), ``total`` messages (None: until stopped)."""
        spec = {"prefix": prefix, "count": count, "rate": rate, "size": size, "total": total}
        self.admin("POST", "/admin/generate", spec, timeout=60)

    def generator(self) -> dict[str, Any]:
        return dict(self.admin("GET", "/admin/generate", timeout=60)["generator"])

    def wait_generated(self, timeout: float) -> None:
        wait_until(lambda: not self.generator()["running"], timeout, "the generator", step=0.2)

    def stop_generator(self) -> None:
        """Stop the generator if it runs (best effort: the server may be gone already)."""
        if self.alive():
            with contextlib.suppress(OSError):
                self.admin("DELETE", "/admin/generate")


__all__ = ["SimAdminError", "SimProcess", "SimStartError"]
