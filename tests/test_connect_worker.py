"""The benchmark's Kafka Connect contender (peer.dev.bench.connect) cannot rot unseen: a
worker of the broker's release installs, starts, and copies a file exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from peer.dev.bench.connect import ConnectWorker, copy_file, write_values

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RECORDS = 300
SIZE = 100


def test_connect_worker_copies_a_file_exactly_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    path = write_values(tmp_path / "values.txt", RECORDS, SIZE)
    with ConnectWorker(kafka_bootstrap, tmp_path, exactly_once=True) as worker:
        got = copy_file(worker, path, RECORDS, SIZE, timeout=60)
        worker.stop()
        assert not worker.forced, "the worker did not stop on SIGTERM within its grace"
    once = got["exactly_once"]
    assert got["visible"] == RECORDS
    assert once["ok"], once
    assert (once["duplicates"], once["missing"], once["corrupt"]) == (0, 0, 0)
    # the records came in transactions: their commit markers hold offsets too
    assert got["non_record_offsets"] > 0
    # what the benchmark reports of the task's producer is read from the worker's log
    assert got["task_producer"]["enable.idempotence"] == "true"
