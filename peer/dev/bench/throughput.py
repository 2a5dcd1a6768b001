"""Throughput, side by side on one broker: mdpeer (1 and N peers), a bare confluent-kafka
idempotent producer sending the same records, and Kafka's Java ``ProducerPerformance``.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from peer.config.load import load_settings
from peer.dev.bench import log
from peer.dev.bench.deploy import bench_server, create_topic, deployment
from peer.dev.bench.session import Broker
from peer.dev.bench.tail import Tail
from peer.dev.localkafka.runtime import find_java, resolve_jars, stderr_progress
from peer.kafka.clients import producer_config
from peer.model import Message
from peer.testing import cpu_seconds, split_evenly, wait_until
from peer.testing.verdict import totals
from peer.writer.records import Headers, java_partition, message_headers

#: headers as confluent-kafka's ``produce`` types them
WireHeaders = list[tuple[str, str | bytes | None]]

#: shards of the throughput deployments: 6 splits evenly over 1, 2 or 3 peers
SHARDS = 6
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


def bare_producer(
    bootstrap: str,
    admin: AdminClient,
    conf: dict[str, Any],
    records: list[tuple[int, bytes, WireHeaders]],
) -> dict[str, Any]:
    """Time from the first ``produce`` until every record's delivery report (acks=all)."""
    n = len(records)
    topic = f"bench-bare-{uuid.uuid4().hex[:6]}"
    create_topic(admin, topic, PARTITIONS)
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
    cpu0 = time.process_time()
    t0 = time.perf_counter()
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
    elapsed = time.perf_counter() - t0
    if only_errors and left == 0:
        delivered = n - failed
    cpu = time.process_time() - cpu0
    if delivered != n:
        raise RuntimeError(f"bare producer: {delivered} of {n} delivered; errors: {errors}")
    value_bytes = sum(len(v) for _, v, _ in records)
    return {
        "messages": n,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(n / elapsed),
        "mb_per_s": round(value_bytes / elapsed / 1e6, 2),
        "producer_cpu_cores": round(cpu / elapsed, 2),
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
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    summary = parse_perf_summary(done.stdout)
    if done.returncode != 0 or summary is None:
        tail = (done.stderr or done.stdout)[-800:]
        return {"error": f"exit {done.returncode}: {tail}"}
    return {
        **summary,
        "warmup_records": warmup,
        "summary_line": done.stdout.strip().splitlines()[-1],
        "wall_s": round(time.monotonic() - t0, 2),
        "kafka_version": jars.version,
        "producer_props": props[1:],
    }


@dataclass(frozen=True)
class Backlog:
    """What a throughput run bridges: ``n`` messages of ``size`` bytes over ``subjects``
    subjects, pre-filled on a fresh reference server (the bare producer sends the same)."""

    n: int
    size: int
    subjects: int

    @property
    def names(self) -> list[str]:
        return [f"/tput/{i}" for i in range(1, self.subjects + 1)]

    @property
    def total(self) -> int:
        """``n`` rounded down to whole rounds over the subjects: what is published."""
        return self.n // self.subjects * self.subjects


def peer_throughput(
    broker: Broker, load: Backlog, *, peers: int, max_per_response: int = 0
) -> tuple[dict[str, Any], Headers, Path]:
    """The server pre-fills ``load``; ``peers`` peers join and split the shards; only then
    are the routes written, so every peer starts at once and start-up is not timed.

    Rate = total / (last record visible - first record visible) to a read_committed consumer.
    Returns the result, one record's headers and the peer config used.
    """
    per_subject = load.n // load.subjects
    total = load.total
    cache = ("--cache-size", str(per_subject + 10), "--cache-expire", "3600")
    pages = ("--max-per-response", str(max_per_response))
    with bench_server(*cache, *pages, "--max-message-size", str(max(65536, load.size))) as sim:
        # a fresh server each run; the bare producer's subjects are the same
        sim.generate("/tput", load.subjects, 0, load.size, total)
        sim.wait_generated(300)
        names = load.names
        state = sim.state()["subjects"]
        # one epoch, seqs 1..head: the server's cache holds every message it was given
        expected = {
            s: [(int(state[s]["epoch"]), seq) for seq in range(1, int(state[s]["head_seq"]) + 1)]
            for s in names
        }
        with (
            deployment(
                broker, sim.hostport, None, shards=SHARDS, partitions=PARTITIONS, settings={}
            ) as dep,
            Tail(broker.bootstrap, dep.topic, keep=False, sample=True) as tail,
        ):
            procs = [dep.start_peer(f"tput-{i}") for i in range(peers)]
            wait_until(lambda: split_evenly(procs, SHARDS), 120, f"{peers} peer(s) owning shards")
            cpu0 = [cpu_seconds(p.pid) for p in procs]
            scpu0 = cpu_seconds(sim.pid)
            dep.route_subjects(names)
            wait_until(lambda: tail.first_mono is not None, 120, "records")

            def done() -> bool:
                for p in procs:
                    p.check_alive()
                return len(tail.seen) >= total

            wait_until(done, 600, f"{total} records visible", step=0.1)
            time.sleep(1.0)  # anything beyond N now would be a duplicate
            assert tail.first_mono is not None
            assert tail.last_mono is not None
            elapsed = max(tail.last_mono - tail.first_mono, 1e-3)
            pcpu = sum(cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True))
            scpu = cpu_seconds(sim.pid) - scpu0
            verdicts = tail.check(expected)
            result = {
                "peers": peers,
                "messages": total,
                "subjects": load.subjects,
                "seconds": round(elapsed, 3),
                "msgs_per_s": round(total / elapsed),
                "mb_per_s": round(total * load.size / elapsed / 1e6, 2),
                "peer_cpu_cores": round(pcpu / elapsed, 2),
                "server_cpu_cores": round(scpu / elapsed, 2),
                "visible": tail.count,
                "duplicates": totals(verdicts)["duplicates"],
                "exactly_once": {"ok": all(v.ok for v in verdicts), **totals(verdicts)},
            }
            return result, list(tail.sample_headers or []), dep.config


