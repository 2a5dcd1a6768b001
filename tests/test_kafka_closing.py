"""``close_within``: a stopping peer leaves the group within a deadline, whatever close does."""

from __future__ import annotations

import logging
import threading

import pytest

from peer.kafka.closing import close_within


class _Blocked:
    """A consumer whose close waits until released, as a fenced member's can."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.closed = threading.Event()

    def close(self) -> None:
        self.release.wait(30)
        self.closed.set()


class _Refusing:
    def close(self) -> None:
        raise RuntimeError("consumer already closed")


def test_a_close_that_does_not_return_is_left_behind_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = _Blocked()
    with caplog.at_level(logging.WARNING, logger="peer.kafka"):
        assert close_within(consumer, "group consumer", seconds=0.2) is False
    assert not consumer.closed.is_set()
    assert "the group consumer did not close within 0.2 s" in caplog.text
    consumer.release.set()  # the close goes on by itself on its own thread
    assert consumer.closed.wait(10)


def test_a_close_that_returns_in_time_is_reported_closed() -> None:
    consumer = _Blocked()
    consumer.release.set()
    assert close_within(consumer, "group consumer", seconds=10) is True
    assert consumer.closed.is_set()


def test_an_error_from_close_is_raised_to_the_caller() -> None:
    with pytest.raises(RuntimeError, match="already closed"):
        close_within(_Refusing(), "group consumer", seconds=10)
