#!/usr/bin/env python3
"""Benchmark of ``mdpeer run`` against the issue's targets (not a test).

    uv run python scripts/bench_peer.py            # full run (~3-5 min), JSON to docs/bench/
    uv run python scripts/bench_peer.py --quick    # smaller sizes

One local 1-node Kafka (free ports, temp data dir) and one ``mdpeer sim serve --port 0``
subprocess serve every part, so all numbers come from the same broker in the same run:

1. **throughput**, 1 KB values: (i) a bare confluent-kafka idempotent producer (acks=all,
   the peer's linger.ms) sends N pre-built values, time until all are delivered; (ii) the
   server's generator pre-fills N 1 KB messages (cache big enough to hold them all), then one
   peer bridges them; rate = N / (last - first committed record seen by a read_committed
   consumer). The ratio (ii)/(i) is the target (>= 0.6).
2. **failover**, default peer settings, two peers, generator live: SIGTERM of one, then (after
   a fresh peer has joined) SIGKILL of one; time from the signal until every subject of the
   moved shards has a new record visible to a read_committed consumer.
3. **latency** at ``--latency-rate`` msg/s: closure (the generator's publish time, ms) to
   arrival at a read_committed consumer; p50/p99/p99.9, for each ``--commit-intervals``.

Every process it starts (broker, server, peers) is stopped on every exit path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import confluent_kafka
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from peer.admin import admin_producer, ensure_control_topic, write_routes
from peer.localkafka import LocalKafka, free_port_base
from peer.routes import Route
from peer.shards import shard_of
from peer.source.base import StartPolicy

ROOT = Path(__file__).resolve().parent.parent
MDPEER = str(Path(sys.executable).with_name("mdpeer"))
PEER_LINGER_MS = 5  # peer.config.producer_config's linger.ms: the bare producer uses the same


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def wait_until(cond: Any, timeout: float, what: str, step: float = 0.05) -> float:
    """Wait for ``cond()``; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)
    return time.monotonic()


# --- processes ---------------------------------------------------------------------------


class SimProcess:
    """``mdpeer sim serve --port 0`` in its own process (its CPU is its own)."""

    def __init__(self, *args: str) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [MDPEER, "sim", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"sim serve did not start: {line!r}")
        self.url = line.split()[-1]
        self.hostport = self.url.split("://", 1)[1]

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def generate(self, prefix: str, count: int, rate: float, size: int, total: int | None) -> None:
        spec = {"prefix": prefix, "count": count, "rate": rate, "size": size, "total": total}
        self.admin("POST", "/admin/generate", spec)

    def generator(self) -> dict[str, Any]:
        return dict(self.admin("GET", "/admin/generate")["generator"])

    def stop_generator(self) -> None:
        with contextlib.suppress(Exception):
            self.admin("DELETE", "/admin/generate")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


class PeerProcess:
    """One ``mdpeer run``; JSON logs on stderr go to a temp file."""

    def __init__(self, config: Path, peer_id: str) -> None:
        self.peer_id = peer_id
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MDPEER_")}
        self.proc = subprocess.Popen(
            [MDPEER, "run", "--config", str(config), "--peer-id", peer_id],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=env,
        )

    def logs(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def owned(self) -> set[int]:
        owned: set[int] = set()
        for line in self.logs().splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            msg = entry.get("msg")
            if msg == "shards assigned":
                owned = set(entry["owned"])
            elif msg in ("shards revoked", "shards lost"):
                owned -= set(entry["shards"])
        return owned

    def last_rebuild_s(self) -> float | None:
        rebuild = None
        for line in self.logs().splitlines():
            if line.startswith("{") and '"shards assigned"' in line:
                with contextlib.suppress(ValueError):
                    rebuild = json.loads(line).get("rebuild_s")
        return rebuild

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"peer {self.peer_id} exited {self.proc.returncode}:\n{self.logs()[-2000:]}"
            )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@dataclass
