"""Starting a local cluster on free ports: what the tests, the demo, the benchmarks and the
chaos harness do, in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peer.dev.localkafka.cluster import Cluster, LocalKafka
from peer.dev.localkafka.layout import PortInUseError, free_port_base


def start_on_free_ports(
    data_dir: Path, nodes: int = 1, *, attempts: int = 3, **options: Any
) -> Cluster:
    """Start a ``nodes``-node cluster in ``data_dir`` on ports free right now, tied to this
    process (its JVMs die with it).

    Free ports are only free until someone takes them: a port taken between the check and
    the JVM's bind is retried on other ports, up to ``attempts`` times. Each attempt reuses
    ``data_dir``: a failed start stops what it started, and other ports are another shape of
    cluster, which :class:`LocalKafka` formats afresh. ``options`` go to :class:`LocalKafka`.
    """
    options.setdefault("tie_to_parent", True)
    for attempt in range(1, attempts + 1):
        try:
            return LocalKafka(data_dir, nodes=nodes, port=free_port_base(nodes), **options).start()
        except PortInUseError:
            if attempt == attempts:
                raise
    raise ValueError(f"attempts={attempts!r}: must be at least 1")


__all__ = ["start_on_free_ports"]
