"""One benchmark run of ``scripts/bench.py`` or ``scripts/bench_peer.py``: the broker it
measures on, the signals that end it, and the record of where, how and how long it ran."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from peer.dev.bench import log
from peer.dev.bench.stats import machine
from peer.dev.localkafka import start_on_free_ports


@dataclass(frozen=True)
class Broker:
    """The run's Kafka and a scratch directory (peer configs)."""

    bootstrap: str
    work: Path

    @property
    def admin(self) -> AdminClient:
        """A new admin client, for one use: none outlives its part and logs the broker's
        stop as a failure."""
        return AdminClient({"bootstrap.servers": self.bootstrap})


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP become SystemExit, so every ``finally`` runs and stops its
    processes (the broker, the reference servers, peers, the Java tool)."""

    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, _exit)


@contextlib.contextmanager
def local_broker(prefix: str) -> Iterator[Broker]:
    """A fresh 1-node Kafka in a temporary directory, stopped on every exit path, a signal's
    too (:func:`exit_on_signals`)."""
    exit_on_signals()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        cluster = start_on_free_ports(work / "kafka", 1)
        try:
            log(f"kafka at {cluster.bootstrap}")
            yield Broker(cluster.bootstrap, work)
        finally:
            cluster.stop()


@contextlib.contextmanager
def recorded(doc: dict[str, Any], script: str, argv: list[str] | None) -> Iterator[None]:
    """Where and how the run is made (the machine, its load, the command, the start) into
    ``doc``, then after the block the load and the wall time it took."""
    doc.update(
        {
            "machine": machine(),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()],
            "command": " ".join([f"uv run python {script}", *(argv or sys.argv[1:])]),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    t_start = time.monotonic()
    yield
    doc["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    doc["wall_s"] = round(time.monotonic() - t_start, 1)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


__all__ = ["Broker", "exit_on_signals", "local_broker", "recorded", "write_json"]
