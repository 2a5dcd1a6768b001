"""Waiting for a condition with a deadline: the one way tests, benchmarks and harnesses wait.

A wait never stands in for an assertion: it polls ``condition`` until it holds and fails,
naming what it waited for, once the deadline has passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: how often a condition is polled unless the caller says otherwise
STEP_S = 0.05


class WaitTimeoutError(AssertionError):
    """A condition did not hold within its deadline (an AssertionError: in a test it is the
    test's failure, with what was waited for in the message)."""


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, *, step: float = STEP_S
) -> float:
    """Poll ``condition`` every ``step`` s until it is truthy; returns the monotonic time at
    which it held (benchmarks time from it). Raises :class:`WaitTimeoutError` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(step)
    return time.monotonic()


__all__ = ["STEP_S", "WaitTimeoutError", "wait_until"]