class Deployment:
    """A group: control topic + routes + target topic, peers started from one config."""

    bootstrap: str
    group: str
    shards: int
    topic: str
    config: Path
    peers: list[PeerProcess] = field(default_factory=list)

    def start_peer(self, peer_id: str) -> PeerProcess:
        peer = PeerProcess(self.config, peer_id)
        self.peers.append(peer)
        return peer

    def close(self) -> None:
        for peer in self.peers:
            peer.close()


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextlib.contextmanager
def deployment(
    bootstrap: str,
    admin: AdminClient,
    workdir: Path,
    server: str,
    subjects: list[str],
    *,
    shards: int,
    partitions: int,
    settings: dict[str, Any],
) -> Iterator[Deployment]:
    group = f"bench-{uuid.uuid4().hex[:8]}"
    topic = f"{group}.data"
    create_topic(admin, topic, partitions)
    ensure_control_topic(admin, f"{group}.control", shards, None, bootstrap=bootstrap)
    config = workdir / f"{group}.toml"
    lines = [f"{k} = {toml_value(v)}" for k, v in {"bootstrap": bootstrap, "group": group}.items()]
    lines += [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    lines += ["[source]", f"servers = {toml_value(server)}"]
    config.write_text("\n".join(lines) + "\n")
    producer = admin_producer({"bootstrap.servers": bootstrap}, group)
    try:
        start = StartPolicy.parse("history:1000000")
        routes = [Route(s, topic, start=start) for s in subjects]
        write_routes(producer, f"{group}.control", shards, routes)
    finally:
        producer.flush(5)
    dep = Deployment(bootstrap, group, shards, topic, config)
    try:
        yield dep
    finally:
        dep.close()


def create_topic(admin: AdminClient, topic: str, partitions: int) -> None:
    for fut in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        fut.result(30)


# --- reading back ------------------------------------------------------------------------


class Tail:
    """A read_committed consumer of one topic from the beginning, in a thread.

    For each record: arrival time (wall and monotonic), subject, seq, closure.
    """

    def __init__(self, bootstrap: str, topic: str, keep: bool = True) -> None:
        self.keep = keep
        self.count = 0
        self.first_mono: float | None = None
        self.last_mono: float | None = None
        self.seen: set[tuple[str, int, int]] = set()
        self.duplicates = 0
        self.latencies_ms: list[float] = []
        self.latency_from: float | None = None  # wall time; only records arriving after
        self.arrivals: dict[str, list[float]] = {}  # subject -> monotonic arrival times
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-tail-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
            }
        )
        md = self._consumer.list_topics(topic, timeout=10)
        parts = md.topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = self._consumer.consume(5000, 0.05)
            if not msgs:
                continue
            mono, wall = time.monotonic(), time.time()
            for msg in msgs:
                if msg.error() is not None:
                    continue
                headers: dict[str, bytes] = {}
                for pair in msg.headers() or []:
                    name, raw = pair[0], pair[1]
                    headers[str(name)] = raw if isinstance(raw, bytes) else str(raw or "").encode()
                subject = headers.get("md.subject", b"").decode()
                epoch = int(headers.get("md.epoch", b"0"))
                seq = int(headers.get("md.seq", b"0"))
                key = (subject, epoch, seq)
                if key in self.seen:
                    self.duplicates += 1
                else:
                    self.seen.add(key)
                if self.keep:
                    self.arrivals.setdefault(subject, []).append(mono)
                closure = headers.get("md.closure")
                if self.latency_from is not None and wall >= self.latency_from and closure:
                    self.latencies_ms.append(wall * 1000 - int(closure))
                self.count += 1
            if self.first_mono is None:
                self.first_mono = mono
            self.last_mono = mono

    def first_after(self, subject: str, t: float) -> float | None:
        for arrival in self.arrivals.get(subject, []):
            if arrival > t:
                return arrival
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- 1. throughput -----------------------------------------------------------------------


