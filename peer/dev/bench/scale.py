"""Scale: shard-state rebuild time and peer memory for many subjects.

Per size N: the control topic holds N route records and N checkpoint records; the rebuild is
timed twice, (a) ``read_shards`` of every shard in this process (the peer's on_assign code,
without the peer) and (b) the rebuild time a real ``mdpeer run`` reports in its metrics
(``mdpeer_shard_rebuild_seconds``) when it is assigned every shard. That peer then runs
against a reference server holding one message per subject, and its RSS is read from /proc
while it owns all N subjects.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Producer

from peer.control import encode_checkpoint
from peer.control.reader import read_shards
from peer.control.shards import shard_of
from peer.dev.bench import log
from peer.dev.bench.deploy import REBUILD_METRIC, bench_server, deployment, subscribed
from peer.dev.bench.session import Broker
from peer.testing import SimProcess, cpu_seconds, memory_mb, wait_until

SHARDS = 12
#: doorbell mode: the window in which the request rate must have settled before measuring
SETTLE_S = 10.0


def find_epoch(state: object) -> int | None:
    """The first integer ``epoch`` anywhere in the server's admin state JSON."""
    if isinstance(state, dict):
        value = state.get("epoch")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        items: list[object] = list(state.values())
    elif isinstance(state, list):
        items = list(state)
    else:
        return None
    for item in items:
        found = find_epoch(item)
        if found is not None:
            return found
    return None


def write_checkpoints(bootstrap: str, topic: str, subjects: list[str], epoch: int) -> None:
    """One checkpoint per subject at (epoch, 1), in its shard's partition."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            "queue.buffering.max.messages": max(100_000, len(subjects) + 1),
        }
    )
    for subject in subjects:
        key, value = encode_checkpoint(subject, epoch, 1, cmd=None)
        while True:
            try:
                producer.produce(topic, value, key, partition=shard_of(subject, SHARDS))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} checkpoint records not delivered to {topic}")


def consumes(sim: SimProcess) -> int:
    """Consume requests the server has answered so far."""
    return int(sim.state("/none")["requests"].get("consume", 0))


def settle(sim: SimProcess, *, ceiling: float) -> None:
    """Wait until the server sees at most ``ceiling`` consume requests/s over
    ``SETTLE_S``: the first fetches and the fetches the subscriptions' allowances ring
    (one per subject, thousands a second at 100k) are over."""
    state = {"at": time.monotonic(), "n": consumes(sim)}

    def calm() -> bool:
        now, n = time.monotonic(), consumes(sim)
        if now - state["at"] < SETTLE_S:
            return False
        rate = (n - state["n"]) / (now - state["at"])
        state.update(at=now, n=n)
        return rate <= ceiling

    wait_until(calm, 900, f"consume requests settling below {ceiling:.0f}/s", step=1.0)


def scale_point(
    broker: Broker, *, subjects: int, settle_s: float, doorbell: dict[str, str] | None = None
) -> dict[str, Any]:
    """``doorbell``: a doorbell-mode peer's environment (``doorbell_env``; None: polling); CPU
    and requests are then measured once every subject is subscribed and armed (the first
    fetches and rings are over)."""
    prefix = f"/sc{uuid.uuid4().hex[:4]}"
    names = [f"{prefix}/{i}" for i in range(1, subjects + 1)]
    with bench_server("--cache-size", "10", "--cache-expire", "3600") as sim:
        sim.generate(prefix, subjects, 0, 100, subjects)  # one message per subject
        sim.wait_generated(300)
        epoch = find_epoch(sim.admin("GET", f"/admin/state?subject={prefix}/1")) or 1
        with deployment(
            broker, sim.hostport, None, shards=SHARDS, partitions=4, settings={}
        ) as dep:
            t0 = time.monotonic()
            dep.route_subjects(names)
            write_checkpoints(broker.bootstrap, dep.control, names, epoch)
            fill_s = time.monotonic() - t0
            t0 = time.monotonic()
            states = read_shards(
                {"bootstrap.servers": broker.bootstrap}, dep.control, None, timeout=300, settle=5.0
            )
            read_s = time.monotonic() - t0
            routes = sum(len(s.state.subjects()) for s in states.values())
            if routes != subjects:
                raise RuntimeError(f"read_shards rebuilt {routes} routes, {subjects} written")
            log(f"  {subjects} subjects: read_shards {read_s:.2f} s (control fill {fill_s:.1f} s)")
            peer = dep.start_peer(f"scale-{subjects}", env=doorbell)

            def owns_all() -> bool:
                peer.check_alive()
                return len(peer.owned()) == SHARDS  # its /readyz: owned and rebuilt

            t_start = time.monotonic()
            wait_until(
                owns_all, 300, f"the peer working every shard ({subjects} subjects)", step=0.2
            )
            assigned_after = time.monotonic() - t_start
            # the peer's own measure of its rebuilds (a new peer: every one of them)
            rebuild = round(peer.metric(f"{REBUILD_METRIC}_sum"), 3)
            if doorbell:
                wait_until(lambda: subscribed(sim) >= subjects, 600, "every subject subscribed")
                safety_s = int(doorbell.get("MDPEER_POLL_SAFETY_INTERVAL_MS", 30_000)) / 1000
                settle(sim, ceiling=1.5 * subjects / safety_s + 20)
            cpu0, t_owned = cpu_seconds(peer.pid), time.monotonic()
            req0 = consumes(sim)
            samples: list[float] = []
            while time.monotonic() - t_owned < settle_s:  # sampling RSS, not waiting on it
                peer.check_alive()
                samples.append(memory_mb(peer.pid).get("rss_mb", 0.0))
                time.sleep(0.5)
            mem = memory_mb(peer.pid)
            window = max(time.monotonic() - t_owned, 1e-3)
            result = {
                "mode": "doorbell" if doorbell else "polling",
                "safety_interval_ms": (doorbell or {}).get("MDPEER_POLL_SAFETY_INTERVAL_MS"),
                "requests_per_s": round((consumes(sim) - req0) / window, 1),
                "subjects": subjects,
                "shards": SHARDS,
                "control_records": 2 * subjects,
                "read_shards_s": round(read_s, 3),
                "peer_rebuild_s": rebuild,
                "peer_assigned_after_start_s": round(assigned_after, 2),
                "rss_mb": mem.get("rss_mb"),
                "rss_max_sampled_mb": max(samples) if samples else None,
                "hwm_mb": mem.get("hwm_mb"),
                "rss_after_owned_s": settle_s,
                "peer_cpu_cores_while_owning": round((cpu_seconds(peer.pid) - cpu0) / window, 3),
            }
            log(
                f"  {subjects} subjects: peer rebuild {rebuild} s, RSS {result['rss_mb']} MB "
                f"(peak {result['hwm_mb']} MB)"
            )
            return result
