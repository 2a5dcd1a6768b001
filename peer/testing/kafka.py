"""Topics for tests and harnesses: created, then waited for until every partition leads.

A topic a broker has just created is not usable at once: producing to it, or a peer's
rebuild reading it, fails until each partition has a leader. Every caller waits the same way.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from peer.testing.wait import wait_until


def create_topics(
    admin: AdminClient,
    topics: Sequence[str],
    partitions: int = 1,
    *,
    replication_factor: int = -1,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create ``topics`` (``replication_factor`` -1: the broker's default) and return once
    every partition of each has a leader; :class:`~peer.testing.wait.WaitTimeoutError` after
    ``timeout`` seconds."""
    specs = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=dict(config or {}),
        )
        for name in topics
    ]
    for future in admin.create_topics(specs, operation_timeout=timeout).values():
        future.result(timeout)
    deadline = time.monotonic() + timeout

    def led(name: str) -> bool:
        left = max(deadline - time.monotonic(), 0.1)
        meta: Any = admin.list_topics(topic=name, timeout=left).topics.get(name)
        return (
            meta is not None
            and meta.error is None
            and len(meta.partitions) == partitions
            and all(p.leader >= 0 for p in meta.partitions.values())
        )

    for name in topics:
        wait_until(
            functools.partial(led, name),
            max(deadline - time.monotonic(), 0.0),
            f"a leader for every partition of topic {name}",
        )


__all__ = ["create_topics"]
