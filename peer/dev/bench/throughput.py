"""Throughput, side by side on one broker: mdpeer (1 and N peers), a bare confluent-kafka
idempotent producer sending the same records, Kafka's Java ``ProducerPerformance``, and a
Kafka Connect worker's FileStreamSource over the same values, exactly once and not.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer.dev.bench import log
from peer.dev.bench.bare import BareJob, bare_in_fresh_process
from peer.dev.bench.connect import connect_files, connect_throughput
from peer.dev.bench.deploy import bench_server, deployment
from peer.dev.bench.producers import PARTITIONS, bare_producer_config, bare_topic, java_perf
from peer.dev.bench.quiet import busy_cores, settle, warm_memory
from peer.dev.bench.session import Broker
from peer.dev.bench.visible import EndWatch, measure, rates
from peer.testing import split_evenly, thread_cpu_seconds, wait_until
from peer.testing.verdict import Delivered, judge, totals
from peer.writer.records import Headers

#: shards of the throughput deployments: 6 splits evenly over 1, 2 or 3 peers
SHARDS = 6


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


def peer_record(msg: Any, sample: Headers) -> Delivered:
    """A consumed peer record as the verdict takes it; the first one's headers go to
    ``sample`` (the bare producer sends that header set)."""
    headers: Headers = []
    for pair in msg.headers() or []:
        name, raw = pair[0], pair[1]
        headers.append((str(name), raw if isinstance(raw, bytes) else str(raw or "").encode()))
    if not sample:
        sample.extend(headers)
    # the generator's bytes are not kept: they name no position
    return Delivered.from_kafka(
        str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0), headers, None
    )


def peer_throughput(
    broker: Broker,
    load: Backlog,
    *,
    peers: int,
    max_per_response: int = 0,
    settings: Mapping[str, object] | None = None,
    warm_mb: int = 0,
) -> tuple[dict[str, Any], Headers, Path]:
    """The server pre-fills ``load``; ``peers`` peers join and split the shards; only then
    are the routes written, so every peer starts at once and start-up is not timed.

    Rate = total / (last record visible - first record visible) to a read_committed consumer,
    seen by the end watch (:mod:`peer.dev.bench.visible`); the records are read and judged
    after that. ``settings``: the peers' settings other than their defaults; ``warm_mb``: memory
    warmed before the round (:func:`~peer.dev.bench.quiet.warm_memory`); both diagnostics.
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
        with deployment(
            broker,
            sim.hostport,
            None,
            shards=SHARDS,
            partitions=PARTITIONS,
            settings=dict(settings or {}),
        ) as dep:
            procs = [dep.start_peer(f"tput-{i}") for i in range(peers)]
            wait_until(lambda: split_evenly(procs, SHARDS), 120, f"{peers} peer(s) owning shards")
            # the server's generator, the previous contender: done
            settled = settle(warm_mb=warm_mb)
            watch = EndWatch(
                broker.bootstrap, dep.topic, PARTITIONS, [sim.pid, *(p.pid for p in procs)]
            )
            threads0 = [thread_cpu_seconds(p.pid) for p in procs]
            start = watch.sample()
            dep.route_subjects(names)

            def alive() -> None:
                for p in procs:
                    p.check_alive()

            sample: Headers = []
            records, win = measure(
                watch, total, functools.partial(peer_record, sample=sample), check=alive
            )
            quiet, after = watch.samples[-1], watch.sample()
            # after the end (the quiet second included: an idle peer's few ms), before the read
            threads = by_role(threads0, [thread_cpu_seconds(p.pid) for p in procs], total)
            server_cpu = win.last.cpu[0] - start.cpu[0]
            peer_cpu = sum(win.last.cpu[1:]) - sum(start.cpu[1:])
            verdicts = judge(expected, records)
            result = {
                "peers": peers,
                "subjects": load.subjects,
                **rates(total, load.size, win, start, peer_cpu),
                "server_cpu_cores": round(server_cpu / max(win.last.mono - start.mono, 1e-3), 2),
                "server_cpu_us_per_msg": round(server_cpu / total * 1e6, 2),
                # every process (broker, server, peers): under the cores, the peer waits
                "machine_busy_cores": round(busy_cores(start.machine, win.last.machine), 2),
                "cpu_us_per_msg_by_thread": threads,
                "visible": len(records),
                # nothing may be written once every message is visible: it would be a duplicate
                "ends_moved_after_read": after.ends != quiet.ends,
                "duplicates": totals(verdicts)["duplicates"],
                "exactly_once": {"ok": all(v.ok for v in verdicts), **totals(verdicts)},
                "watcher_cpu_s": round(watch.own_cpu_s, 2),
                "before": settled,
            }
            return result, sample, dep.config


