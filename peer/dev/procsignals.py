"""Signals and run directories for commands that start and stop many processes (the demo, the
chaos harness): SIGTERM/SIGHUP end the work like Ctrl-C does, a second signal during the
clean-up cannot leave half of the processes running, and old run directories are pruned.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType


class StopSignal(BaseException):
    """SIGTERM or SIGHUP asked to stop ("stopped by signal NAME").

    Raised wherever the main thread happens to be, so, like KeyboardInterrupt, it is not an
    ``Exception``: the ``except Exception`` (or ``except MdpeerError``) around the call it
    interrupts must not take it for that call's failure and carry on (docs/RELIABILITY.md,
    finding 13).
    """


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM/SIGHUP raise :class:`StopSignal`; SIGINT raises KeyboardInterrupt even when it
    came in ignored (a background job)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise StopSignal(f"stopped by signal {signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """While cleaning up: a second Ctrl-C must not leave half of the processes running."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def fresh_run_dir(base: Path, keep: int, suffix: str = "") -> Path:
    """A new ``run-<time><suffix>`` path under ``base``; only the ``keep - 1`` newest old runs
    are kept (not created: the caller does)."""
    base.mkdir(parents=True, exist_ok=True)
    runs = sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("run-"))
    for old in runs[: max(len(runs) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return base / time.strftime(f"run-%Y%m%d-%H%M%S{suffix}")


__all__ = ["StopSignal", "fresh_run_dir", "signals_ignored", "signals_raise"]
