"""The sweeper's bookkeeping (peer/source/sweep.py) with a scripted client and host: places
of the concurrency bound handed on and never lost, a ring while a sweep is in flight, an
unsubscribe while due. The end-to-end behaviour is tests/test_source_sweep.py's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from peer.source.follow import Unchanged
from peer.source.http1 import Body
from peer.source.resume import ConsumeRequest, RequestKind, SubjectTracker, Subscription
from peer.source.sweep import Sweeper

BODY = b'{"messages":[]}'


class ScriptedClient:
    """``places`` requests at once; an answer hands its place to the first waiting caller,
    as ConsumeClient does."""

    def __init__(self, places: int) -> None:
        self.free = places
        self.waiting: list[Callable[[], None]] = []
        self.sent: list[tuple[str, Callable[[Body | None], None]]] = []

    def take_slot(self) -> bool:
        if self.free:
            self.free -= 1
            return True
        return False

    def when_slot(self, handed: Callable[[], None]) -> None:
        self.waiting.append(handed)

    def send(self, target: str, on_done: Callable[[Body | None], None]) -> bool:
        self.sent.append((target, on_done))
        return True

    def release_slot(self) -> None:
        if self.waiting:
            self.waiting.pop(0)()
        else:
            self.free += 1

    def answer(self, body: Body | None, target: str | None = None) -> None:
        """The request for ``target`` (None: the oldest in flight) is answered ``body``."""
        at = 0 if target is None else [t for t, _ in self.sent].index(target)
        _, on_done = self.sent.pop(at)
        self.release_slot()
        on_done(body)


class Host:
    def __init__(self) -> None:
        self.rung: set[str] = set()
        self.restarted: list[str] = []

    def sweepable(self, sub: Subscription) -> bool:
        return True

    def park_wait(self, sub: Subscription) -> tuple[float, int] | None:
        return None if sub.subject in self.rung else (30.0, 1)

    def restart(self, sub: Subscription, same: Unchanged) -> None:
        self.restarted.append(sub.subject)


def parked_subs(sweeper: Sweeper, n: int) -> list[Subscription]:
    subs = [Subscription(f"/s{i}", 1, SubjectTracker(f"/s{i}", after=None)) for i in range(n)]
    request = ConsumeRequest(RequestKind.SNAPSHOT)
    for sub in subs:
        sweeper.park(sub, Unchanged(request, f"/t{sub.subject}", BODY), (30.0, 1))
    return subs


def test_places_are_handed_on_and_none_is_lost() -> None:
    async def main() -> None:
        client, host = ScriptedClient(places=2), Host()
        sweeper = Sweeper(client, host)  # type: ignore[arg-type]  # the client's scripted double
        subs = parked_subs(sweeper, 5)
        sweeper._fell_due(set(sweeper._parked.values()))  # all five fall due at once
        assert len(client.sent) == 2
        assert client.free == 0
        assert len(client.waiting) == 1
        for _ in range(5):
            client.answer(BODY)  # the same answer: parked again, the place goes to the next
        assert not client.sent
        assert not client.waiting
        assert client.free == 2  # every place came back
        assert host.restarted == []
        assert len(sweeper) == len(subs)

    asyncio.run(main())


def test_a_ring_while_in_flight_restarts_after_the_answer() -> None:
    async def main() -> None:
        client, host = ScriptedClient(places=1), Host()
        sweeper = Sweeper(client, host)  # type: ignore[arg-type]
        (sub,) = parked_subs(sweeper, 1)
        sweeper._fell_due(set(sweeper._parked.values()))
        assert len(client.sent) == 1
        host.rung.add(sub.subject)
        sweeper.wake(sub.subject)  # in flight: the answer decides
        assert host.restarted == []
        client.answer(BODY)  # the same body, but rung: not parked again
        assert host.restarted == [sub.subject]
        assert len(sweeper) == 0
        assert client.free == 1

    asyncio.run(main())


def test_a_changed_or_failed_answer_restarts_and_an_unsubscribed_one_is_dropped() -> None:
    async def main() -> None:
        client, host = ScriptedClient(places=3), Host()
        sweeper = Sweeper(client, host)  # type: ignore[arg-type]
        *_, c = parked_subs(sweeper, 3)
        sweeper._fell_due(set(sweeper._parked.values()))
        assert len(client.sent) == 3
        sweeper.unpark(c)  # unsubscribed while its fetch flies
        client.answer(b"changed", "/t/s0")
        client.answer(None, "/t/s1")  # a fault, a refusal, a timeout
        client.answer(BODY, "/t/s2")
        assert host.restarted == ["/s0", "/s1"]
        assert c.subject not in host.restarted  # forgotten: its answer is dropped
        assert len(sweeper) == 0
        assert client.free == 3

    asyncio.run(main())
