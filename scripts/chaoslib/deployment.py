"""The deployment the chaos harness builds: names, the peers' config, the routes, and the
signal handling that makes every exit path clean up."""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

GROUP = "chaos"
AUDIT_TOPIC = "chaos.audit"
TOPICS = ("chaos.a", "chaos.b", "chaos.c")
SESSION_TIMEOUT_MS = 6000
TRANSACTION_TIMEOUT_MS = 10000
KEEP_RUNS = 5


def subjects_of(count: int) -> tuple[str, ...]:
    return tuple(f"/chaos/s{i}" for i in range(1, count + 1))


def routes_toml(subjects: tuple[str, ...]) -> str:
    """Every third subject keyed, the rest keyless (partitioned by subject): both paths of I5.
    ``history`` start: a subject's first owner delivers it from its first message."""
    lines = []
    for i, subject in enumerate(subjects):
        lines += ["[[route]]", f'subject = "{subject}"', f'topic = "{TOPICS[i % len(TOPICS)]}"']
        if i % 3 == 0:
            lines.append(f'key = "k{i}"')
        lines += ['start = "history:1000000"', ""]
    return "\n".join(lines)


def peer_toml(bootstrap: str, sim_port: int) -> str:
    return "\n".join(
        [
            "# written by scripts/chaos.py",
            f'bootstrap = "{bootstrap}"',
            f'group = "{GROUP}"',
            f"session_timeout_ms = {SESSION_TIMEOUT_MS}",
            f"transaction_timeout_ms = {TRANSACTION_TIMEOUT_MS}",
            "commit_interval_ms = 100",
            f'audit_topic = "{AUDIT_TOPIC}"',
            "[source]",
            f'servers = "127.0.0.1:{sim_port}"',
            "poll_idle_max_ms = 200",
            "request_timeout_ms = 5000",
            "",
        ]
    )


def default_run_dir(seed: int) -> Path:
    from peer.localkafka import cache_dir

    base = cache_dir() / "chaos"
    base.mkdir(parents=True, exist_ok=True)
    runs = sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("run-"))
    for old in runs[: max(len(runs) - (KEEP_RUNS - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return base / time.strftime(f"run-%Y%m%d-%H%M%S-{seed}")


class StopRequestedError(Exception):
    pass


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise StopRequestedError(f"stopped by {signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """While cleaning up, a second Ctrl-C must not leave half of the processes running."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
