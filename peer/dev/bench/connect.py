"""Kafka Connect beside mdpeer: a distributed worker of the broker's own release running
Kafka's ``FileStreamSourceConnector`` (one task) over a file of the same N values, into a
fresh topic, exactly once (``exactly.once.source.support=enabled``) or not.

What Connect users would otherwise run, started like every other process of the benchmark
(:class:`~peer.testing.ManagedProcess`) and timed like mdpeer (:mod:`peer.dev.bench.visible`).
"""

from __future__ import annotations

import contextlib
import functools
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from peer.dev.bench import log
from peer.dev.bench.producers import PARTITIONS, generator_content
from peer.dev.bench.visible import EndWatch, measure, rates
from peer.dev.localkafka.connect import (
    FILE_SOURCE,
    WORKER_LOG4J2,
    WorkerTopics,
    resolve_connect_jars,
    worker_command,
    worker_properties,
)
from peer.dev.localkafka.runtime import find_java, stderr_progress
from peer.testing import ManagedProcess, create_topics, free_port, http_get, http_json, wait_until
from peer.testing.verdict import Delivered, judge, totals

#: the one "subject" of a file: message i of the generator is its position (1, i + 1)
FILE_SUBJECT = "file"
#: records the worker copies before it is timed, so the JIT has compiled its hot path
WARMUP_RECORDS = 50_000