#: the warm-up pass's backlog, at most: as many as Java's ProducerPerformance warms up with
WARMUP_MESSAGES = 50_000
#: what a run keeps of each round (the whole results of the median round are kept too)
_ROUND_KEYS = ("msgs_per_s", "cpu_us_per_msg", "cpu_cores")
#: kept of each round as measured, without a median
_ROUND_EXTRAS = (
    "cpu_us_per_msg_by_thread",
    "server_cpu_us_per_msg",
    "machine_busy_cores",
    "before",
)


def by_role(
    before: list[dict[str, float]], after: list[dict[str, float]], n: int
) -> dict[str, float]:
    """CPU µs per message of the peers' threads by role (:func:`thread_cpu_seconds`), summed
    over the peers: which thread grows when the same code costs more (issue 14)."""
    out: dict[str, float] = {}
    for b, a in zip(before, after, strict=True):
        for role, seconds in a.items():
            out[role] = out.get(role, 0.0) + seconds - b.get(role, 0.0)
    return {role: round(s / n * 1e6, 2) for role, s in out.items()}


def throughput_for_size(
    broker: Broker,
    load: Backlog,
    peer_counts: list[int],
    *,
    connect: bool = True,
    rounds: int = 1,
    warmup: bool = True,
    settings: Mapping[str, object] | None = None,
    warm_mb: int = 0,
) -> dict[str, Any]:
    """Every contender for one message size; ratios against the bare producer.

    The broker starts cold (its JIT compiles the produce and transaction paths during the
    first load), and the first contender would pay for that: so an untimed peer pass of up to
    :data:`WARMUP_MESSAGES` goes first (``warmup``), as Java's tool and the Connect workers get
    their own warm-ups. Then ``rounds`` rounds, each every peer count and then the bare
    producer, side by side in time: the machine's speed drifts by tens of percent within
    minutes here, so the ratios against the bare producer are the median of each round's
    own ratio, and each contender's figures the median over the rounds (every round listed
    under ``rounds``).
    """
    n, size = load.n, load.size
    out: dict[str, Any] = {"size": size, "messages": n, "rounds": rounds, "warmup": warmup}
    if settings:
        out["peer_settings"] = dict(settings)
    if warm_mb:
        out["warm_memory_mb"] = warm_mb
    if warmup:
        small = Backlog(min(n, WARMUP_MESSAGES), size, load.subjects)
        res, _, _ = peer_throughput(broker, small, peers=peer_counts[0], settings=settings)
        log(f"  {size} B, warm-up pass (not counted): {summary(res)}")
    sample: Headers = []
    config: Path | None = None
    runs: dict[str, list[dict[str, Any]]] = {}
    conf: dict[str, Any] = {}
    for r in range(1, rounds + 1):
        for count in peer_counts:
            res, hdrs, config = peer_throughput(
                broker, load, peers=count, settings=settings, warm_mb=warm_mb
            )
            sample = sample or hdrs
            runs.setdefault(f"peer{count}", []).append(res)
            log(f"  {size} B, {count} peer(s), round {r}/{rounds}: {summary(res)}")
        if config is None:
            raise ValueError("throughput needs at least one peer count")
        if not conf:
            conf = bare_producer_config(config)
        # a fresh process each round, as every peer round is (:mod:`peer.dev.bench.bare`)
        job = BareJob(
            broker.bootstrap,
            bare_topic(broker.admin),
            conf,
            load.total,
            size,
            load.names,
            sample,
            warm_mb,
        )
        res = bare_in_fresh_process(job)
        runs.setdefault("bare", []).append(res)
        log(f"  {size} B, bare producer, round {r}/{rounds}: {summary(res)}")
    for name, results in runs.items():
        out[name] = median_of(results)
    # the JVM contenders are fresh processes too: the same warmed memory before each
    warm_memory(warm_mb)
    out["java"] = java_perf(broker.bootstrap, broker.admin, conf, n, size)
    log(f"  {size} B, Java ProducerPerformance: {summary(out['java'])}")
    if connect:
        with connect_files(broker.work, load.total, size) as files:
            for name, eos in (("connect_eos", True), ("connect", False)):
                warm_memory(warm_mb)
                out[name] = connect_throughput(
                    broker.bootstrap, broker.work, files, load.total, size, exactly_once=eos
                )
                log(f"  {size} B, Kafka Connect {name}: {summary(out[name])}")
    out["ratios"] = ratios(out, peer_counts)
    out["ratios"].update(paired_ratios(runs, peer_counts))
    return out


