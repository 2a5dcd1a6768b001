"""The benchmark's bare producer in a fresh process (peer.dev.bench.bare) cannot rot unseen:
a child interpreter builds the records, produces them to a real broker and reports back."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition

from peer.dev.bench.bare import BareJob, bare_in_fresh_process
from peer.dev.bench.producers import PARTITIONS
from peer.kafka.clients import with_callbacks
from peer.model import Message
from peer.writer.records import message_headers

pytestmark = [pytest.mark.kafka]

RECORDS = 120
SUBJECTS = ["/b/1", "/b/2", "/b/3"]
#: a peer record's headers, as the benchmark samples them from the topic
SAMPLE = message_headers(
    Message("/b/1", b"v", 1, 1, "HISTORICAL", closure="c", retained=True, qos="STANDARD"), "md."
)


def test_a_job_survives_its_trip_to_the_child_byte_for_byte() -> None:
    odd = [*SAMPLE, ("x", bytes(range(256)))]  # header values need not be UTF-8
    job = BareJob("h:1", "t", {"linger.ms": 50, "acks": "all"}, 10, 16, SUBJECTS, odd)
    assert BareJob.from_json(job.to_json()) == job


def test_the_bare_producer_runs_in_a_fresh_process_and_every_record_lands(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic(PARTITIONS)
    conf = {"acks": "all", "enable.idempotence": True, "linger.ms": 5}
    job = BareJob(kafka_bootstrap, topic, conf, RECORDS, 64, SUBJECTS, SAMPLE, settle_max_s=0)
    got = bare_in_fresh_process(job, timeout=120)
    assert got["messages"] == RECORDS
    assert got["process"] == "fresh, one per round"
    assert got["same_header_names_as_peer"] is True
    # what the rounds' medians and ratios are taken of (120 records take under a jiffy)
    assert {"msgs_per_s", "cpu_us_per_msg", "cpu_cores", "before"} <= set(got)
    conf = {"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{uuid.uuid4().hex[:8]}"}
    consumer = Consumer(with_callbacks(conf, "test-reader"))
    try:
        ends = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            for p in range(PARTITIONS)
        ]
    finally:
        consumer.close()
    # the warm-up record, then every record of the job
    assert sum(high - low for low, high in ends) == RECORDS + 1
