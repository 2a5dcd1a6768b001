"""The processes a benchmark drives: the reference server, peers; waits and /proc readings."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

#: the ``mdpeer`` console script of the interpreter running the benchmark (same venv)
MDPEER = str(Path(sys.executable).with_name("mdpeer"))


def log(text: str) -> None:
    """Progress on stderr, time-stamped (stdout is kept for the results table)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def wait_until(cond: Callable[[], object], timeout: float, what: str, step: float = 0.05) -> float:
    """Wait for ``cond()``; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)
    return time.monotonic()


def stop_process(proc: subprocess.Popen[Any], *, term_wait: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it lingers; always reaps."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(term_wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


# --- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


# --- the reference server --------------------------------------------------------------------


class SimProcess:
    """``mdpeer sim serve --port 0`` in its own process (its CPU is its own)."""

    def __init__(self, *args: str) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [MDPEER, "sim", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"sim serve did not start: {line!r}")
        self.url = line.split()[-1]
        self.hostport = self.url.split("://", 1)[1]

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def generate(self, prefix: str, count: int, rate: float, size: int, total: int | None) -> None:
        spec = {"prefix": prefix, "count": count, "rate": rate, "size": size, "total": total}
        self.admin("POST", "/admin/generate", spec)

    def generator(self) -> dict[str, Any]:
        return dict(self.admin("GET", "/admin/generate")["generator"])

    def wait_generated(self, timeout: float) -> None:
        wait_until(lambda: not self.generator()["running"], timeout, "the generator", 0.2)

    def stop_generator(self) -> None:
        with contextlib.suppress(Exception):
            self.admin("DELETE", "/admin/generate")

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


# --- peers -----------------------------------------------------------------------------------


class PeerProcess:
    """One ``mdpeer run``; its JSON logs (stderr) go to a temp file that is parsed on demand."""

    def __init__(self, config: Path, peer_id: str) -> None:
        self.peer_id = peer_id
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MDPEER_")}
        self.proc = subprocess.Popen(
            [MDPEER, "run", "--config", str(config), "--peer-id", peer_id],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=env,
        )

    def logs(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def entries(self, msg: str) -> list[dict[str, Any]]:
        """The JSON log entries whose ``msg`` is ``msg``, oldest first."""
        out = []
        needle = json.dumps(msg)
        for line in self.logs().splitlines():
            if line.startswith("{") and needle in line:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("msg") == msg:
                        out.append(entry)
        return out

    def owned(self) -> set[int]:
        owned: set[int] = set()
        for line in self.logs().splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            msg = entry.get("msg")
            if msg == "shards assigned":
                owned = set(entry["owned"])
            elif msg in ("shards revoked", "shards lost"):
                owned -= set(entry["shards"])
        return owned

    def last_rebuild_s(self) -> float | None:
        assigned = self.entries("shards assigned")
        return assigned[-1].get("rebuild_s") if assigned else None

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"peer {self.peer_id} exited {self.proc.returncode}:\n{self.logs()[-2000:]}"
            )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def split_evenly(peers: list[PeerProcess], shards: int) -> bool:
    """Whether ``peers`` (all alive) own every shard between them, each some, none twice."""
    owned = []
    for peer in peers:
        peer.check_alive()
        owned.append(peer.owned())
    union: set[int] = set().union(*owned)
    return all(owned) and len(union) == shards and sum(map(len, owned)) == shards
