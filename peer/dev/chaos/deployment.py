"""The deployment the chaos harness builds: names, the peers' config, the routes, and the run
directory."""

from __future__ import annotations

from pathlib import Path

from peer.dev.procsignals import fresh_run_dir
from peer.testing.peer import STANDIN_MODULE

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


#: doorbell mode (--doorbell): the fraction of doorbells the reference server drops
NOTIFY_DROP_RATE = 0.5
SAFETY_INTERVAL = "poll_safety_interval_ms = 5000"


def peer_toml(bootstrap: str, sim_port: int, *, doorbell: bool = False) -> str:
    """``doorbell``: the stand-in client (``PYTHONPATH``: the peers' environment) must ring,
    and an idle subject whose ring was dropped is fetched within 5 s."""
    bell = ['doorbell = "on"', f'doorbell_module = "{STANDIN_MODULE}"', SAFETY_INTERVAL]
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
            *(bell if doorbell else []),
            "",
        ]
    )


def default_run_dir(seed: int) -> Path:
    from peer.dev.localkafka import cache_dir

    return fresh_run_dir(cache_dir() / "chaos", KEEP_RUNS, f"-{seed}")
