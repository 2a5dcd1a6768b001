"""Leaving the group and closing a group consumer within a deadline.

``Consumer.close()`` leaves the group: it serves the last revoke, commits nothing of ours
(auto commit is off) and waits for the coordinator. librdkafka gives that wait no bound, and
a member the group has already fenced (a paused peer, a peer past ``max.poll.interval.ms``)
can wait there indefinitely. A peer that is stopping must still stop: what it wrote is
committed or aborted before it closes, and the group reassigns its shards after the session
timeout whether or not it said goodbye. So the close runs on a thread of its own and the
caller goes on once the deadline has passed. The caller must then make sure that a
rebalance callback the late close may still serve does nothing.

A thread cannot bound every close, though. A rebalance event still queued when ``close()``
starts (the member had not polled since the group moved on) is served inside the close, and
the assignment call that must follow it can wait forever there (librdkafka issue 4884). The
Python client makes that call holding the GIL, so the whole process stops, deadline, signal
handlers and all. :func:`leave_and_close` therefore first unsubscribes and serves every
rebalance event by polling in the caller's thread, where the assignment call returns, and
closes only a member that holds no partitions any more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Final, Protocol

from confluent_kafka import KafkaException

log = logging.getLogger("peer.kafka")

#: a stopping peer's wait to leave the group; well inside a 30 s stop grace period
CLOSE_WITHIN_S: Final = 10.0


class Closeable(Protocol):
    def close(self) -> None: ...


class Member(Closeable, Protocol):
    """What leaving takes of a subscribed group consumer (``confluent_kafka.Consumer``;
    one that assigned its partitions by hand keeps them past ``unsubscribe``)."""

    def unsubscribe(self) -> None: ...
    def assignment(self) -> Sequence[object]: ...
    def poll(self, timeout: float) -> object: ...


def close_within(consumer: Closeable, role: str, seconds: float = CLOSE_WITHIN_S) -> bool:
    """Close ``consumer``; False when it had not closed after ``seconds`` (it is left to
    finish, or not, on a daemon thread: the process must not wait for it at exit).

    An exception from ``close`` is raised here, as a direct call would."""
    failure: list[BaseException] = []

    def close() -> None:
        try:
            consumer.close()
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    closer = threading.Thread(target=close, name=f"close {role}", daemon=True)
    closer.start()
    closer.join(seconds)
    if closer.is_alive():
        log.warning(
            "the %s did not close within %g s; going on without it",
            role,
            seconds,
            extra={"role": role, "close_timeout_s": seconds},
        )
        return False
    if failure:
        raise failure[0]
    return True


def leave_and_close(consumer: Member, role: str, seconds: float = CLOSE_WITHIN_S) -> bool:
    """Unsubscribe, serve the revoke (and any rebalance event still queued) in this thread
    until ``consumer`` holds no partition, then :func:`close_within` the time left (at least
    a second). False when it had not closed in time; records a poll returns are dropped.

    Rebalance callbacks run here, in the caller's thread, as they would in its poll loop."""
    deadline = time.monotonic() + seconds
    try:
        consumer.unsubscribe()
        while consumer.assignment():
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "the %s still held partitions after %g s of leaving; closing it anyway",
                    role,
                    seconds,
                    extra={"role": role, "close_timeout_s": seconds},
                )
                break
            consumer.poll(min(0.1, left))
    except KafkaException as exc:  # a failed client still gets its close
        log.warning("the %s could not leave the group: %s", role, exc, extra={"role": role})
    return close_within(consumer, role, max(1.0, deadline - time.monotonic()))


__all__ = ["CLOSE_WITHIN_S", "close_within", "leave_and_close"]
