"""Run a command that serves until stopped, as the docs test does for a foreground server.

    python tests/docs_until_ready.py READY_TEXT COMMAND [ARGS...]

A doc may show a server in the foreground (``mdpeer run ... # each peer``): a reader runs
it and stops it with Ctrl-C. The docs test runs it through this: the command starts, its
output passes through, and once a line of it contains READY_TEXT it is stopped with
SIGTERM, as an operator would. The exit code is the command's, so a server that fails to
start, or does not stop cleanly, fails the doc. A deadline bounds each wait.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import IO

#: from start until the command says it is up (a peer joins its group in a few seconds)
READY_DEADLINE_S = 90.0
#: from SIGTERM until it has exited (a peer commits and leaves its group first)
STOP_DEADLINE_S = 30.0


def _say(line: str) -> None:
    print(f"docs-until-ready: {line}", file=sys.stderr, flush=True)


def _pump(source: IO[bytes], ready_text: bytes, ready: threading.Event) -> None:
    for line in source:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
        if ready_text in line:
            ready.set()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        _say("usage: docs_until_ready.py READY_TEXT COMMAND [ARGS...]")
        return 2
    ready_text, command = argv[0], argv[1:]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    ready = threading.Event()
    pump = threading.Thread(target=_pump, args=(proc.stdout, ready_text.encode(), ready))
    pump.start()
    deadline = time.monotonic() + READY_DEADLINE_S
    while not ready.wait(0.1):
        if proc.poll() is not None:
            pump.join()
            if ready.is_set():
                break
            _say(f"{command[0]} exited ({proc.returncode}) before printing {ready_text!r}")
            return proc.returncode or 1
        if time.monotonic() > deadline:
            _say(f"{ready_text!r} not printed within {READY_DEADLINE_S:.0f}s; killing it")
            proc.kill()
            proc.wait()
            pump.join()
            return 124
    if proc.poll() is None:
        _say(f"it is up ({ready_text!r}); stopping it with SIGTERM")
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