def bare_producer(bootstrap: str, admin: AdminClient, n: int, size: int) -> dict[str, Any]:
    topic = f"bench-bare-{uuid.uuid4().hex[:6]}"
    create_topic(admin, topic, 4)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": PEER_LINGER_MS,
            "queue.buffering.max.messages": max(100_000, n + 1),
        }
    )
    values = [(f"{i}:".encode() + b"x" * size)[:size] for i in range(n)]
    keys = [f"/bench/{i % 10 + 1}".encode() for i in range(n)]
    delivered = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1

    producer.produce(topic, b"warmup", on_delivery=on_delivery)
    producer.flush(30)
    delivered = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for key, value in zip(keys, values, strict=True):
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(120)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    if delivered != n:
        raise RuntimeError(f"bare producer: {delivered} of {n} delivered")
    return {
        "messages": n,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(n / elapsed),
        "producer_cpu_cores": round(cpu / elapsed, 2),
    }


def peer_throughput(
    bootstrap: str,
    admin: AdminClient,
    work: Path,
    *,
    n: int,
    size: int,
    subjects: int,
    max_per_response: int,
) -> dict[str, Any]:
    per_subject = n // subjects
    total = per_subject * subjects
    sim = SimProcess(
        "--cache-size",
        str(per_subject + 10),
        "--cache-expire",
        "3600",
        "--max-per-response",
        str(max_per_response),
    )
    tail: Tail | None = None
    try:
        sim.generate("/tput", subjects, 0, size, total)
        wait_until(lambda: not sim.generator()["running"], 300, "the generator to finish", 0.2)
        names = [f"/tput/{i}" for i in range(1, subjects + 1)]
        settings = {"metrics_port": 0}
        with deployment(
            bootstrap, admin, work, sim.hostport, names, shards=4, partitions=4, settings=settings
        ) as dep:
            tail = Tail(bootstrap, dep.topic, keep=False)
            peer = dep.start_peer("tput-1")
            scpu0 = cpu_seconds(sim.proc.pid)
            wait_until(lambda: tail is not None and tail.first_mono is not None, 120, "records")
            pcpu0 = cpu_seconds(peer.proc.pid)

            def done() -> bool:
                peer.check_alive()
                return tail is not None and len(tail.seen) >= total

            wait_until(done, 300, f"{total} records visible")
            time.sleep(1.0)  # anything beyond N now would be a duplicate
            assert tail.first_mono is not None
            assert tail.last_mono is not None
            elapsed = tail.last_mono - tail.first_mono
            pcpu = cpu_seconds(peer.proc.pid) - pcpu0
            scpu = cpu_seconds(sim.proc.pid) - scpu0
            return {
                "messages": total,
                "subjects": subjects,
                "seconds": round(elapsed, 3),
                "msgs_per_s": round(total / elapsed),
                "peer_cpu_cores": round(pcpu / elapsed, 2),
                "server_cpu_cores": round(scpu / elapsed, 2),
                "visible": tail.count,
                "duplicates": tail.duplicates,
                "server_max_per_response": max_per_response,
            }
    finally:
        if tail is not None:
            tail.close()
        sim.stop()


# --- 2. failover -------------------------------------------------------------------------