def median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender over the rounds: the round of median msg/s, whole, with msg/s, CPU per
    message and cores each replaced by its own median, every round under ``rounds``, and
    ``exactly_once.ok`` (where judged) true only if it held in every round."""
    if len(results) == 1:
        return results[0]
    done = [r for r in results if "msgs_per_s" in r]
    if not done:
        return results[-1]
    out = dict(sorted(done, key=lambda r: r["msgs_per_s"])[len(done) // 2])
    for key in _ROUND_KEYS:
        values = [r[key] for r in done if r.get(key) is not None]
        if values:
            out[key] = statistics.median(values)
    out["rounds"] = [
        {k: r.get(k) for k in (*_ROUND_KEYS, *_ROUND_EXTRAS) if k in r} for r in results
    ]
    if "ends_moved_after_read" in out:  # a write after the end in any round: a duplicate
        out["ends_moved_after_read"] = any(r.get("ends_moved_after_read") for r in results)
    if "exactly_once" in out:
        out["exactly_once"] = {
            **out["exactly_once"],
            "ok": all(r.get("exactly_once", {}).get("ok") for r in results),
        }
    return out


def paired_ratios(runs: dict[str, list[dict[str, Any]]], peer_counts: list[int]) -> dict[str, Any]:
    """peerN / bare (msg/s, and CPU per message) as the median of the rounds' own ratios,
    each round's peers against the bare producer run right after them; each round's ratio
    is listed under ``<name>_rounds``."""
    out: dict[str, Any] = {}
    bare = runs.get("bare", [])
    for c in peer_counts:
        peers = runs.get(f"peer{c}", [])
        for name, key in (
            (f"peer{c}_vs_bare", "msgs_per_s"),
            (f"peer{c}_cpu_per_msg_vs_bare", "cpu_us_per_msg"),
        ):
            each = [
                round(p[key] / b[key], 3)
                for p, b in zip(peers, bare, strict=False)
                if p.get(key) and b.get(key)
            ]
            if each:
                out[name] = round(statistics.median(each), 3)
                out[f"{name}_rounds"] = each
    return out


def summary(res: dict[str, Any]) -> str:
    """msg/s, MB/s and CPU per message of a contender, or why it has none."""
    if "msgs_per_s" not in res:
        return str(res.get("skipped") or res.get("error"))
    cpu = res.get("cpu_us_per_msg")
    text = f"{res['msgs_per_s']} msg/s ({res['mb_per_s']} MB/s), {cpu} µs CPU/msg"
    before = res.get("before")
    if before:
        text += f" (settled {before['settle_s']} s, {before['busy_share']:.0%} busy)"
    return text


def ratios(res: dict[str, Any], peer_counts: list[int]) -> dict[str, float | None]:
    """peerN / bare, peerN / java, bare / java, peerN / connect_eos, peerN / connect and
    connect_eos / bare (msgs/s), and peerN's CPU per message over bare's, connect_eos's and
    connect's; None where one is missing."""

    def rate(name: str, key: str) -> float | None:
        value = res.get(name, {}).get(key)
        return float(value) if value else None

    def ratio(a: str, b: str, key: str = "msgs_per_s") -> float | None:
        x, y = rate(a, key), rate(b, key)
        return round(x / y, 3) if x is not None and y else None

    out = {f"peer{c}_vs_bare": ratio(f"peer{c}", "bare") for c in peer_counts}
    out.update({f"peer{c}_vs_java": ratio(f"peer{c}", "java") for c in peer_counts})
    out["bare_vs_java"] = ratio("bare", "java")
    out.update({f"peer{c}_vs_connect_eos": ratio(f"peer{c}", "connect_eos") for c in peer_counts})
    out.update({f"peer{c}_vs_connect": ratio(f"peer{c}", "connect") for c in peer_counts})
    out["connect_eos_vs_bare"] = ratio("connect_eos", "bare")
    for c in peer_counts:
        for other in ("bare", "connect_eos", "connect"):
            out[f"peer{c}_cpu_per_msg_vs_{other}"] = ratio(f"peer{c}", other, "cpu_us_per_msg")
    return out
