"""Running things for tests, benchmarks, the demo and the chaos harness, one way each.

* :mod:`~peer.testing.wait`: :func:`wait_until`, the one wait on a condition with a deadline;
* :mod:`~peer.testing.net`: :func:`free_port` and plain HTTP;
* :mod:`~peer.testing.process`: :class:`ManagedProcess`, the base of every child process (own
  process group, tied to its parent, scrubbed environment, TERM, grace, ABRT, KILL, a log),
  and :func:`run_mdpeer` for a command run to its end;
* :mod:`~peer.testing.sim`: :class:`SimProcess`, the reference server as ``mdpeer sim serve``;
* :mod:`~peer.testing.peer`: :class:`PeerProcess`, ``mdpeer run`` whose state is its ``/readyz``;
* :mod:`~peer.testing.kafka`: :func:`create_topics` that returns once every partition leads;
* :mod:`~peer.testing.reader`: :class:`CommittedThreadReader`, a read_committed consumer of
  whole topics on a thread of its own, what a downstream application sees;
* :mod:`~peer.testing.verdict`: :func:`judge`, the exactly-once verdict;
* :mod:`~peer.testing.prometheus`: :class:`PrometheusProcess`, a real Prometheus scraping
  peers, read through its HTTP API.

Part of the package so that scripts and tests import it without path tricks; it sits with
``peer.dev`` (tests/test_architecture.py): it may use the peer's inner layers, never the CLI.
"""

from peer.testing.kafka import create_topics
from peer.testing.net import free_port, http_get, http_json
from peer.testing.peer import (
    STANDIN_DIR,
    PeerProcess,
    Readiness,
    doorbell_env,
    metric,
    read_readiness,
    split_evenly,
)
from peer.testing.process import (
    KEEP_LOGS_ENV,
    ChildExitedError,
    ManagedProcess,
    alive,
    child_env,
    cpu_seconds,
    mdpeer_argv,
    memory_mb,
    run_mdpeer,
    thread_cpu_seconds,
)
from peer.testing.prometheus import PrometheusNotInstalledError, PrometheusProcess
from peer.testing.sim import SimAdminError, SimProcess, SimStartError
from peer.testing.verdict import Delivered, Gap, SubjectVerdict, judge, totals
from peer.testing.wait import WaitTimeoutError, wait_until

__all__ = [
    "KEEP_LOGS_ENV",
    "STANDIN_DIR",
    "ChildExitedError",
    "Delivered",
    "Gap",
    "ManagedProcess",
    "PeerProcess",
    "PrometheusNotInstalledError",
    "PrometheusProcess",
    "Readiness",
    "SimAdminError",
    "SimProcess",
    "SimStartError",
    "SubjectVerdict",
    "WaitTimeoutError",
    "alive",
    "child_env",
    "cpu_seconds",
    "create_topics",
    "doorbell_env",
    "free_port",
    "http_get",
    "http_json",
    "judge",
    "mdpeer_argv",
    "memory_mb",
    "metric",
    "read_readiness",
    "run_mdpeer",
    "split_evenly",
    "thread_cpu_seconds",
    "totals",
    "wait_until",
]