def failover(
    bootstrap: str,
    admin: AdminClient,
    work: Path,
    *,
    subjects: int,
    rate: float,
    bound: float,
    txn_timeout_ms: int | None,
) -> dict[str, Any]:
    shards = 4
    sim = SimProcess("--cache-size", "100000", "--cache-expire", "3600")
    tail: Tail | None = None
    names = [f"/fo/{i}" for i in range(1, subjects + 1)]
    by_shard: dict[int, list[str]] = {}
    for s in names:
        by_shard.setdefault(shard_of(s, shards), []).append(s)
    # default peer settings unless asked otherwise (a diagnostic, not the target's condition)
    settings = {} if txn_timeout_ms is None else {"transaction_timeout_ms": txn_timeout_ms}
    out: dict[str, Any] = {"subjects": subjects, "rate": rate, "settings": settings or "defaults"}
    try:
        sim.generate("/fo", subjects, rate, 1024, None)
        with deployment(
            bootstrap,
            admin,
            work,
            sim.hostport,
            names,
            shards=shards,
            partitions=4,
            settings=settings,
        ) as dep:
            tail = Tail(bootstrap, dep.topic)
            a, b = dep.start_peer("fo-a"), dep.start_peer("fo-b")

            def shared(p: PeerProcess, q: PeerProcess) -> bool:
                p.check_alive()
                q.check_alive()
                po, qo = p.owned(), q.owned()
                return bool(po) and bool(qo) and len(po | qo) == shards and not po & qo

            wait_until(lambda: shared(a, b), 120, "two peers sharing the shards")
            time.sleep(3.0)  # steady flow on every subject
            out["sigterm"] = measure_move(
                a, b, signal.SIGTERM, by_shard=by_shard, tail=tail, bound=bound
            )
            log(f"SIGTERM: {out['sigterm']}")
            c = dep.start_peer("fo-c")
            wait_until(lambda: shared(b, c), 120, "a fresh peer taking shards")
            time.sleep(3.0)
            out["sigkill"] = measure_move(
                c, b, signal.SIGKILL, by_shard=by_shard, tail=tail, bound=bound
            )
            log(f"SIGKILL: {out['sigkill']}")
    finally:
        sim.stop_generator()
        if tail is not None:
            tail.close()
        sim.stop()
    return out


def measure_move(
    victim: PeerProcess,
    survivor: PeerProcess,
    sig: int,
    *,
    by_shard: dict[int, list[str]],
    tail: Tail,
    bound: float,
) -> dict[str, Any]:
    moved_shards = sorted(victim.owned())
    moved = [s for p in moved_shards for s in by_shard.get(p, [])]
    t_sig = time.monotonic()
    victim.proc.send_signal(sig)
    t_owned = wait_until(
        lambda: set(moved_shards) <= survivor.owned(), bound, "the survivor owning the shards"
    )
    # Only the survivor can write these subjects now: a record arriving after it owns them is
    # the new owner's (the victim's committed ones arrived long before, its open one is dead).
    firsts: dict[str, float] = {}

    def all_flowing() -> bool:
        survivor.check_alive()
        for s in moved:
            if s not in firsts:
                t = tail.first_after(s, t_owned)
                if t is not None:
                    firsts[s] = t
        return len(firsts) == len(moved)

    result: dict[str, Any] = {
        "moved_shards": moved_shards,
        "moved_subjects": len(moved),
        "owned_after_s": round(t_owned - t_sig, 2),
        "survivor_rebuild_s": survivor.last_rebuild_s(),
    }
    if sig == signal.SIGTERM:
        with contextlib.suppress(subprocess.TimeoutExpired):
            victim.proc.wait(bound)
        result["victim_exit_s"] = round(time.monotonic() - t_sig, 2)
        result["exit_code"] = victim.proc.returncode
    try:
        wait_until(all_flowing, bound, "every moved subject flowing again")
        result["flowing_after_s"] = round(max(firsts.values()) - t_sig, 2)
        result["first_subject_after_s"] = round(min(firsts.values()) - t_sig, 2)
    except TimeoutError:
        result["flowing_after_s"] = None
        result["note"] = f"{len(firsts)}/{len(moved)} subjects flowing within {bound}s"
    return result


# --- 3. latency --------------------------------------------------------------------------


