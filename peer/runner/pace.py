"""When the open transaction is due for its commit (``commit_interval_ms``, issue #16).

A record waits in the open transaction until its commit starts, then for the commit itself
(20-50 ms on a busy host: offsets to the group, the transaction's end). Two rules set the
commit's start; whichever comes first:

* **age**: the transaction is ``max_age`` old (``min(commit_interval_ms,
  transaction_timeout_ms / 4)``) or holds ``max_batch`` records. The only rule while the loop
  is behind the source, so a loaded peer commits exactly as often as before;
* **cadence**: ``max_age`` after the previous commit *started*, once the loop has kept up with
  the source during this transaction (a take left nothing behind). Such a loop has time to
  spare: the previous commit's duration no longer adds to the wait of the records that came
  in meanwhile, and commits still start at most once per ``max_age``.

The loop's wait for source events ends when the transaction falls due, so a commit starts on
time instead of up to one wait late.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from peer.source.base import Batch, Item


class CommitPace:
    """(loop thread) The commit rules of one peer's loop; see the module's docstring.

    Times are ``time.monotonic()`` seconds; ``started`` is when the last commit (of any
    cause: interval, revoke, command) started, ``opened`` when the open transaction began
    (None: none is open)."""

    __slots__ = ("_kept_up", "_since", "idle", "max_age", "max_batch")

    def __init__(self, max_age: float, max_batch: int, idle: float) -> None:
        self.max_age = max_age
        self.max_batch = max_batch
        self.idle = idle  # the loop's longest wait for source events
        self._kept_up = False
        self._since = -1.0  # the commit start that ``_kept_up`` is about

    def _fresh(self, started: float) -> None:
        if self._since != started:  # a commit started since: the flag starts over
            self._since = started
            self._kept_up = False

    def took(self, items: Sequence[Item], asked: int, started: float) -> None:
        """After a take from the source: fewer events than asked means it had no more."""
        self._fresh(started)
        if sum(len(i.messages) if isinstance(i, Batch) else 1 for i in items) < asked:
            self._kept_up = True

    def due_at(self, opened: float, started: float) -> float:
        """When the transaction opened at ``opened`` is due (records aside)."""
        self._fresh(started)
        at = opened + self.max_age
        return min(at, started + self.max_age) if self._kept_up else at

    def due(
        self, opened: float | None, records: int, started: float, now: float | None = None
    ) -> bool:
        """Is the open transaction due? False when none is open."""
        if opened is None:
            return False
        now = time.monotonic() if now is None else now
        return records >= self.max_batch or now >= self.due_at(opened, started)

    def wait(self, opened: float | None, started: float, now: float | None = None) -> float:
        """How long the loop may wait for source events: ``idle``, less when the open
        transaction falls due sooner."""
        if opened is None:
            return self.idle
        now = time.monotonic() if now is None else now
        return min(self.idle, max(0.0, self.due_at(opened, started) - now))


__all__ = ["CommitPace"]
