"""Coarse timers for the safety interval's long waits (peer/source/timerwheel.py)."""

from __future__ import annotations

import asyncio

import pytest

from peer.source.timerwheel import TimerWheel


def test_waits_end_in_order_no_earlier_than_asked_and_at_most_a_tick_late() -> None:
    async def main() -> None:
        wheel = TimerWheel(tick=0.02)
        loop = asyncio.get_running_loop()
        ended: dict[float, float] = {}

        async def wait(delay: float) -> None:
            start = loop.time()
            await wheel.sleep(delay)
            ended[delay] = loop.time() - start

        await asyncio.gather(*(wait(d) for d in (0.15, 0.0, 0.05, 0.1)))
        for delay, took in ended.items():
            assert delay <= took < delay + 0.02 + 0.05  # a tick, and a busy machine's slack
        assert len(wheel) == 0

    asyncio.run(main())


def test_a_wait_ended_early_or_cancelled_leaves_its_slot() -> None:
    async def main() -> None:
        wheel = TimerWheel(tick=0.01)
        fut, slot = wheel.start(60.0)
        assert len(wheel) == 1
        fut.set_result(None)  # rung: ends at once
        await fut
        wheel.stop(fut, slot)
        assert len(wheel) == 0
        task = asyncio.create_task(wheel.sleep(60.0))
        await asyncio.sleep(0)
        assert len(wheel) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(wheel) == 0

    asyncio.run(main())
    with pytest.raises(ValueError, match="tick"):
        TimerWheel(tick=0)


def test_a_grain_ends_close_waits_together_never_early() -> None:
    async def main() -> None:
        wheel = TimerWheel(tick=0.005)
        loop = asyncio.get_running_loop()
        start = loop.time()
        futs = [wheel.start(delay, grain=8) for delay in (0.05, 0.052, 0.055)]
        slots = {slot for _, slot in futs}
        assert all(slot % 8 == 0 for slot in slots)
        assert len(slots) <= 2  # 40 ms slots: three waits within 5 ms share one (or straddle)
        await asyncio.gather(*(fut for fut, _ in futs))
        assert loop.time() - start >= 0.055
        for fut, slot in futs:
            wheel.stop(fut, slot)
        assert len(wheel) == 0

    asyncio.run(main())