def latency(
    bootstrap: str,
    admin: AdminClient,
    work: Path,
    *,
    commit_ms: int,
    rate: float,
    subjects: int,
    seconds: float,
) -> dict[str, Any]:
    sim = SimProcess("--cache-size", "10000", "--cache-expire", "3600")
    tail: Tail | None = None
    prefix = f"/lat{commit_ms}"
    names = [f"{prefix}/{i}" for i in range(1, subjects + 1)]
    try:
        settings = {"commit_interval_ms": commit_ms}
        with deployment(
            bootstrap, admin, work, sim.hostport, names, shards=4, partitions=4, settings=settings
        ) as dep:
            tail = Tail(bootstrap, dep.topic, keep=False)
            peer = dep.start_peer(f"lat-{commit_ms}")
            wait_until(lambda: len(peer.owned()) == 4, 120, "the peer owning every shard")
            sim.generate(prefix, subjects, rate, 1024, None)
            time.sleep(3.0)  # warm-up
            tail.latency_from = time.time()
            pcpu0, scpu0, t0 = cpu_seconds(peer.proc.pid), cpu_seconds(sim.proc.pid), time.time()
            g0 = sim.generator()["published"]
            time.sleep(seconds)
            peer.check_alive()
            tail.latency_from = None
            t1 = time.time()
            achieved = (sim.generator()["published"] - g0) / (t1 - t0)
            pcpu = cpu_seconds(peer.proc.pid) - pcpu0
            scpu = cpu_seconds(sim.proc.pid) - scpu0
            lat = sorted(tail.latencies_ms)
            if not lat:
                raise RuntimeError("no latency samples")
            return {
                "commit_interval_ms": commit_ms,
                "rate_target": rate,
                "rate_achieved": round(achieved),
                "samples": len(lat),
                "p50_ms": round(pct(lat, 0.5), 1),
                "p99_ms": round(pct(lat, 0.99), 1),
                "p999_ms": round(pct(lat, 0.999), 1),
                "max_ms": round(lat[-1], 1),
                "mean_ms": round(statistics.fmean(lat), 1),
                "peer_cpu_cores": round(pcpu / (t1 - t0), 2),
                "server_cpu_cores": round(scpu / (t1 - t0), 2),
            }
    finally:
        sim.stop_generator()
        if tail is not None:
            tail.close()
        sim.stop()


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# --- main --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "mem_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "confluent_kafka": str(confluent_kafka.__version__),
        "librdkafka": confluent_kafka.libversion()[0],
        "java": (java.stderr.splitlines() or [""])[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000, help="throughput N")
    parser.add_argument("--size", type=int, default=1024, help="value bytes")
    parser.add_argument(
        "--max-per-response",
        type=int,
        default=0,
        help="reference server's page size for the throughput backlog (0 = unlimited)",
    )
    parser.add_argument("--subjects", type=int, default=10, help="subjects (throughput, latency)")
    parser.add_argument("--failover-subjects", type=int, default=20)
    parser.add_argument("--failover-rate", type=float, default=1000.0, help="msgs/s, live")
    parser.add_argument("--failover-bound", type=float, default=90.0, help="max wait, s")
    parser.add_argument(
        "--failover-txn-timeout-ms", type=int, default=None, help="diagnostic; default: peer's"
    )
    parser.add_argument("--latency-rate", type=float, default=1000.0)
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--commit-intervals", default="100,50")
    parser.add_argument("--skip", default="", help="comma list of: throughput,failover,latency")
    parser.add_argument("--quick", action="store_true", help="N=30000, 6 s latency windows")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "bench" / "peer.json")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.latency_seconds = 30_000, 6.0
    skip = set(filter(None, args.skip.split(",")))

    # SIGTERM/SIGHUP → SystemExit so every finally below runs.
    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, _exit)

    doc: dict[str, Any] = {
        "machine": machine(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join(["uv run python scripts/bench_peer.py", *sys.argv[1:]]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        work = Path(tmp)
        cluster = LocalKafka(
            work / "kafka", nodes=1, port=free_port_base(1), tie_to_parent=True
        ).start()
        try:
            bootstrap = cluster.bootstrap
            admin = AdminClient({"bootstrap.servers": bootstrap})
            log(f"kafka at {bootstrap}")
            if "throughput" not in skip:
                bare = bare_producer(bootstrap, admin, args.messages, args.size)
                log(f"bare producer: {bare}")
                peer = peer_throughput(
                    bootstrap,
                    admin,
                    work,
                    n=args.messages,
                    size=args.size,
                    subjects=args.subjects,
                    max_per_response=args.max_per_response,
                )
                log(f"peer: {peer}")
                doc["throughput"] = {
                    "bare_producer": bare,
                    "peer": peer,
                    "ratio": round(peer["msgs_per_s"] / bare["msgs_per_s"], 3),
                }
            if "failover" not in skip:
                doc["failover"] = failover(
                    bootstrap,
                    admin,
                    work,
                    subjects=args.failover_subjects,
                    rate=args.failover_rate,
                    bound=args.failover_bound,
                    txn_timeout_ms=args.failover_txn_timeout_ms,
                )
            if "latency" not in skip:
                doc["latency"] = []
                for ms in (int(x) for x in args.commit_intervals.split(",")):
                    res = latency(
                        bootstrap,
                        admin,
                        work,
                        commit_ms=ms,
                        rate=args.latency_rate,
                        subjects=args.subjects,
                        seconds=args.latency_seconds,
                    )
                    log(f"latency: {res}")
                    doc["latency"].append(res)
        finally:
            cluster.stop()
    doc["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    doc["wall_s"] = round(time.monotonic() - t_start, 1)
    doc["targets"] = targets(doc)
    print(table(doc))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwritten: {args.json}")
    return 0


def targets(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "throughput" in doc:
        out["throughput_ratio>=0.6"] = doc["throughput"]["ratio"] >= 0.6
    if "failover" in doc:
        kill = doc["failover"]["sigkill"].get("flowing_after_s")
        term = doc["failover"]["sigterm"].get("flowing_after_s")
        out["sigkill<=15s"] = kill is not None and kill <= 15
        out["sigterm<=3s"] = term is not None and term <= 3
    for res in doc.get("latency", []):
        out[f"p99<=300ms@commit{res['commit_interval_ms']}"] = res["p99_ms"] <= 300
    return out


def table(doc: dict[str, Any]) -> str:
    rows = ["", f"{'measure':44} {'result':>24}  target"]

    def row(name: str, value: object, target: str = "") -> None:
        rows.append(f"{name:44} {value!s:>24}  {target}")

    if "throughput" in doc:
        t = doc["throughput"]
        row("bare idempotent producer, msgs/s", t["bare_producer"]["msgs_per_s"])
        row("one peer, exactly-once, msgs/s", t["peer"]["msgs_per_s"])
        row("  peer / bare", t["ratio"], ">= 0.6")
        row(
            "  peer cpu / server cpu (cores)",
            f"{t['peer']['peer_cpu_cores']} / {t['peer']['server_cpu_cores']}",
        )
        row("  duplicates seen", t["peer"]["duplicates"], "0")
    if "failover" in doc:
        for kind, target in (("sigterm", "<= 3 s"), ("sigkill", "<= 15 s")):
            f = doc["failover"][kind]
            row(f"{kind}: survivor owns the shards, s", f["owned_after_s"])
            row(f"{kind}: every moved subject flowing, s", f.get("flowing_after_s"), target)
    for res in doc.get("latency", []):
        ms = res["commit_interval_ms"]
        row(
            f"latency commit {ms} ms: p50 / p99 / p99.9 ms",
            f"{res['p50_ms']} / {res['p99_ms']} / {res['p999_ms']}",
            "p99 <= 300",
        )
    rows.append("")
    rows += [f"target {k}: {'met' if v else 'MISSED'}" for k, v in doc["targets"].items()]
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
