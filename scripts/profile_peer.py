#!/usr/bin/env python3
"""Where one peer spends its CPU per message (docs/PERFORMANCE.md, "The hot path").

uv run python scripts/profile_peer.py                       # 1 KB x 100,000, 30 subjects
uv run python scripts/profile_peer.py --profiler none       # CPU and msg/s only
uv run python scripts/profile_peer.py --wall --lines        # per thread, idle too, by line
uv run python scripts/profile_peer.py --profiler cprofile   # exact call counts

The setup is the throughput benchmark's (``peer.dev.bench.throughput``): a fresh 1-node Kafka
(or ``MDPEER_BOOTSTRAP``), a reference server pre-filled with the backlog by its own
generator, a group of 6 shards and a 6-partition target topic, routes written once the peer
owns every shard. The peer runs in this process, so both of its Python threads are seen: the
main loop (routing, writer, checkpoints) and the REST source's I/O thread (HTTP, decode,
resume, buffer). Nothing else of the script runs while the peer works (no consumer reads the
topic: the end is the peer's own committed checkpoints).

Printed, for the window from the routes' write to the last checkpoint committed: msg/s; CPU
per message of the whole process (``time.process_time``) and per thread (the loop, the source
thread, librdkafka's threads, from ``/proc/self/task/*/schedstat``); how many messages the
source decoded per message delivered (above 1: answers parsed and let go); the reference
server's CPU per message and how many of the machine's cores were busy (they compete for the
same cores); the garbage collector's time; then the top functions in microseconds per
message. ``py-spy`` (on PATH, else ``uvx py-spy``) samples the thread holding the GIL, so
its tables are Python CPU; ``--wall`` samples every thread, idle or not (where the loop
waits). ``cprofile`` counts every call exactly, but its overhead, with
each thread timed by its own CPU clock, inflates the run several times: read it as shares.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka.admin import AdminClient

from peer.config.load import load_settings
from peer.control.admin import ensure_control_topic
from peer.dev.bench.idle import CollectorClock
from peer.dev.bench.quiet import busy_cores, jiffies
from peer.dev.localkafka import start_on_free_ports
from peer.model import Message, StartPolicy
from peer.ops import logs
from peer.routes.model import Route
from peer.runner import GC_YOUNG_THRESHOLD, SWITCH_INTERVAL_S, Peer
from peer.source import follow as follow_module
from peer.source import heads as heads_module
from peer.source.rest import RestSource, RestSourceConfig
from peer.source.wire import decode_consume
from peer.testing import SimProcess, cpu_seconds, create_topics, wait_until
from peer.testing.deployment import Deployment

SHARDS = 6
PARTITIONS = 6
#: the source thread's name (peer.source.rest), the one thread profiled besides the main one
SOURCE_THREAD = "mdpeer-rest-source"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--messages", type=int, default=100_000, help="backlog size")
    p.add_argument("--size", type=int, default=1024, help="value bytes")
    p.add_argument("--subjects", type=int, default=30)
    p.add_argument("--top", type=int, default=25, help="functions per table")
    p.add_argument(
        "--profiler",
        choices=["py-spy", "cprofile", "none"],
        default="py-spy",
        help="py-spy: sampling, no overhead (py-spy on PATH, else `uvx py-spy`); cprofile: "
        "deterministic, every call counted but slowed; none: CPU and rate only",
    )
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--lines", action="store_true", help="py-spy: per line, not per function")
    p.add_argument("--wall", action="store_true", help="py-spy: every thread's wall time")
    return p.parse_args()


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """MDPEER_BOOTSTRAP, or a fresh 1-node Kafka stopped on exit."""
    given = os.environ.get("MDPEER_BOOTSTRAP")
    if given:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="mdpeer-profile-") as tmp:
        cluster = start_on_free_ports(Path(tmp) / "kafka", 1)
        try:
            yield cluster.bootstrap
        finally:
            cluster.stop()


@contextlib.contextmanager
def reference_server(*args: str) -> Iterator[SimProcess]:
    sim = SimProcess(*args)
    try:
        yield sim
    finally:
        sim.close()


class ThreadProfiles:
    """One cProfile per profiled thread, each timed by its own thread's CPU clock."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []

    def main(self) -> cProfile.Profile:
        prof = cProfile.Profile(time.thread_time)
        self.profiles.append(prof)
        return prof

    def run(self, fn: Callable[[], int]) -> int:
        """``fn()`` with this thread profiled."""
        result: int = self.main().runcall(fn)
        return result

    def hook(self, _frame: FrameType, _event: str, _arg: Any) -> None:
        """``threading.setprofile``: the first event of a new thread starts its profiler
        (which replaces this hook) if it is the source's thread, else unhooks."""
        sys.setprofile(None)
        if threading.current_thread().name == SOURCE_THREAD:
            self.main().enable()

    def stats(self) -> pstats.Stats:
        for prof in self.profiles:
            prof.create_stats()
        merged = pstats.Stats(self.profiles[0], stream=io.StringIO())
        for prof in self.profiles[1:]:
            merged.add(prof)
        return merged


