"""Whether MigratoryData answers this peer, said out loud.

The REST source retries a server that does not answer forever (by default), which is right
for a server restart, and wrong to keep quiet about: a peer whose servers are all out of
reach owns shards and bridges nothing. :class:`SourceWatch` turns the source's
:meth:`~peer.source.base.Source.reachability` into what operators and orchestrators see:

* a warning every :data:`WARN_EVERY_S` seconds while no server answers (and one line when
  they answer again);
* ``/readyz`` not ready once that lasted ``unready_after`` seconds, so an orchestrator can
  act (a peer that cannot reach MigratoryData while its neighbours can is worth replacing);
* a ``peer:<id>`` note in the control topic that ``mdpeer status`` shows, and its tombstone
  when the servers answer again or the peer leaves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from peer.control import encode_peer, peer_key
from peer.ops.health import Health
from peer.ops.metrics import PeerMetrics
from peer.runner.quarantine import utc_now_text
from peer.source.base import Source

log = logging.getLogger("peer.runner")

#: a warning this often while no MigratoryData server answers
WARN_EVERY_S: Final = 10.0
#: how often the source is asked
_CHECK_EVERY_S: Final = 1.0


class SourceWatch:
    """Watches one source's reachability from the peer's loop thread."""

    def __init__(
        self,
        source: Source,
        *,
        peer_id: str,
        health: Health,
        metrics: PeerMetrics,
        unready_after: float,
        clock: Callable[[], float] = time.monotonic,
        context: dict[str, Any] | None = None,
    ) -> None:
        self._source = source
        self._peer_id = peer_id
        self._health = health
        self._metrics = metrics
        self.unready_after = unready_after
        self._clock = clock
        self._ctx = context or {}
        self._checked = -_CHECK_EVERY_S
        self._warned = -WARN_EVERY_S
        self._failing_since_text: str | None = None
        #: the note for the next transaction: (key, value or None for the tombstone)
        self.note: tuple[bytes, bytes | None] | None = None
        self._noted = False

    def check(self) -> None:
        now = self._clock()
        if now - self._checked < _CHECK_EVERY_S:
            return
        self._checked = now
        failing_for, error = self._source.reachability()
        if failing_for <= 0:
            self._answering()
            return
        self._metrics.source_reachable.set(0)
        if self._failing_since_text is None:
            self._failing_since_text = utc_now_text()
        if failing_for < WARN_EVERY_S:
            return  # a blip: the source's own failover deals with it
        if now - self._warned >= WARN_EVERY_S:
            self._warned = now
            log.warning(
                "no MigratoryData server answers",
                extra={**self._ctx, "for_s": round(failing_for, 1), "last_error": error},
            )
        if not self._noted:
            self._noted = True
            self.note = encode_peer(
                self._peer_id,
                source="unreachable",
                since=self._failing_since_text,
                error=error,
            )
        self._health.source_unreachable(
            failing_for, error, unready=failing_for >= self.unready_after
        )

    def _answering(self) -> None:
        self._metrics.source_reachable.set(1)
        if self._failing_since_text is None:
            return
        if self._noted:
            log.info("MigratoryData answers again", extra={**self._ctx})
            self.note = (peer_key(self._peer_id), None)
            self._noted = False
        self._failing_since_text = None
        self._warned = -WARN_EVERY_S
        self._health.source_unreachable(0.0, "", unready=False)

    def leaving(self) -> None:
        """Clean shutdown: a note this peer wrote must not outlive it."""
        if self._noted:
            self.note = (peer_key(self._peer_id), None)
            self._noted = False

    def note_committed(self) -> None:
        self.note = None


__all__ = ["WARN_EVERY_S", "SourceWatch"]
