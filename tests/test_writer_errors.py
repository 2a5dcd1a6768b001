"""peer.kafka.errors: how librdkafka's error flags map to what the peer does, and bounded retries.

The errors are confluent-kafka's own KafkaError objects with the flags librdkafka sets; the
writer's behaviour against the broker is in tests/test_writer.py.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from peer.errors import MdpeerError
from peer.kafka.errors import (
    AbortRequiredError,
    FatalKafkaError,
    FencedError,
    GroupFencedError,
    KafkaWriteError,
    RetriesExhaustedError,
    call_with_retry,
    classify,
)
from peer.writer.failures import produce_error


def kafka_exc(code: int, **flags: bool) -> KafkaException:
    return KafkaException(KafkaError(code, "reason", **flags))


@pytest.mark.parametrize(
    ("code", "flags", "expected"),
    [
        (KafkaError._FENCED, {"fatal": True}, FencedError),
        (KafkaError.PRODUCER_FENCED, {"fatal": True}, FencedError),
        (KafkaError.INVALID_PRODUCER_EPOCH, {}, FencedError),
        (KafkaError.ILLEGAL_GENERATION, {"txn_requires_abort": True}, GroupFencedError),
        (KafkaError.UNKNOWN_MEMBER_ID, {"txn_requires_abort": True}, GroupFencedError),
        (KafkaError.UNKNOWN_MEMBER_ID, {}, FencedError),
        (KafkaError.MSG_SIZE_TOO_LARGE, {"txn_requires_abort": True}, AbortRequiredError),
        (KafkaError._TIMED_OUT, {"retriable": True}, RetriesExhaustedError),
        (KafkaError._STATE, {}, FatalKafkaError),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, {"fatal": True}, FatalKafkaError),
    ],
)
def test_classify_follows_the_flags_librdkafka_sets(
    code: int, flags: dict[str, bool], expected: type[KafkaWriteError]
) -> None:
    err = classify(kafka_exc(code, **flags), op="commit_transaction", subject="/a/b", topic="t")
    assert type(err) is expected
    assert isinstance(err, MdpeerError)
    assert (err.op, err.subject, err.topic) == ("commit_transaction", "/a/b", "t")
    assert err.code == KafkaError(code).name()
    assert "'/a/b'" in str(err)
    assert err.code in str(err)


def test_a_produce_refused_in_a_failed_transaction_means_abort_not_exit() -> None:
    # librdkafka's _STATE on produce: the transaction failed (chaos: after a fenced commit the
    # redo met "requires epoch bump"); the peer aborts and redoes, the abort decides the rest.
    err = produce_error(kafka_exc(KafkaError._STATE), "/a/b", "t")
    assert type(err) is AbortRequiredError
    assert (err.op, err.subject, err.topic, err.code) == ("produce", "/a/b", "t", "_STATE")
    other = produce_error(kafka_exc(KafkaError.TOPIC_AUTHORIZATION_FAILED, fatal=True), "/a", "t")
    assert type(other) is FatalKafkaError


def test_group_fencing_is_abortable_and_producer_fencing_is_fatal() -> None:
    assert issubclass(GroupFencedError, AbortRequiredError)
    assert issubclass(FencedError, FatalKafkaError)
    assert not issubclass(FencedError, AbortRequiredError)


def test_retriable_errors_are_retried_until_the_call_succeeds() -> None:
    calls = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise kafka_exc(KafkaError._TIMED_OUT, retriable=True)
        return "done"

    assert call_with_retry(flaky, op="commit_transaction", attempts=5, budget=10) == "done"
    assert len(calls) == 3


def test_retries_are_bounded_by_attempts() -> None:
    calls = 0

    def down() -> None:
        nonlocal calls
        calls += 1
        raise kafka_exc(KafkaError._TRANSPORT, retriable=True)

    with pytest.raises(RetriesExhaustedError) as exhausted:
        call_with_retry(down, op="init_transactions", attempts=4, budget=10, backoff_max=0.01)
    assert calls == 4
    assert exhausted.value.code == "_TRANSPORT"
    assert isinstance(exhausted.value.__cause__, KafkaException)


def test_abortable_and_fatal_errors_are_not_retried() -> None:
    for code, flags, expected in [
        (KafkaError.ILLEGAL_GENERATION, {"txn_requires_abort": True}, GroupFencedError),
        # abortable wins over retriable: repeating the call cannot save the transaction
        (
            KafkaError._TIMED_OUT,
            {"retriable": True, "txn_requires_abort": True},
            AbortRequiredError,
        ),
        (KafkaError._FENCED, {"fatal": True}, FencedError),
    ]:
        calls = 0

        def fails(code: int = code, flags: dict[str, bool] = flags) -> None:
            nonlocal calls
            calls += 1
            raise kafka_exc(code, **flags)

        with pytest.raises(expected):
            call_with_retry(fails, op="send_offsets_to_transaction", attempts=5, budget=10)
        assert calls == 1
