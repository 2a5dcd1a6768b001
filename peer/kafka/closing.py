"""Closing a group consumer within a deadline.

``Consumer.close()`` leaves the group: it serves the last revoke, commits nothing of ours
(auto commit is off) and waits for the coordinator. librdkafka gives that wait no bound, and
a member the group has already fenced (a paused peer, a peer past ``max.poll.interval.ms``)
can wait there indefinitely. A peer that is stopping must still stop: what it wrote is
committed or aborted before it closes, and the group reassigns its shards after the session
timeout whether or not it said goodbye. So the close runs on a thread of its own and the
caller goes on once the deadline has passed. The caller must then make sure that a
rebalance callback the late close may still serve does nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import Final, Protocol

log = logging.getLogger("peer.kafka")

#: a stopping peer's wait to leave the group; well inside a 30 s stop grace period
CLOSE_WITHIN_S: Final = 10.0


class Closeable(Protocol):
    def close(self) -> None: ...


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


__all__ = ["CLOSE_WITHIN_S", "close_within"]