class ConnectWorker(ManagedProcess):
    """``connect-distributed`` with a fresh group (its config, offset and status topics are
    created here, replication 1), REST on a free loopback port; ready once REST answers."""

    def __init__(
        self,
        bootstrap: str,
        work: Path,
        *,
        exactly_once: bool,
        start_timeout: float = 120.0,
        log_path: Path | None = None,
    ) -> None:
        jars = resolve_connect_jars(progress=stderr_progress)
        java = find_java()
        self.group = f"connect-{uuid.uuid4().hex[:8]}"
        self.bootstrap = bootstrap
        self.exactly_once = exactly_once
        self.kafka_version = jars.version
        topics = WorkerTopics.of(self.group)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        compact = {"cleanup.policy": "compact"}
        # the config topic must have one partition; the others take the worker's defaults
        create_topics(admin, [topics.configs], 1, replication_factor=1, config=compact)
        create_topics(admin, [topics.offsets], 25, replication_factor=1, config=compact)
        create_topics(admin, [topics.status], 5, replication_factor=1, config=compact)
        folder = work / self.group
        folder.mkdir(parents=True)
        port = free_port()
        props = folder / "worker.properties"
        props.write_text(worker_properties(bootstrap, self.group, port, exactly_once=exactly_once))
        log4j = folder / "log4j2.properties"
        log4j.write_text(WORKER_LOG4J2)
        self.url = f"http://127.0.0.1:{port}"
        super().__init__(
            worker_command(java.path, jars, props, log4j),
            name=f"connect-{'eos' if exactly_once else 'plain'}",
            log=log_path,
            grace=30.0,
        )
        try:
            wait_until(self._answers, start_timeout, f"the Connect worker at {self.url}", step=0.2)
        except BaseException:
            self.close(failed=True)
            raise

    def _answers(self) -> bool:
        self.check_alive()
        status, _ = http_get(self.url + "/connectors")
        return status == 200

    def put_connector(self, name: str, config: dict[str, str], timeout: float = 90.0) -> None:
        """Create (or update) connector ``name``. A worker that is still joining its group or
        reading its config topic answers 409 or 5xx: it is asked again until ``timeout``."""
        answers: list[str] = []

        def accepted() -> bool:
            self.check_alive()
            status, body = http_json(
                "PUT", f"{self.url}/connectors/{name}/config", body=config, timeout=30
            )
            answers.append(f"{status} {body}")
            return status in (200, 201)

        try:
            wait_until(accepted, timeout, f"connector {name} accepted", step=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer: {answers[-1:]}") from None

    def task_states(self, name: str) -> list[str]:
        """The state of each task of connector ``name`` (RUNNING, FAILED, ...)."""
        status, body = http_json("GET", f"{self.url}/connectors/{name}/status")
        if status != 200 or not isinstance(body, dict):
            return []
        return [str(t.get("state")) for t in body.get("tasks", [])]

    def check_tasks(self, name: str) -> None:
        """Raise if the worker died or a task of ``name`` failed (with the task's trace)."""
        self.check_alive()
        if "FAILED" in self.task_states(name):
            _, body = http_json("GET", f"{self.url}/connectors/{name}/status")
            self.failed = True
            raise AssertionError(f"connector {name} failed: {body}")

    def delete_connector(self, name: str) -> None:
        status, body = http_json("DELETE", f"{self.url}/connectors/{name}", timeout=30)
        if status not in (200, 204, 404):
            raise AssertionError(f"DELETE connector {name} answered {status}: {body}")

    def force(self) -> int:
        # A JVM has no Python stacks to print, and SIGABRT would make it write a crash
        # report into the working directory: SIGQUIT prints its threads into the log.
        self.forced = self.failed = True
        self.signal(signal.SIGQUIT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(2.0)
        return self.kill()


#: the task producer's settings that shape its throughput, as the worker logs them
PRODUCER_KEYS = (
    "acks",
    "batch.size",
    "compression.type",
    "enable.idempotence",
    "linger.ms",
    "max.in.flight.requests.per.connection",
)


def logged_producer(log_text: str, client_id: str) -> dict[str, str]:
    """The :data:`PRODUCER_KEYS` of the producer ``client_id`` from a worker's log, which
    prints each client's whole configuration (``ProducerConfig values:`` and a tab-indented
    ``name = value`` a line) when it creates it; {} when it is not there."""
    for block in log_text.split("ProducerConfig values:")[1:]:
        values: dict[str, str] = {}
        for line in block.splitlines()[1:]:
            if not line.startswith("\t"):
                break
            name, _, value = line.strip().partition(" = ")
            values[name] = value
        if values.get("client.id") == client_id:
            return {k: values[k] for k in PRODUCER_KEYS if k in values}
    return {}


def file_source(path: Path, topic: str, *, exactly_once: bool) -> dict[str, str]:
    """FileStreamSourceConnector over ``path`` into ``topic``, one task, Connect's defaults
    otherwise (``batch.size`` 2000 lines a poll; a transaction a poll when exactly once)."""
    config = {"connector.class": FILE_SOURCE, "tasks.max": "1", "file": str(path), "topic": topic}
    if exactly_once:
        # the worker refuses to run the connector unless it can keep exactly-once
        config["exactly.once.support"] = "required"
    return config


def write_values(path: Path, n: int, size: int) -> Path:
    """A file of the generator's first ``n`` values, one a line (FileStreamSource reads lines;
    the values hold no newline)."""
    with path.open("wb", buffering=1 << 20) as out:
        for i in range(n):
            out.write(generator_content(i, size) + b"\n")
    return path


def file_record(size: int, msg: Any) -> Delivered:
    """A record of a file source as the verdict takes it: value ``generator_content(i)`` is
    position (1, i + 1); any other value is a record with no position (corrupt)."""
    value = msg.value() or b""
    head = value.split(b":", 1)[0]
    i = int(head) if head.isdigit() else -1
    ok = i >= 0 and value == generator_content(i, size)
    return Delivered(
        FILE_SUBJECT,
        1 if ok else None,
        i + 1 if ok else None,
        int(msg.partition() or 0),
        int(msg.offset() or 0),
        None,
        str(msg.topic()),
    )


def copy_file(
    worker: ConnectWorker, path: Path, n: int, size: int, *, timeout: float = 600.0
) -> dict[str, Any]:
    """One connector copies the ``n`` values of ``path`` into a fresh topic; its rate (first
    to last record visible), the worker's CPU from the connector's creation to the last
    record, and the exactly-once verdict of a read_committed read after that."""
    name = f"file-{uuid.uuid4().hex[:6]}"
    topic = f"bench-{worker.name}-{name}"
    create_topics(
        AdminClient({"bootstrap.servers": worker.bootstrap}),
        [topic],
        PARTITIONS,
        replication_factor=1,
    )
    watch = EndWatch(worker.bootstrap, topic, PARTITIONS, [worker.pid])
    start = watch.sample()
    worker.put_connector(name, file_source(path, topic, exactly_once=worker.exactly_once))
    asked = [start.mono]

    def check() -> None:
        # the task's state is asked every 2 s only: answering REST costs the worker CPU
        worker.check_alive()
        if watch.samples[-1].mono - asked[0] >= 2.0:
            asked[0] = watch.samples[-1].mono
            worker.check_tasks(name)

    records, win = measure(
        watch, n, functools.partial(file_record, size), check=check, timeout=timeout
    )
    worker.delete_connector(name)
    verdicts = judge({FILE_SUBJECT: [(1, i + 1) for i in range(n)]}, records, one_partition=False)
    return {
        **rates(n, size, win, start, win.last.cpu[0] - start.cpu[0]),
        "visible": len(records),
        # offsets that hold no record read_committed: transaction markers (and aborted
        # records), so none without exactly once
        "non_record_offsets": sum(watch.samples[-1].ends) - len(records),
        "task_producer": logged_producer(worker.logs(), f"connector-producer-{name}-0"),
        "exactly_once": {"ok": all(v.ok for v in verdicts), **totals(verdicts)},
        "watcher_cpu_s": round(watch.own_cpu_s, 2),
    }


@contextlib.contextmanager
def connect_files(work: Path, n: int, size: int) -> Iterator[tuple[Path, Path]]:
    """The warm-up file and the measured file of one size, deleted afterwards."""
    warm = write_values(work / f"connect-warmup-{size}.txt", min(n, WARMUP_RECORDS), size)
    data = write_values(work / f"connect-{size}.txt", n, size)
    try:
        yield warm, data
    finally:
        warm.unlink(missing_ok=True)
        data.unlink(missing_ok=True)


def connect_throughput(
    bootstrap: str, work: Path, files: tuple[Path, Path], n: int, size: int, *, exactly_once: bool
) -> dict[str, Any]:
    """A fresh worker copies the warm-up file (not timed), then the measured one."""
    warm, data = files
    with ConnectWorker(bootstrap, work, exactly_once=exactly_once) as worker:
        log(f"  connect worker {worker.name} up; warming up ({min(n, WARMUP_RECORDS)} records)")
        copy_file(worker, warm, min(n, WARMUP_RECORDS), size)
        res = copy_file(worker, data, n, size)
        res.update(
            {
                "exactly_once_source_support": "enabled" if exactly_once else "disabled",
                "warmup_records": min(n, WARMUP_RECORDS),
                "kafka_version": worker.kafka_version,
                "connector": FILE_SOURCE,
            }
        )
        worker.stop()
        return res
