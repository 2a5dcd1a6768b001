"""Subjects stopped at their checkpoint by a fault of their own, and when to try them again.

A fault that belongs to one route or subject (its topic is missing or refused, a message is
too large under ``on_oversize = "fail"``, MigratoryData denies the subject...) must stop only
that subject, never the peer: the peer then exits for nothing but what concerns the whole
process (DESIGN.md, failure model). The runner asks this bookkeeping:

* :meth:`Quarantine.block` when a fault is seen. The subject is unsubscribed at once; what
  it wrote before the fault in the open transaction still commits with its checkpoint (its
  checkpoint then sits right before the fault), and after an abort it stays where it was.
* :meth:`Quarantine.due` for the blocks whose backoff ran out: the runner tries them again
  (probing the topic, or simply fetching again from the checkpoint) and either
  :meth:`lifts <Quarantine.lift>` or re-blocks them with a longer backoff.
* :meth:`Quarantine.retrying` / :meth:`Quarantine.confirmed`: a subject tried again is
  watched for a while; it counts as healthy once data of it commits or it stayed quiet for
  ``confirm_after`` seconds, and only then is its block note removed from the control topic.

Backoff is exponential with jitter from ``retry_min`` to ``retry_max`` per subject; a topic
being created is asked again every :data:`CREATING_RETRY_S` seconds. Warnings are one per
subject and cause, and at most :data:`WARNINGS_PER_WINDOW` lines per :data:`WARN_WINDOW_S`
(a topic with a thousand subjects is one fault, not a thousand log lines).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from peer.errors import FaultReason

log = logging.getLogger("peer.runner")

#: a topic being created is asked again this often, and quietly
CREATING_RETRY_S: Final = 0.5
#: at most this many "subject stopped" warnings per window; the rest are counted
WARNINGS_PER_WINDOW: Final = 10
WARN_WINDOW_S: Final = 10.0
#: subjects listed one by one in /readyz (the count is always complete)
LISTED_MAX: Final = 100


def utc_now_text(wall: Callable[[], float] = time.time) -> str:
    return dt.datetime.fromtimestamp(wall(), dt.UTC).isoformat(timespec="seconds")


@dataclass(slots=True)
class Block:
    """Why and since when one subject is stopped, and when it is tried again."""

    reason: FaultReason
    detail: str
    #: the topic at fault, if a topic is
    topic: str | None
    #: every subject routed to ``topic`` shares the fault (and its probe)
    topic_wide: bool
    #: when the fault was first seen (ISO-8601, UTC), kept across retries and owners
    since: str
    attempts: int = 0
    #: monotonic time of the next try
    retry_at: float = 0.0
    #: tried again and fetching: healthy unless the fault comes back (see confirmed())
    retrying: bool = False
    retry_started: float = 0.0

    def public(self, subject: str) -> dict[str, Any]:
        return {
            "subject": subject,
            "reason": self.reason.value,
            "since": self.since,
            "topic": self.topic,
            "detail": self.detail,
            "attempts": self.attempts,
            "retrying": self.retrying,
        }


class Quarantine:
    """The blocked subjects of one peer. Used from the peer's loop thread only."""

    def __init__(
        self,
        *,
        retry_min: float = 1.0,
        retry_max: float = 60.0,
        confirm_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        if not 0 < retry_min <= retry_max:
            raise ValueError("expected 0 < retry_min <= retry_max")
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.confirm_after = confirm_after
        self._clock = clock
        self._wall = wall
        self._rng = rng or random.Random()
        self._ctx = context or {}
        self.blocks: dict[str, Block] = {}
        self._warn_window = -WARN_WINDOW_S
        self._warned = 0
        self._unwarned = 0
        #: bumped on every change, so callers refresh derived views only when needed
        self.version = 0

    def __len__(self) -> int:
        return len(self.blocks)

    def stopped(self, subject: str) -> bool:
        """Blocked and not being tried: its events are dropped, nothing of it is written."""
        block = self.blocks.get(subject)
        return block is not None and not block.retrying

    def block(
        self,
        subject: str,
        reason: FaultReason,
        detail: str,
        *,
        topic: str | None = None,
        topic_wide: bool = False,
        since: str | None = None,
    ) -> tuple[Block, bool]:
        """Stop ``subject``; returns its block and whether it is news (a new fault or cause),
        which is when its note must be written to the control topic."""
        now = self._clock()
        block = self.blocks.get(subject)
        news = block is None or block.reason is not reason
        if block is None or news:
            attempts = block.attempts if block is not None else 0
            keep_since = block.since if block is not None else since
            block = Block(
                reason,
                detail,
                topic,
                topic_wide,
                since=keep_since or utc_now_text(self._wall),
                attempts=attempts,
            )
            self.blocks[subject] = block
        block.detail, block.topic, block.topic_wide = detail, topic, topic_wide
        block.retrying = False
        block.retry_at = now + self._backoff(block)
        block.attempts += 1
        if news and reason is not FaultReason.TOPIC_CREATING:
            self._warn(subject, block)
        elif news:
            log.info(
                "subject waits for its topic to be created",
                extra={**self._ctx, "subject": subject, "topic": topic},
            )
        self.version += 1
        return block, news

    def _backoff(self, block: Block) -> float:
        if block.reason is FaultReason.TOPIC_CREATING:
            return CREATING_RETRY_S
        ceiling = min(self.retry_max, self.retry_min * 2 ** min(block.attempts, 30))
        return self._rng.uniform(ceiling / 2, ceiling)

    def _warn(self, subject: str, block: Block) -> None:
        now = self._clock()
        if now - self._warn_window >= WARN_WINDOW_S:
            if self._unwarned:
                log.warning(
                    "more subjects stopped than logged one by one",
                    extra={**self._ctx, "not_logged": self._unwarned, "blocked": len(self)},
                )
            self._warn_window, self._warned, self._unwarned = now, 0, 0
        if self._warned >= WARNINGS_PER_WINDOW:
            self._unwarned += 1
            return
        self._warned += 1
        log.warning(
            "subject stopped at its checkpoint: %s",
            block.detail,
            extra={
                **self._ctx,
                "subject": subject,
                "reason": block.reason.value,
                "topic": block.topic,
                "retry_in_s": round(max(block.retry_at - now, 0.0), 1),
            },
        )

    def due(self) -> list[tuple[str, Block]]:
        """Stopped subjects whose backoff ran out (not yet being tried)."""
        now = self._clock()
        return [(s, b) for s, b in self.blocks.items() if not b.retrying and b.retry_at <= now]

    def retrying(self, subject: str) -> None:
        """``subject`` is fetched again from its checkpoint to see whether the fault is gone."""
        block = self.blocks.get(subject)
        if block is not None:
            block.retrying = True
            block.retry_started = self._clock()
            self.version += 1

    def confirmed(self) -> list[str]:
        """Subjects tried again that stayed free of their fault for ``confirm_after`` s."""
        now = self._clock()
        return [
            s
            for s, b in self.blocks.items()
            if b.retrying and now - b.retry_started >= self.confirm_after
        ]

    def lift(self, subject: str) -> Block | None:
        """The fault is gone (or the subject is no longer ours): forget its block."""
        block = self.blocks.pop(subject, None)
        if block is not None:
            self.version += 1
            if block.retrying or block.reason is not FaultReason.TOPIC_CREATING:
                log.info(
                    "subject flows again",
                    extra={
                        **self._ctx,
                        "subject": subject,
                        "reason": block.reason.value,
                        "since": block.since,
                    },
                )
        return block

    def forget(self, subjects: Iterable[str]) -> None:
        """Subjects this peer no longer owns: their blocks go with them (no log)."""
        for subject in subjects:
            if self.blocks.pop(subject, None) is not None:
                self.version += 1

    def counts(self) -> dict[str, int]:
        """Stopped subjects by reason (those being tried again count as stopped until then)."""
        out: dict[str, int] = {}
        for block in self.blocks.values():
            out[block.reason.value] = out.get(block.reason.value, 0) + 1
        return out

    def summary(self) -> dict[str, Any]:
        """For ``/readyz``: the count by reason and the first subjects, sorted."""
        listed = [self.blocks[s].public(s) for s in sorted(self.blocks)[:LISTED_MAX]]
        return {"count": len(self.blocks), "by_reason": self.counts(), "subjects": listed}


__all__ = ["CREATING_RETRY_S", "Block", "Quarantine", "utc_now_text"]
