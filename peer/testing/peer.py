"""A peer as a real process (``mdpeer run``), whose state is read from its ``/readyz``.

Every peer started here serves ``/metrics``, ``/healthz`` and ``/readyz`` on a free loopback
port (``MDPEER_METRICS_PORT`` and ``MDPEER_METRICS_HOST`` in its environment, which win over
its config file; a ``--metrics-port`` flag would win over both, so none is passed). What a
peer owns, rebuilds or has stopped is what ``/readyz`` says, never what its log text says:
the log is for people, ``/readyz`` is the interface an orchestrator reads too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from peer.testing.net import free_port, http_get
from peer.testing.process import ManagedProcess, mdpeer_argv

#: the stand-in of MigratoryData's client (issue #16; our own notification channel, not the
#: vendor's protocol): in a source checkout only, as the tests, chaos runs and benchmarks use it
STANDIN_DIR: Final = Path(__file__).resolve().parents[2] / "tests" / "standin"
STANDIN_MODULE: Final = "mdclient_standin"


def doorbell_env(**settings: object) -> dict[str, str]:
    """A peer's environment for doorbell mode with the stand-in client; ``settings`` add
    ``MDPEER_<NAME>`` values (``poll_safety_interval_ms=2000``)."""
    env = {
        "PYTHONPATH": str(STANDIN_DIR),
        "MDPEER_DOORBELL": "on",
        "MDPEER_DOORBELL_MODULE": STANDIN_MODULE,
    }
    env.update({f"MDPEER_{name.upper()}": str(value) for name, value in settings.items()})
    return env


@dataclass(frozen=True, slots=True)
class Readiness:
    """A peer's ``/readyz`` body. It answers 503 while not ready, with the same body."""

    ready: bool
    owned_shards: frozenset[int]
    rebuilding: frozenset[int]
    blocked: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None

    @property
    def working(self) -> frozenset[int]:
        """The shards it owns *and* works on: assigned and rebuilt (fetching, committing)."""
        return self.owned_shards - self.rebuilding

    def blocked_subjects(self) -> dict[str, str]:
        """subject -> reason of the subjects it has stopped (the first ones it lists)."""
        return {e["subject"]: e["reason"] for e in self.blocked.get("subjects", [])}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Readiness:
        reason = body.get("reason")
        return cls(
            ready=body.get("ready") is True,
            owned_shards=frozenset(int(s) for s in body.get("owned_shards", ())),
            rebuilding=frozenset(int(s) for s in body.get("rebuilding", ())),
            blocked=dict(body.get("blocked") or {}),
            source=dict(body.get("source") or {}),
            reason=reason if isinstance(reason, str) else None,
        )


def read_readiness(port: int, host: str = "127.0.0.1") -> Readiness | None:
    """``/readyz`` of the peer on ``host:port``; None while it does not answer (starting,
    paused, gone) or answers something that is not its JSON."""
    status, body = http_get(f"http://{host}:{port}/readyz")
    if status not in (200, 503) or not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return Readiness.from_json(data) if isinstance(data, dict) else None


def metric(text: str, name_and_labels: str) -> float:
    """The value of one sample (``name{labels}``, labels in any order) of a Prometheus text
    page, or 0 when the page lacks it; both are read by the client library's parser."""
    (wanted,) = (
        s for f in text_string_to_metric_families(name_and_labels + " 0\n") for s in f.samples
    )
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == wanted.name and sample.labels == wanted.labels:
                return float(sample.value)
    return 0.0


class PeerProcess(ManagedProcess):
    """``mdpeer run --config CONFIG --peer-id ID``, with a metrics port of its own.

    ``env`` adds settings (``MDPEER_*``); one that names ``MDPEER_METRICS_PORT`` picks the port.
    ``grace``: how long :meth:`stop` waits after SIGTERM for it to commit and leave.
    """

    def __init__(
        self,
        config: Path,
        peer_id: str,
        *,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        grace: float = 30.0,
        args: Sequence[str] = (),
    ) -> None:
        settings = dict(env or {})
        settings.setdefault("MDPEER_METRICS_PORT", str(free_port()))
        settings.setdefault("MDPEER_METRICS_HOST", "127.0.0.1")
        self.peer_id = peer_id
        self.metrics_port = int(settings["MDPEER_METRICS_PORT"])
        self.metrics_host = settings["MDPEER_METRICS_HOST"]
        super().__init__(
            [*mdpeer_argv(), "run", "--config", str(config), "--peer-id", peer_id, *args],
            name=f"peer-{peer_id}",
            log=log,
            env=settings,
            grace=grace,
        )

    @property
    def url(self) -> str:
        return f"http://{self.metrics_host}:{self.metrics_port}"

    def readiness(self) -> Readiness | None:
        """What ``/readyz`` says now; None while it does not answer."""
        return read_readiness(self.metrics_port, self.metrics_host)

    def ready(self) -> bool:
        state = self.readiness()
        return state is not None and state.ready

    def owned(self) -> frozenset[int]:
        """The shards it owns and works on now (empty while it does not answer)."""
        state = self.readiness()
        return frozenset() if state is None else state.working

    def blocked(self) -> dict[str, str]:
        """subject -> reason of the subjects it has stopped (empty while it does not answer)."""
        state = self.readiness()
        return {} if state is None else state.blocked_subjects()

    def scrape(self, path: str = "/metrics") -> str:
        """The body of ``path`` ("" while it does not answer; an error status's body too)."""
        return http_get(self.url + path)[1].decode("utf-8", "replace")

    def metric(self, name_and_labels: str) -> float:
        """One sample of its ``/metrics`` (0 when absent or while it does not answer)."""
        return metric(self.scrape(), name_and_labels)


def split_evenly(peers: Sequence[PeerProcess], shards: int) -> bool:
    """Whether ``peers`` (all running) work on every one of ``shards`` between them, each on
    some, none twice. Raises :class:`~peer.testing.process.ChildExitedError` if one exited."""
    owned = []
    for peer in peers:
        peer.check_alive()
        owned.append(peer.owned())
    union: set[int] = set().union(*owned)
    return all(owned) and len(union) == shards and sum(map(len, owned)) == shards


__all__ = ["PeerProcess", "Readiness", "metric", "read_readiness", "split_evenly"]
