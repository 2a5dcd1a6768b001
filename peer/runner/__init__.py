"""The peer process behind ``mdpeer run`` (see :mod:`peer.runner.peer`)."""

from __future__ import annotations

import logging
import os
import signal
from typing import Final

from peer.config.settings import PeerSettings
from peer.errors import PeerFatalError
from peer.ops.health import Health, ObservabilityServer
from peer.ops.metrics import PeerMetrics
from peer.runner.peer import EXIT_CONFIG, EXIT_FATAL, EXIT_OK, Peer
from peer.source.doorbell import DOORBELL, plan_for
from peer.source.rest import RestSource
from peer.source.rest_config import RestSourceConfig
from peer.source.wakeups import DoorbellSource, Wakeups

log = logging.getLogger("peer.runner")


#: the GIL switch interval ``mdpeer run`` sets for the process (its entry point does): the
#: source's I/O thread and the main loop share the GIL, and at the default 5 ms the I/O
#: thread waits up to 5 ms after every socket wake-up while the loop produces; 1 ms measured
#: 15-20% more throughput (docs/PERFORMANCE.md)
SWITCH_INTERVAL_S: Final = 0.001
#: the collector's young-generation threshold ``mdpeer run`` sets (default 700): 100,000
#: idle doorbell subjects are ~1.6 million live objects, and a burst of safety fetches (16
#: at once) allocated past 700 many times a second; each young collection promoted waits
#: that live 30 s, so the older generations, full collections included (1 s each at 100k),
#: ran often. 20,000: about 20% less CPU per safety fetch (docs/PERFORMANCE.md, issue #16)
GC_YOUNG_THRESHOLD: Final = 20_000


def run_peer(settings: PeerSettings) -> int:
    """Build the source, metrics and the peer from ``settings``; run until stopped.

    Returns the exit code. Configuration problems raise :class:`peer.errors.MdpeerError`
    before anything joins the group.
    """
    settings.require_source()
    plan = plan_for(settings.source)
    plan.require()  # doorbell = "on" without a usable client: exit 1 before joining
    log.info("source mode: %s", plan.describe(), extra={"source_mode": plan.mode})
    metrics = PeerMetrics()
    wakeups = None
    if plan.mode == DOORBELL:
        wakeups = Wakeups(
            settings.source,
            plan=plan,
            on_ring=metrics.source_doorbells.inc,
            on_connected=metrics.source_doorbell_connected.set,
        )
    config = RestSourceConfig.from_settings(settings.source.rest_settings())
    source = RestSource(config) if wakeups is None else DoorbellSource(config, wakeups)
    # a shard rebuild may wait up to transaction.timeout.ms for a dead peer's transaction
    health = Health(heartbeat_timeout=max(30.0, settings.transaction_timeout_ms / 1000 + 45))
    health.source_mode(plan.as_dict())
    server: ObservabilityServer | None = None
    if settings.metrics_port:
        server = ObservabilityServer(
            metrics, health, host=settings.metrics_host, port=settings.metrics_port
        ).start()
    peer = Peer(settings, source, metrics=metrics, health=health)
    peer.install_signal_handlers()
    try:
        code = peer.run()
        if peer.abandoned:
            # A Kafka call is still running in a client thread, and closing the clients (or
            # the interpreter's clean-up of them) would wait for it: leave now (finding 11).
            logging.shutdown()
            os._exit(code)
        return code
    finally:
        # The outcome is decided: a repeated SIGTERM (an impatient orchestrator) must not turn
        # a clean exit 0 into death by signal while the interpreter winds down.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        source.close()
        if server is not None:
            server.stop()


__all__ = [
    "EXIT_CONFIG",
    "EXIT_FATAL",
    "EXIT_OK",
    "GC_YOUNG_THRESHOLD",
    "SWITCH_INTERVAL_S",
    "Peer",
    "PeerFatalError",
    "run_peer",
]
