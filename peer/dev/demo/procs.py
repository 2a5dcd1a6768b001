"""The demo's child processes: ``mdpeer run`` peers and the checks that nothing is left."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: a peer SIGTERMed gets this long to commit and leave before it is killed
PEER_STOP_GRACE_S: Final = 20.0


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


def mdpeer_argv() -> list[str]:
    """This installation's ``mdpeer`` (next to the interpreter), independent of PATH."""
    script = Path(sys.executable).with_name("mdpeer")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from peer.cli import app; app()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


# --- the peers --------------------------------------------------------------------------------


@dataclass
class PeerProc:
    peer_id: str
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path
    killed: bool = False
    terminated: bool = False

    def state(self) -> str:
        code = self.proc.poll()
        if self.killed:
            return "killed"
        if code is not None:
            return f"exited {code}"
        return "ready" if _http_ok(f"http://127.0.0.1:{self.metrics_port}/readyz") else "starting"

    def terminate(self) -> None:
        """SIGTERM once: a second one would cut short the peer's own shutdown."""
        if not self.terminated and self.proc.poll() is None:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM (commit, leave the group); SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(PEER_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def spawn_peer(run_dir: Path, config: Path, peer_id: str) -> PeerProc:
    port = free_port()
    log = run_dir / f"{peer_id}.log"
    prefix: list[str] = []
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    if setpriv:
        prefix = [setpriv, "--pdeathsig", "KILL", "--"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDPEER_")}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                *prefix,
                *mdpeer_argv(),
                "run",
                "--config",
                str(config),
                "--peer-id",
                peer_id,
                "--metrics-port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            # its own session: a Ctrl-C in the terminal reaches only the demo, which then
            # stops the peers in order
            start_new_session=True,
        )
    return PeerProc(peer_id, proc, port, log)
