"""Run a command that serves until stopped, as the docs test does for a foreground server.

    python tests/docs_until_ready.py READY COMMAND [ARGS...]

A doc may show a server in the foreground (``mdpeer run ... # each peer``): a reader runs
it and stops it with Ctrl-C. The docs test runs it through this: the command starts, its
output passes through, and once it is up it is stopped with SIGTERM, as an operator would.
The exit code is the command's, so a server that fails to start, or does not stop cleanly,
fails the doc. A deadline bounds each wait.

READY says how "up" is known:

* ``/readyz`` (a peer): the command gets a free ``MDPEER_METRICS_PORT`` (on 127.0.0.1) in
  its environment, unless it names ``--metrics-port`` itself, and is up once its ``/readyz``
  says it is ready and works on at least one shard: its state, read where an orchestrator
  reads it, not from its log text;
* any other text (``mdpeer sim serve``): up once a line of its output contains it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from peer.testing import free_port, read_readiness

#: from start until the command is up (a peer joins its group in a few seconds)
READY_DEADLINE_S = 90.0
#: from SIGTERM until it has exited (a peer commits and leaves its group first)
STOP_DEADLINE_S = 30.0
#: READY for a peer: poll its readiness endpoint
READYZ = "/readyz"


def _say(line: str) -> None:
    print(f"docs-until-ready: {line}", file=sys.stderr, flush=True)


def _pump(source: IO[bytes], ready_text: bytes | None, ready: threading.Event) -> None:
    for line in source:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
        if ready_text is not None and ready_text in line:
            ready.set()


def metrics_port_of(command: list[str]) -> int | None:
    """The port a ``--metrics-port N`` (or ``--metrics-port=N``) flag of ``command`` names."""
    for i, word in enumerate(command):
        if word == "--metrics-port" and i + 1 < len(command) and command[i + 1].isdigit():
            return int(command[i + 1])
        if word.startswith("--metrics-port=") and word.split("=", 1)[1].isdigit():
            return int(word.split("=", 1)[1])
    return None


def peer_is_up(port: int) -> Callable[[], bool]:
    def up() -> bool:
        state = read_readiness(port)
        return state is not None and state.ready and bool(state.working)

    return up


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        _say("usage: docs_until_ready.py READY COMMAND [ARGS...]")
        return 2
    ready_spec, command = argv[0], argv[1:]
    env = dict(os.environ)
    up: Callable[[], bool] | None = None
    if ready_spec == READYZ:
        port = metrics_port_of(command)
        if port is None:
            port = free_port()
            env.update(MDPEER_METRICS_PORT=str(port), MDPEER_METRICS_HOST="127.0.0.1")
        up = peer_is_up(port)
        what = f"ready on http://127.0.0.1:{port}/readyz"
    else:
        what = f"printed {ready_spec!r}"
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )
    assert proc.stdout is not None
    ready = threading.Event()
    text = None if up is not None else ready_spec.encode()
    pump = threading.Thread(target=_pump, args=(proc.stdout, text, ready))
    pump.start()
    deadline = time.monotonic() + READY_DEADLINE_S
    while not ready.wait(0.1):
        if up is not None and up():
            ready.set()
            break
        if proc.poll() is not None:
            pump.join()
            if ready.is_set():
                break
            _say(f"{command[0]} exited ({proc.returncode}) before it {what}")
            return proc.returncode or 1
        if time.monotonic() > deadline:
            _say(f"not {what} within {READY_DEADLINE_S:.0f}s; killing it")
            proc.kill()
            proc.wait()
            pump.join()
            return 124
    if proc.poll() is None:
        _say(f"it is up ({what}); stopping it with SIGTERM")
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        _say(f"still running {STOP_DEADLINE_S:.0f}s after SIGTERM; killing it")
        proc.kill()
        proc.wait()
        code = 124
    pump.join()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