def top(stats: pstats.Stats, n_msgs: int, key: str, count: int) -> list[str]:
    """``count`` rows sorted by ``key`` (own or cumulative), in µs per message."""
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    index = 2 if key == "own" else 3
    rows = sorted(raw.items(), key=lambda kv: kv[1][index], reverse=True)[:count]
    out = [f"{'own µs':>8} {'cum µs':>8} {'calls/msg':>9}  function"]
    for (path, line, name), (_cc, calls, own, cum, _callers) in rows:
        where = name if path == "~" else f"{short(path)}:{line}({name})"
        out.append(
            f"{own / n_msgs * 1e6:8.2f} {cum / n_msgs * 1e6:8.2f} {calls / n_msgs:9.3f}  {where}"
        )
    return out


def short(path: str) -> str:
    for mark in ("/peer/", "/site-packages/", "/lib/python"):
        if mark in path:
            return path[path.index(mark) + 1 :]
    return path


class Decoded:
    """Counts what the source decodes (wrapping its ``decode_consume``): parsing an answer
    whose rest is then let go and fetched again shows as more decoded than delivered."""

    def __init__(self) -> None:
        self.messages = 0
        self.nbytes = 0
        self._decode = decode_consume

    def __call__(self, subject: str, body: bytes | bytearray) -> list[Message]:
        messages = self._decode(subject, body)
        self.messages += len(messages)
        self.nbytes += len(body)
        return messages


#: per thread, from /proc: CPU seconds (schedstat), user and system seconds, minor page
#: faults (stat), voluntary and involuntary context switches (status)
ThreadSample = tuple[str, float, float, float, int, int, int]
_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[int, ThreadSample]:
    """Each live thread of this process: its role and counters so far. Roles: the peer's
    loop, the source's I/O thread, librdkafka's threads, and the rest."""
    roles = {threading.main_thread().native_id: "main loop"}
    roles |= {t.native_id: "source I/O" for t in threading.enumerate() if t.name == SOURCE_THREAD}
    out: dict[int, ThreadSample] = {}
    for tid in os.listdir("/proc/self/task"):
        task = Path(f"/proc/self/task/{tid}")
        try:
            name = (task / "comm").read_text().strip()
            ns = int((task / "schedstat").read_text().split()[0])
            stat = (task / "stat").read_text().rpartition(")")[2].split()
            status = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines())
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        role = roles.get(int(tid)) or ("librdkafka" if name.startswith("rdk:") else "other")
        # stat after the ")": state is [0], minflt [7], utime [11], stime [12]
        out[int(tid)] = (
            role,
            ns / 1e9,
            int(stat[11]) / _TICK,
            int(stat[12]) / _TICK,
            int(stat[7]),
            int(status["voluntary_ctxt_switches"]),
            int(status["nonvoluntary_ctxt_switches"]),
        )
    return out


def by_role(
    before: dict[int, ThreadSample], after: dict[int, ThreadSample], n_msgs: int
) -> list[str]:
    """Per role in the window, per message: CPU, user and system µs, minor faults and
    context switches per 1,000 messages (threads that ended meanwhile are lost)."""
    spent: dict[str, list[float]] = {}
    for tid, (role, *now) in after.items():
        then = before.get(tid, (role, 0.0, 0.0, 0.0, 0, 0, 0))[1:]
        sums = spent.setdefault(role, [0.0] * len(now))
        for i, (a, b) in enumerate(zip(now, then, strict=True)):
            sums[i] += a - b
    head = f"{'thread':<12} {'CPU µs':>7} {'user µs':>8} {'sys µs':>7} {'faults/k':>9} "
    out = [head + f"{'vol cs/k':>9} {'invol cs/k':>10}"]
    for role, (cpu, user, sys_, flt, vcs, ics) in sorted(spent.items(), key=lambda kv: -kv[1][0]):
        us, per_k = 1e6 / n_msgs, 1e3 / n_msgs
        out.append(
            f"{role:<12} {cpu * us:7.2f} {user * us:8.2f} {sys_ * us:7.2f} {flt * per_k:9.2f} "
            f"{vcs * per_k:9.2f} {ics * per_k:10.2f}"
        )
    return out


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident (or peak resident: ``VmHWM``) memory in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def committed_all(peer: Peer, heads: dict[str, int]) -> bool:
    """Every subject's committed seq reached the server's head (read from another thread:
    a dict changing meanwhile is just asked again)."""
    try:
        tracks = {s: peer.owned.subjects.get(s) for s in heads}
    except RuntimeError:
        return False
    for subject, head in heads.items():
        track = tracks[subject]
        if track is None or track.committed is None or track.committed.seq < head:
            return False
    return True