def throughput_for_size(broker: Broker, load: Backlog, peer_counts: list[int]) -> dict[str, Any]:
    """Every contender for one message size; ratios against the bare producer."""
    n, size = load.n, load.size
    out: dict[str, Any] = {"size": size, "messages": n}
    sample: Headers = []
    config: Path | None = None
    for count in peer_counts:
        res, hdrs, config = peer_throughput(broker, load, peers=count)
        sample = sample or hdrs
        out[f"peer{count}"] = res
        log(f"  {size} B, {count} peer(s): {res['msgs_per_s']} msg/s ({res['mb_per_s']} MB/s)")
    if config is None:
        raise ValueError("throughput needs at least one peer count")
    conf = bare_producer_config(config)
    records = same_records(load.total, size, load.names, PARTITIONS, sample)
    admin = broker.admin
    out["bare"] = bare_producer(broker.bootstrap, admin, conf, records)
    # the fairness claim, checked: the bare records carry the header names a peer record had
    out["bare"]["same_header_names_as_peer"] = [h for h, _ in records[0][2]] == [
        h for h, _ in sample
    ]
    del records
    bare = out["bare"]
    log(f"  {size} B, bare producer: {bare['msgs_per_s']} msg/s ({bare['mb_per_s']} MB/s)")
    out["java"] = java_perf(broker.bootstrap, admin, conf, n, size)
    log(f"  {size} B, Java ProducerPerformance: {out['java'].get('msgs_per_s', out['java'])}")
    out["ratios"] = ratios(out, peer_counts)
    return out


def ratios(res: dict[str, Any], peer_counts: list[int]) -> dict[str, float | None]:
    """peerN / bare and peerN / java and bare / java (msgs/s), None where one is missing."""

    def rate(name: str) -> float | None:
        value = res.get(name, {}).get("msgs_per_s")
        return float(value) if value else None

    def ratio(a: str, b: str) -> float | None:
        x, y = rate(a), rate(b)
        return round(x / y, 3) if x is not None and y else None

    out = {f"peer{c}_vs_bare": ratio(f"peer{c}", "bare") for c in peer_counts}
    out.update({f"peer{c}_vs_java": ratio(f"peer{c}", "java") for c in peer_counts})
    out["bare_vs_java"] = ratio("bare", "java")
    return out
