"""A REST source in doorbell mode with the test tree's stand-in client (``tests/standin``), on
a reference server: what the doorbell tests and the idle benchmark (``peer.dev.bench.idle``)
both build. The caller puts :data:`peer.testing.peer.STANDIN_DIR` on ``sys.path`` first."""

from __future__ import annotations

import dataclasses

from peer.config.settings import SourceSettings
from peer.source.rest_config import RestSourceConfig
from peer.source.wakeups import DoorbellSource, Wakeups


def standin_doorbell_source(
    server_url: str,
    *,
    safety_ms: int,
    idle_max_ms: int = 1000,
    max_concurrency: int = 16,
    fast_retries: bool = False,
) -> tuple[DoorbellSource, Wakeups]:
    """A :class:`DoorbellSource` of ``server_url`` (not started) and its wake-ups;
    ``fast_retries``: faults retried within 0.05-0.2 s (for tests that wait for deliveries
    through them)."""
    settings = SourceSettings(
        servers=(server_url,),
        doorbell="on",
        doorbell_module="mdclient_standin",
        poll_idle_max_ms=idle_max_ms,
        poll_safety_interval_ms=safety_ms,
        max_concurrency=max_concurrency,
    )
    wakeups = Wakeups(settings)
    config = RestSourceConfig.from_settings(settings.rest_settings())
    if fast_retries:
        config = dataclasses.replace(config, retry_initial=0.05, retry_max=0.2)
    return DoorbellSource(config, wakeups), wakeups


__all__ = ["standin_doorbell_source"]