class Sampler:
    """``py-spy record`` of this very process while the window lasts. By default only the
    thread holding the GIL is sampled (``--gil``), so the samples are the Python threads'
    CPU; with ``wall`` every Python thread is, idle or not, per thread: where the loop
    waits (a commit, an empty buffer) shows."""

    def __init__(self, rate: int, out: Path, *, lines: bool = False, wall: bool = False) -> None:
        self.rate = rate
        self.out = out
        self.lines = lines
        self.wall = wall
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        spy = shutil.which("py-spy")
        cmd = [spy] if spy else ["uvx", "py-spy"]
        pid, rate, out = str(os.getpid()), str(self.rate), str(self.out)
        flags = ["--nonblocking", "--format", "raw", *([] if self.lines else ["--function"])]
        flags += ["--idle", "--threads"] if self.wall else ["--gil"]
        self._proc = subprocess.Popen(
            [*cmd, "record", "--pid", pid, "--rate", rate, *flags, "-o", out],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        _, err = self._proc.communicate(timeout=60)
        if not self.out.exists():
            raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')[-800:]}")

    def tables(self, n_msgs: int, count: int) -> list[str]:
        """Own and cumulative samples per function, in µs per message (per thread: wall)."""
        own: dict[str, Counter[str]] = {}
        cum: dict[str, Counter[str]] = {}
        for line in self.out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            frames = [short(f) for f in stack.split(";") if f]
            thread = "GIL holder"
            if self.wall and frames and frames[0].startswith("thread ("):
                thread = frames.pop(0).partition("): ")[2]  # "thread (<tid>): <name>"
            if not frames:
                continue
            own.setdefault(thread, Counter())[frames[-1]] += int(n)
            for frame in set(frames):
                cum.setdefault(thread, Counter())[frame] += int(n)
        per = 1e6 / self.rate / n_msgs
        kind = "wall" if self.wall else "sampled GIL holder"
        out: list[str] = []
        for thread in sorted(own):
            for key, counts in (("own", own[thread]), ("cumulative", cum[thread])):
                out.append(f"\n{thread}: top {count} by {key} time ({kind}, µs per message):")
                out.append(f"{'own µs':>8} {'cum µs':>8}  function")
                for name, _ in counts.most_common(count):
                    row = f"{own[thread][name] * per:8.2f} {cum[thread][name] * per:8.2f}"
                    out.append(f"{row}  {name}")
        return out


def main() -> int:
    args = parse_args()
    logs.configure("WARNING", json_lines=False)
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as `mdpeer run` does
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])  # and this
    per_subject = args.messages // args.subjects
    total = per_subject * args.subjects
    names = [f"/tput/{i}" for i in range(1, args.subjects + 1)]
    sim_args = ("--cache-size", str(per_subject + 10), "--cache-expire", "3600")
    size_args = ("--max-message-size", str(max(65536, args.size)))
    with (
        broker() as bootstrap,
        reference_server(*sim_args, *size_args) as sim,
        tempfile.TemporaryDirectory(prefix="mdpeer-profile-") as tmp,
    ):
        sim.generate("/tput", args.subjects, 0, args.size, total)
        sim.wait_generated(300)
        heads = {s: int(v["head_seq"]) for s, v in sim.state()["subjects"].items()}
        group = f"profile-{uuid.uuid4().hex[:8]}"
        topic, control = f"{group}.data", f"{group}.control"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        create_topics(admin, [topic], PARTITIONS, replication_factor=1)
        ensure_control_topic(admin, control, SHARDS, None, bootstrap=bootstrap)
        config = Path(tmp) / "peer.toml"
        config.write_text(
            f'bootstrap = "{bootstrap}"\ngroup = "{group}"\n[source]\nservers = "{sim.hostport}"\n'
        )
        dep = Deployment(bootstrap, group, control, SHARDS, config)
        settings = load_settings(config, {}, {"peer_id": "profile"})
        source = RestSource(RestSourceConfig.from_settings(settings.source.rest_settings()))
        decoded = Decoded()
        # what the source calls: the follow loop and the first (head) requests
        for module in (follow_module, heads_module):
            module.decode_consume = decoded  # type: ignore[attr-defined]
        peer = Peer(settings, source)
        sampler = Sampler(args.rate, Path(tmp) / "py-spy.txt", lines=args.lines, wall=args.wall)
        window: dict[str, float] = {}
        threads: list[dict[int, ThreadSample]] = [{}, {}]
        machine: list[tuple[int, int]] = [(0, 0), (0, 0)]
        collector = CollectorClock()

        def drive() -> None:
            wait_until(lambda: len(peer.owned.shards) == SHARDS, 120, "the peer owning shards")
            routes = [Route(s, topic, start=StartPolicy.parse("history:1000000")) for s in names]
            if args.profiler == "py-spy":
                sampler.start()
            threads[0] = thread_cpu()
            gc.callbacks.append(collector)
            window["rss0"] = rss_mb()
            window["cpu0"], window["t0"] = time.process_time(), time.monotonic()
            window["server0"] = cpu_seconds(sim.pid)
            machine[0] = jiffies()
            dep.write_routes(routes, timeout=120)
            wait_until(lambda: committed_all(peer, heads), 600, f"{total} committed", step=0.05)
            window["cpu1"], window["t1"] = time.process_time(), time.monotonic()
            window["server1"] = cpu_seconds(sim.pid)
            machine[1] = jiffies()
            threads[1] = thread_cpu()
            gc.callbacks.remove(collector)
            window["rss1"] = rss_mb()
            sampler.stop()
            peer.request_stop()

        driver = threading.Thread(target=drive, name="profile-driver", daemon=True)
        profiles = ThreadProfiles()
        if args.profiler == "cprofile":
            threading.setprofile(profiles.hook)
        driver.start()
        code = profiles.run(peer.run) if args.profiler == "cprofile" else peer.run()
        threading.setprofile(None)
        driver.join(70)
        source.close()
        if code != 0 or "t1" not in window:
            print(f"the peer exited {code} before every message was committed", file=sys.stderr)
            return 1
        elapsed = window["t1"] - window["t0"]
        cpu = window["cpu1"] - window["cpu0"]
        under = {"cprofile": " under cProfile", "py-spy": " sampled by py-spy"}
        requests = source.stats().requests
        print(
            f"{total} messages of {args.size} B over {args.subjects} subjects: "
            f"{total / elapsed:,.0f} msg/s, CPU {cpu / total * 1e6:.2f} µs per message "
            f"(all threads, {cpu / elapsed:.2f} cores){under.get(args.profiler, '')}; "
            f"{requests} consume requests"
        )
        print(
            f"decoded {decoded.messages / total:.2f} messages per message delivered "
            f"({decoded.nbytes / 1e6:,.0f} MB of answers)"
        )
        # the reference server competes with the peer for the same cores
        server = window["server1"] - window["server0"]
        print(
            f"reference server: CPU {server / total * 1e6:.2f} µs per message "
            f"({server / elapsed:.2f} cores); the machine: "
            f"{busy_cores(machine[0], machine[1]):.2f} of {os.cpu_count()} cores busy"
        )
        gc_s = sum(collector.seconds)
        print(
            f"garbage collector: {gc_s / total * 1e6:.2f} µs per message, collections per "
            f"generation {collector.count}, seconds {[round(x, 3) for x in collector.seconds]}"
        )
        print(
            f"RSS {window['rss0']:,.0f} MB before the window, {window['rss1']:,.0f} MB after "
            f"(peak {rss_mb('VmHWM'):,.0f} MB)"
        )
        print("per thread, per message (faults and context switches per 1,000 messages):")
        print("\n".join(by_role(threads[0], threads[1], total)))
        if args.profiler == "py-spy":
            print("\n".join(sampler.tables(total, args.top)))
        elif args.profiler == "cprofile":
            stats = profiles.stats()
            for key in ("own", "cumulative"):
                print(f"\ntop {args.top} by {key} time (threads' CPU, µs per message):")
                print("\n".join(top(stats, total, key, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
