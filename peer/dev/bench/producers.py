"""The producers mdpeer is measured against: a bare confluent-kafka idempotent producer
sending the same records, and Kafka's Java ``ProducerPerformance``; and the values every
contender writes (the reference server's generator's).
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from peer.config.load import load_settings
from peer.dev.bench.deploy import create_topic
from peer.dev.bench.quiet import busy_cores, jiffies
from peer.dev.localkafka.runtime import find_java, resolve_jars, stderr_progress
from peer.kafka.clients import producer_config
from peer.model import Message
from peer.testing import cpu_seconds, thread_cpu_seconds
from peer.writer.records import Headers, java_partition, message_headers

#: headers as confluent-kafka's ``produce`` types them
WireHeaders = list[tuple[str, str | bytes | None]]

#: partitions of every contender's target topic
PARTITIONS = 6
#: the Java tool's heap; it holds at most ``buffer.memory`` (32 MB) of records
JAVA_HEAP = "-Xmx256m"


def generator_content(i: int, size: int) -> bytes:
    """Message ``i``'s content as the reference server's generator makes it (``peer.dev.sim``)."""
    head = f"{i}:"
    return (head + "x" * max(size - len(head), 0))[:size].encode()


def bare_producer_config(peer_config: Path) -> dict[str, Any]:
    """The peer's own producer config (same linger, queue, acks, idempotence), minus
    transactions: what a plain idempotent producer would run with."""
    settings = load_settings(peer_config, {}, {"peer_id": "bare"})
    conf: dict[str, Any] = dict(producer_config(settings))
    for name in ("transactional.id", "transaction.timeout.ms", "client.id"):
        conf.pop(name, None)
    return conf


def same_records(
    n: int, size: int, subjects: list[str], partitions: int, sample: Headers
) -> list[tuple[int, bytes, WireHeaders]]:
    """(partition, value, headers) of the ``n`` records the peer wrote for the generator's
    ``n`` messages: same values, no key (the routes have none), partition from the subject
    as the peer's writer computes it, and the header set of ``sample`` (a peer record's)."""
    names = dict(sample)
    epoch = int(names.get("md.epoch", b"1"))
    mtype = names.get("md.type", b"HISTORICAL").decode()
    closure = names.get("md.closure", str(int(time.time() * 1000)).encode()).decode()
    qos = names["md.qos"].decode() if "md.qos" in names else None
    k = len(subjects)
    part_of = {s: java_partition(s.encode(), partitions) for s in subjects}
    out = []
    for i in range(n):
        subject = subjects[i % k]
        msg = Message(
            subject,
            generator_content(i, size),
            epoch,
            i // k + 1,
            mtype,
            closure=closure,
            retained=True,
            qos=qos,
        )
        wire: WireHeaders = list(message_headers(msg, "md."))
        out.append((part_of[subject], msg.content, wire))
    return out


def bare_topic(admin: AdminClient) -> str:
    """A fresh target topic for one bare producer run."""
    topic = f"bench-bare-{uuid.uuid4().hex[:6]}"
    create_topic(admin, topic, PARTITIONS)
    return topic


def produce_records(
    bootstrap: str,
    topic: str,
    conf: dict[str, Any],
    records: list[tuple[int, bytes, WireHeaders]],
) -> dict[str, Any]:
    """The bare producer's timed part: ``records`` into ``topic``, until every delivery
    report; this process's CPU (every thread) over that window."""
    n = len(records)
    producer = Producer(
        {
            **conf,
            "bootstrap.servers": bootstrap,
            "queue.buffering.max.messages": max(
                int(conf.get("queue.buffering.max.messages", 0)), n + 1
            ),
        }
    )
    delivered = failed = 0
    errors: list[str] = []
    # The peer may ask for reports of failures only (it saves a callback per record); the
    # bare producer runs with the same setting, so success is "flushed and nothing failed".
    only_errors = str(conf.get("delivery.report.only.error", False)).lower() == "true"

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal delivered, failed
        if err is None:
            delivered += 1
            return
        failed += 1
        if len(errors) < 3:
            errors.append(str(err))

    producer.produce(topic, b"warmup", on_delivery=on_delivery)  # the PID is acquired before
    if producer.flush(30) != 0 or failed:
        raise RuntimeError(f"bare producer: the warm-up record was not delivered: {errors}")
    delivered = 0
    # This whole process's CPU (/proc, every thread: librdkafka's too) while it produces;
    # nothing else of the benchmark runs then.
    cpu0, threads0 = cpu_seconds(os.getpid()), thread_cpu_seconds(os.getpid())
    t0, machine0 = time.perf_counter(), jiffies()
    for partition, value, headers in records:
        while True:
            try:
                producer.produce(
                    topic,
                    value,
                    None,
                    partition=partition,
                    headers=headers,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(300)
    elapsed, machine1 = time.perf_counter() - t0, jiffies()
    if only_errors and left == 0:
        delivered = n - failed
    cpu, threads1 = cpu_seconds(os.getpid()) - cpu0, thread_cpu_seconds(os.getpid())
    if delivered != n:
        raise RuntimeError(f"bare producer: {delivered} of {n} delivered; errors: {errors}")
    value_bytes = sum(len(v) for _, v, _ in records)
    return {
        "messages": n,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(n / elapsed),
        "mb_per_s": round(value_bytes / elapsed / 1e6, 2),
        "cpu_s": round(cpu, 2),
        "cpu_cores": round(cpu / elapsed, 2),
        "cpu_us_per_msg": round(cpu / n * 1e6, 2),
        "machine_busy_cores": round(busy_cores(machine0, machine1), 2),
        # as the peer's: is librdkafka's work per message the same in both?
        "cpu_us_per_msg_by_thread": {
            role: round((threads1[role] - threads0.get(role, 0.0)) / n * 1e6, 2)
            for role in threads1
        },
        "headers_per_record": len(records[0][2]) if records else 0,
        "delivery_report_only_error": only_errors,
    }


_PERF_LINE = re.compile(
    # with --warmup-records the last line is the "steady state" one, after the warm-up
    r"(\d+) (?:steady state )?records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), "
    r"([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th"
)


def parse_perf_summary(output: str) -> dict[str, Any] | None:
    """The last (summary) line of ``ProducerPerformance``; None if there is none."""
    found = _PERF_LINE.findall(output)
    if not found:
        return None
    sent, rate, mb, avg, mx, p50, p95, p99, p999 = found[-1]
    return {
        "messages": int(sent),
        "msgs_per_s": round(float(rate)),
        # the tool's "MB" is 2^20 bytes; reported here in 10^6 like the others
        "mb_per_s": round(float(mb) * 1024 * 1024 / 1e6, 2),
        "avg_latency_ms": float(avg),
        "max_latency_ms": float(mx),
        "p50_ms": int(p50),
        "p95_ms": int(p95),
        "p99_ms": int(p99),
        "p999_ms": int(p999),
    }


def java_perf(
    bootstrap: str, admin: AdminClient, conf: dict[str, Any], n: int, size: int
) -> dict[str, Any]:
    """``org.apache.kafka.tools.ProducerPerformance`` of the broker's release, unthrottled,
    with the bare producer's acks / idempotence / linger."""
    jars = resolve_jars(progress=stderr_progress)
    if not list(jars.libs.glob("kafka-tools-*.jar")):
        return {"skipped": f"no kafka-tools jar in {jars.libs}: run `mdpeer kafka install`"}
    java = find_java()
    # A cold JVM interprets the first records: they are sent but left out of its summary.
    warmup = min(n, 50_000)
    topic = f"bench-java-{uuid.uuid4().hex[:6]}"
    create_topic(admin, topic, PARTITIONS)
    props = [
        f"bootstrap.servers={bootstrap}",
        "acks=all",
        "enable.idempotence=true",
        f"linger.ms={conf.get('linger.ms', 5)}",
    ]
    cmd = [
        java.path,
        JAVA_HEAP,
        "-cp",
        jars.classpath,
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(n + warmup),
        "--warmup-records",
        str(warmup),
        "--record-size",
        str(size),
        "--throughput",
        "-1",
        "--producer-props",
        *props,
    ]
    t0 = time.monotonic()
    # Its CPU, every thread, counted by the kernel when it is reaped (the only child that
    # ends meanwhile): JVM start-up, JIT and warm-up records included.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = parse_perf_summary(done.stdout)
    if done.returncode != 0 or summary is None:
        tail = (done.stderr or done.stdout)[-800:]
        return {"error": f"exit {done.returncode}: {tail}"}
    return {
        **summary,
        "warmup_records": warmup,
        "summary_line": done.stdout.strip().splitlines()[-1],
        "wall_s": round(time.monotonic() - t0, 2),
        "cpu_s": round(cpu, 2),
        "cpu_us_per_msg": round(cpu / (n + warmup) * 1e6, 2),
        "cpu_window": "the whole JVM run: start-up, JIT, warm-up and measured records",
        "kafka_version": jars.version,
        "producer_props": props[1:],
    }
