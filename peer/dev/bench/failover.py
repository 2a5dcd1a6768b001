"""Failover: time from SIGTERM / SIGKILL of a peer until every subject of the shards it owned
is flowing again (a new record visible to a read_committed consumer); then, with publishing
stopped, the exactly-once verdict over everything the consumer saw."""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import time
from typing import Any

from peer.control.shards import shard_of
from peer.dev.bench import log
from peer.dev.bench.deploy import REBUILD_METRIC, bench_server, deployment
from peer.dev.bench.session import Broker
from peer.dev.bench.tail import Tail
from peer.testing import PeerProcess, SimProcess, WaitTimeoutError, split_evenly, wait_until
from peer.testing.verdict import Pos, totals

SHARDS = 4
#: how long the peers get, once publishing stopped, to deliver what was published
DRAIN_S = 60.0


def add_failover_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--failover-*`` options (both benchmark scripts run this part)."""
    parser.add_argument("--failover-subjects", type=int, default=20)
    parser.add_argument("--failover-rate", type=float, default=1000.0, help="msg/s, live")
    parser.add_argument("--failover-bound", type=float, default=90.0, help="max wait, s")
    parser.add_argument(
        "--failover-txn-timeout-ms",
        type=int,
        default=None,
        help="diagnostic; default: the peer's own",
    )


def failover_of(broker: Broker, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`failover` as the ``--failover-*`` options ask (``--failover-x`` is its ``x``)."""
    prefix = "failover_"
    asked = {k.removeprefix(prefix): v for k, v in vars(args).items() if k.startswith(prefix)}
    return failover(broker, **asked)


def failover(
    broker: Broker,
    *,
    subjects: int,
    rate: float,
    bound: float,
    txn_timeout_ms: int | None = None,
) -> dict[str, Any]:
    """Two peers share the shards, generator live; SIGTERM one; a fresh peer joins; SIGKILL
    one. Default peer settings unless ``txn_timeout_ms`` (a diagnostic) is given."""
    names = [f"/fo/{i}" for i in range(1, subjects + 1)]
    by_shard: dict[int, list[str]] = {}
    for s in names:
        by_shard.setdefault(shard_of(s, SHARDS), []).append(s)
    settings = {} if txn_timeout_ms is None else {"transaction_timeout_ms": txn_timeout_ms}
    out: dict[str, Any] = {"subjects": subjects, "rate": rate, "settings": settings or "defaults"}
    with bench_server("--cache-size", "100000", "--cache-expire", "3600") as sim:
        sim.generate("/fo", subjects, rate, 1024, None)
        with (
            deployment(
                broker, sim.hostport, names, shards=SHARDS, partitions=4, settings=settings
            ) as dep,
            Tail(broker.bootstrap, dep.topic) as tail,
        ):
            a, b = dep.start_peer("fo-a"), dep.start_peer("fo-b")
            wait_until(lambda: split_evenly([a, b], SHARDS), 120, "two peers sharing the shards")
            time.sleep(3.0)  # steady flow on every subject
            out["sigterm"] = measure_move(
                a, b, signal.SIGTERM, by_shard=by_shard, tail=tail, bound=bound
            )
            log(f"  SIGTERM: {out['sigterm']}")
            c = dep.start_peer("fo-c")
            wait_until(lambda: split_evenly([b, c], SHARDS), 120, "a fresh peer taking shards")
            time.sleep(3.0)
            out["sigkill"] = measure_move(
                c, b, signal.SIGKILL, by_shard=by_shard, tail=tail, bound=bound
            )
            log(f"  SIGKILL: {out['sigkill']}")
            out["exactly_once"] = drained_verdict(sim, tail, names)
            out["duplicates"] = out["exactly_once"]["duplicates"]
            log(f"  exactly once: {out['exactly_once']}")
    return out


def drained_verdict(sim: SimProcess, tail: Tail, subjects: list[str]) -> dict[str, Any]:
    """Stop publishing, wait (bounded) until the consumer saw every subject's last message,
    then judge: every message once, in order, none missing (its cache lost none)."""
    sim.stop_generator()
    state = sim.state()["subjects"]
    heads: dict[str, Pos] = {
        s: (int(state[s]["epoch"]), int(state[s]["head_seq"])) for s in subjects if s in state
    }
    expected = {s: [(epoch, n) for n in range(1, head + 1)] for s, (epoch, head) in heads.items()}
    want = sum(len(v) for v in expected.values())
    with contextlib.suppress(WaitTimeoutError):  # not drained: the verdict says what is missing
        wait_until(lambda: len(tail.seen) >= want, DRAIN_S, "every published message", step=0.2)
    time.sleep(1.0)  # anything arriving now would be a duplicate: give it the chance to show
    verdicts = tail.check(expected)
    return {"ok": all(v.ok for v in verdicts), **totals(verdicts)}


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
    rebuilt_before = survivor.metric(f"{REBUILD_METRIC}_sum")
    t_sig = time.monotonic()
    victim.signal(sig)
    # "owns" = its /readyz lists them as owned and no longer rebuilding: it works on them
    t_owned = wait_until(
        lambda: set(moved_shards) <= survivor.owned(), bound, "the survivor owning the shards"
    )
    # Only the survivor can write these subjects now: a record arriving after it owns them is
    # the new owner's (the victim's committed ones arrived before, its open one is dead).
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
        # the time its rebuilds took since the signal, as its metrics report it
        "survivor_rebuild_s": round(survivor.metric(f"{REBUILD_METRIC}_sum") - rebuilt_before, 3),
    }
    if sig == signal.SIGTERM:
        with contextlib.suppress(subprocess.TimeoutExpired):
            victim.proc.wait(bound)
        result["victim_exit_s"] = round(time.monotonic() - t_sig, 2)
        result["exit_code"] = victim.returncode
    try:
        wait_until(all_flowing, bound, "every moved subject flowing again")
        result["flowing_after_s"] = round(max(firsts.values()) - t_sig, 2)
        result["first_subject_after_s"] = round(min(firsts.values()) - t_sig, 2)
    except WaitTimeoutError:
        result["flowing_after_s"] = None
        result["note"] = f"{len(firsts)}/{len(moved)} subjects flowing within {bound}s"
    return result
