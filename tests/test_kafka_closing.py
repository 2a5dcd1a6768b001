"""``close_within`` and ``leave_and_close``: a stopping peer leaves the group within a deadline,
whatever close does, and never closes a member that still has a rebalance event to serve."""

from __future__ import annotations

import logging
import threading

import pytest
from confluent_kafka import KafkaError, KafkaException

from peer.kafka.closing import close_within, leave_and_close


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


class _Member:
    """A subscribed member whose revoke is served by its ``polls_to_revoke``-th poll."""

    def __init__(self, polls_to_revoke: int, *, refuse_unsubscribe: bool = False) -> None:
        self.polls_to_revoke = polls_to_revoke
        self.refuse_unsubscribe = refuse_unsubscribe
        self.calls: list[str] = []
        self.held = ["control-0", "control-1"]

    def unsubscribe(self) -> None:
        self.calls.append("unsubscribe")
        if self.refuse_unsubscribe:
            raise KafkaException(KafkaError(KafkaError._FATAL, "fatal error"))

    def assignment(self) -> list[str]:
        return list(self.held)

    def poll(self, timeout: float) -> None:
        assert "close" not in self.calls
        assert 0 < timeout <= 0.1
        self.calls.append("poll")
        if self.calls.count("poll") >= self.polls_to_revoke:
            self.held = []  # the revoke callback ran here, then the assignment call

    def close(self) -> None:
        self.calls.append("close")


def test_leaving_serves_the_revoke_by_polling_before_the_close() -> None:
    member = _Member(polls_to_revoke=3)
    assert leave_and_close(member, "group consumer", seconds=10) is True
    assert member.calls == ["unsubscribe", "poll", "poll", "poll", "close"]


def test_a_member_without_partitions_is_closed_at_once() -> None:
    member = _Member(polls_to_revoke=1)
    member.held = []
    assert leave_and_close(member, "group consumer", seconds=10) is True
    assert member.calls == ["unsubscribe", "close"]


def test_a_member_that_keeps_its_partitions_is_closed_after_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    member = _Member(polls_to_revoke=10**9)
    with caplog.at_level(logging.WARNING, logger="peer.kafka"):
        assert leave_and_close(member, "group consumer", seconds=0.3) is True
    assert member.calls[0] == "unsubscribe"
    assert member.calls[-1] == "close"
    assert member.calls.count("poll") >= 1
    assert "the group consumer still held partitions after 0.3 s of leaving" in caplog.text


def test_a_client_that_cannot_leave_is_still_closed(caplog: pytest.LogCaptureFixture) -> None:
    member = _Member(polls_to_revoke=1, refuse_unsubscribe=True)
    with caplog.at_level(logging.WARNING, logger="peer.kafka"):
        assert leave_and_close(member, "group consumer", seconds=10) is True
    assert member.calls == ["unsubscribe", "close"]
    assert "the group consumer could not leave the group" in caplog.text
