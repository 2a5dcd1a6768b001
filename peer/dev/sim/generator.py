"""In-process load generator: feeds subjects at a set rate without HTTP, for benchmarks.

It runs on the server's event loop and publishes in batches under one store lock, yielding
to the loop between batches so consumes are still served while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Final

from peer.dev.sim.model import Store, check_subject, now_closure

#: messages per batch when running as fast as possible (and the most a late batch catches up)
_BATCH: Final = 2000


def generator_subjects(prefix: str, count: int) -> list[str]:
    """The subjects a prefix/count generator feeds: ``{prefix}/1`` .. ``{prefix}/{count}``."""
    return [f"{prefix.rstrip('/')}/{i}" for i in range(1, count + 1)]


@dataclass(frozen=True)
class GeneratorSpec:
    """What to generate. Either ``subjects`` or ``prefix`` + ``count``."""

    subjects: tuple[str, ...] = ()
    prefix: str | None = None
    count: int = 0
    #: messages per second, all subjects together; 0 = as fast as possible
    rate: float = 1000.0
    #: content size in bytes (ASCII, so also characters)
    size: int = 100
    #: stop after this many messages in total; None = until stopped
    total: int | None = None
    retained: bool = True
    resolved: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.subjects and self.prefix is not None:
            raise ValueError("generator: give either 'subjects' or 'prefix' (+ 'count'), not both")
        if self.prefix is not None:
            if self.count < 1:
                raise ValueError(f"generator: count={self.count!r} must be at least 1")
            subjects = tuple(generator_subjects(self.prefix, self.count))
        else:
            subjects = tuple(self.subjects)
        if not subjects:
            raise ValueError("generator: no subjects (give 'subjects' or 'prefix' + 'count')")
        for subject in subjects:
            check_subject(subject)
        if not self.rate >= 0:
            raise ValueError(
                f"generator: rate={self.rate!r} must be >= 0 (0 = as fast as possible)"
            )
        if self.size < 0:
            raise ValueError(f"generator: size={self.size!r} must be >= 0")
        if self.total is not None and self.total < 0:
            raise ValueError(f"generator: total={self.total!r} must be >= 0")
        object.__setattr__(self, "resolved", subjects)

    @classmethod
    def from_json(cls, data: object) -> GeneratorSpec:
        """Build from the admin endpoint's JSON body; ValueError names the bad field."""
        if not isinstance(data, dict):
            raise ValueError("generator: the body must be a JSON object")
        known = {"subjects", "prefix", "count", "rate", "size", "total", "retained"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"generator: unknown field(s) {unknown}; known: {sorted(known)}")
        subjects = data.get("subjects", [])
        if not isinstance(subjects, list) or not all(isinstance(s, str) for s in subjects):
            raise ValueError("generator: 'subjects' must be a list of strings")
        prefix = data.get("prefix")
        if prefix is not None and not isinstance(prefix, str):
            raise ValueError("generator: 'prefix' must be a string")
        kwargs: dict[str, Any] = {"subjects": tuple(subjects), "prefix": prefix}
        for name, kind in (("count", int), ("rate", (int, float)), ("size", int)):
            if name in data:
                value = data[name]
                if isinstance(value, bool) or not isinstance(value, kind):
                    raise ValueError(f"generator: {name}={value!r} must be a number")
                kwargs[name] = value
        total = data.get("total")
        if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
            raise ValueError(f"generator: total={total!r} must be an integer or null")
        kwargs["total"] = total
        retained = data.get("retained", True)
        if not isinstance(retained, bool):
            raise ValueError(f"generator: retained={retained!r} must be true or false")
        kwargs["retained"] = retained
        return cls(**kwargs)


class Generator:
    """One running generator task; ``published`` counts what it has put in the store."""

    def __init__(self, store: Store, spec: GeneratorSpec) -> None:
        self.store = store
        self.spec = spec
        self.published = 0
        self.started = time.monotonic()
        self.stopped: float | None = None
        self._task: asyncio.Task[None] | None = None
        filler = "x" * spec.size
        self._filler = filler

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-generator")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.stopped is None:
            self.stopped = time.monotonic()

    def describe(self) -> dict[str, Any]:
        end = self.stopped if self.stopped is not None else time.monotonic()
        elapsed = max(end - self.started, 1e-9)
        spec = self.spec
        return {
            "running": self.running,
            "subjects": len(spec.resolved),
            "first_subject": spec.resolved[0],
            "rate": spec.rate,
            "size": spec.size,
            "total": spec.total,
            "published": self.published,
            "elapsed_s": round(elapsed, 3),
            "achieved_rate": round(self.published / elapsed, 1),
        }

    def _batch(self, n: int) -> list[tuple[str, str]]:
        subjects = self.spec.resolved
        k = len(subjects)
        size = self.spec.size
        filler = self._filler
        first = self.published
        out = []
        for i in range(first, first + n):
            # content names its ordinal, padded to exactly `size` ASCII bytes
            head = f"{i}:"
            out.append((subjects[i % k], (head + filler[len(head) :])[:size]))
        return out

    async def _run(self) -> None:
        spec = self.spec
        rate = spec.rate
        start = time.monotonic()
        try:
            while spec.total is None or self.published < spec.total:
                if rate > 0:
                    due = int((time.monotonic() - start) * rate) + 1
                    n = min(due - self.published, _BATCH)
                    if n <= 0:
                        wait = (self.published + 1) / rate - (time.monotonic() - start)
                        await asyncio.sleep(min(max(wait, 0.001), 0.05))
                        continue
                else:
                    n = _BATCH
                if spec.total is not None:
                    n = min(n, spec.total - self.published)
                self.published += self.store.publish_many(
                    self._batch(n), closure=now_closure(), retained=spec.retained
                )
                await asyncio.sleep(0)
        finally:
            self.stopped = time.monotonic()
