"""The seeded fault schedule: a pure function of the seed and the run's shape.

Faults are planned as *episodes* on independent lanes, so they overlap the way real ones do
(a peer is killed while the server answers 503 and a broker is down), but never in ways that
make no sense (one peer fault at a time, one broker down at a time):

* **peer lane**, one episode after another with a settle pause between them: SIGKILL then
  restart, SIGTERM then restart, SIGSTOP longer than the session timeout then SIGCONT (a
  zombie, which must be fenced), scale up (a new peer id), scale down (SIGTERM, gone);
* **kafka lane** (3 nodes only): SIGKILL a broker, restart it later;
* **server lane**: 5xx (``fail_rate``) or latency injection for a while, then off;
* **epoch lane**: bump one subject's epoch, or every subject's (a cluster restart);
* **server-restart lane**: SIGKILL the reference server and start a new one on the same port
  a little later; its store is in memory, so every subject starts a new epoch there.

The planner simulates which peer slots exist, so every action is valid when it runs and the
same seed always gives the same actions. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final


class ScheduleError(ValueError):
    """A schedule option is out of range; the message names it."""


class Fault(enum.Enum):
    KILL = "kill"
    TERM = "term"
    ZOMBIE = "zombie"
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    KAFKA = "kafka_kill"
    EPOCH = "epoch"
    FAIL = "5xx"
    LATENCY = "latency"
    SERVER_KILL = "server_kill"


class Op(enum.Enum):
    """What the executor does at one instant."""

    SIGKILL = "sigkill"  # target: peer slot
    SIGTERM = "sigterm"  # target: peer slot
    SIGSTOP = "sigstop"  # target: peer slot
    SIGCONT = "sigcont"  # target: peer slot
    START = "start"  # target: peer slot (a restart, or a new slot when scaling up)
    RETIRE = "retire"  # target: peer slot; SIGTERM and never start it again
    KAFKA_KILL = "kafka_kill"  # target: node id
    KAFKA_RESTART = "kafka_restart"  # target: node id
    EPOCH = "epoch"  # target: subject, or "*" for all
    FAULTS = "faults"  # target: "fail_rate" or "latency_ms"; value: the setting
    SERVER_RESTART = "server_restart"  # target: "server"; value: seconds it stays down


PEER_FAULTS: Final = (Fault.KILL, Fault.TERM, Fault.ZOMBIE, Fault.SCALE_UP, Fault.SCALE_DOWN)
ALL_FAULTS: Final = tuple(Fault)
#: relative frequency on the peer lane
_PEER_WEIGHTS: Final = {
    Fault.KILL: 3,
    Fault.TERM: 3,
    Fault.ZOMBIE: 2,
    Fault.SCALE_UP: 1,
    Fault.SCALE_DOWN: 1,
}


@dataclass(frozen=True, slots=True)
class Action:
    at: float  # seconds after the schedule started
    op: Op
    target: str
    value: float = 0.0
    episode: int = 0

    def label(self) -> str:
        value = {Op.FAULTS: f"={self.value:g}", Op.SERVER_RESTART: f" down {self.value:g}s"}.get(
            self.op, ""
        )
        return f"#{self.episode:<3} {self.op.value} {self.target}{value}"

    def describe(self) -> str:
        return f"t+{self.at:7.2f}s {self.label()}"


@dataclass(frozen=True, slots=True)
class Episode:
    index: int
    fault: Fault
    start: float
    end: float
    target: str
    detail: str

    def describe(self) -> str:
        return (
            f"#{self.index:<3} t+{self.start:7.2f}s..{self.end:7.2f}s {self.fault.value:<10} "
            f"{self.target} {self.detail}".rstrip()
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """The run's shape: everything the schedule depends on besides the seed."""

    duration: float
    peers: int
    max_peers: int
    kafka_nodes: tuple[int, ...]  # node ids; one node means no broker faults
    subjects: tuple[str, ...]
    session_timeout_s: float
    faults: frozenset[Fault] = field(default_factory=lambda: frozenset(ALL_FAULTS))

    def __post_init__(self) -> None:
        if not self.duration > 0:
            raise ScheduleError(f"duration={self.duration!r}: must be > 0 seconds")
        if not 1 <= self.peers <= self.max_peers <= 20:
            raise ScheduleError(
                f"peers={self.peers!r}, max_peers={self.max_peers!r}: need 1 <= peers <= "
                "max_peers <= 20"
            )
        if not self.subjects:
            raise ScheduleError("subjects: at least one is needed")
        if not self.session_timeout_s > 0:
            raise ScheduleError(f"session_timeout_s={self.session_timeout_s!r}: must be > 0")


@dataclass(frozen=True, slots=True)
class Schedule:
    seed: int
    plan: Plan
    episodes: tuple[Episode, ...]
    actions: tuple[Action, ...]  # sorted by time

    def counts(self) -> dict[str, int]:
        """Episodes per fault kind, every kind listed (0 when none)."""
        got = Counter(e.fault for e in self.episodes)
        return {f.value: got.get(f, 0) for f in ALL_FAULTS}

    def end(self) -> float:
        return max((a.at for a in self.actions), default=0.0)


def parse_faults(text: str) -> frozenset[Fault]:
    """``all``, ``none`` or a comma list of kinds (``kill,term,zombie,scale,kafka,...``)."""
    text = text.strip().lower()
    if text == "all":
        return frozenset(ALL_FAULTS)
    if text in ("", "none"):
        return frozenset()
    by_name: dict[str, tuple[Fault, ...]] = {f.value: (f,) for f in ALL_FAULTS}
    by_name["scale"] = (Fault.SCALE_UP, Fault.SCALE_DOWN)
    by_name["kafka"] = (Fault.KAFKA,)
    out: set[Fault] = set()
    for name in (n.strip() for n in text.split(",")):
        if name not in by_name:
            raise ScheduleError(
                f"faults={name!r}: unknown fault; expected all, none or some of "
                + ", ".join(sorted(by_name))
            )
        out.update(by_name[name])
    return frozenset(out)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``3m``, ``1h``, ``1m30s`` -> seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    raw, total, number = text.strip().lower(), 0.0, ""
    if not raw:
        raise ScheduleError("duration='': expected e.g. 90s, 3m or 1h")
    for char in raw:
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total += float(number) * units[char]
            number = ""
        else:
            raise ScheduleError(f"duration={text!r}: expected e.g. 90s, 3m, 1m30s or 1h")
    if number:
        total += float(number)
    if not total > 0:
        raise ScheduleError(f"duration={text!r}: must be > 0")
    return total


class _Planner:
    def __init__(self, seed: int, plan: Plan) -> None:
        self.rng = random.Random(seed)
        self.plan = plan
        self.episodes: list[Episode] = []
        self.actions: list[Action] = []

    def episode(self, fault: Fault, start: float, end: float, target: str, detail: str = "") -> int:
        index = len(self.episodes) + 1
        self.episodes.append(Episode(index, fault, start, end, target, detail))
        return index

    def act(self, at: float, op: Op, target: str, episode: int, value: float = 0.0) -> None:
        self.actions.append(Action(round(at, 3), op, target, value, episode))

    # Each lane draws from its own generator seeded from the main one, so enabling a lane
    # does not reshuffle the others: a replay with fewer fault kinds keeps the rest in place.
    def lane_rng(self) -> random.Random:
        return random.Random(self.rng.getrandbits(64))

    def peer_lane(self, rng: random.Random) -> None:
        plan = self.plan
        kinds = [f for f in PEER_FAULTS if f in plan.faults]
        running = list(range(1, plan.peers + 1))
        next_slot = plan.peers + 1
        t = rng.uniform(3.0, 6.0)
        while kinds and t < plan.duration:
            allowed = [
                f
                for f in kinds
                if not (f is Fault.SCALE_UP and len(running) >= plan.max_peers)
                # the fleet stays between peers - 1 (at least 1) and max_peers
                and not (f is Fault.SCALE_DOWN and len(running) <= max(1, plan.peers - 1))
            ]
            if not allowed:
                break
            fault = rng.choices(allowed, weights=[_PEER_WEIGHTS[f] for f in allowed])[0]
            end = t
            if fault is Fault.SCALE_UP:
                slot = next_slot
                next_slot += 1
                running.append(slot)
                ep = self.episode(fault, t, t, f"peer {slot}", "new peer id")
                self.act(t, Op.START, str(slot), ep)
            elif fault is Fault.SCALE_DOWN:
                slot = rng.choice(running)
                running.remove(slot)
                ep = self.episode(fault, t, t, f"peer {slot}", "SIGTERM, not restarted")
                self.act(t, Op.RETIRE, str(slot), ep)
            else:
                slot = rng.choice(running)
                if fault is Fault.ZOMBIE:
                    # longer than the session timeout: the group must have moved on
                    hold = plan.session_timeout_s + rng.uniform(2.0, 6.0)
                    end = t + hold
                    ep = self.episode(fault, t, end, f"peer {slot}", f"paused {hold:.1f}s")
                    self.act(t, Op.SIGSTOP, str(slot), ep)
                    self.act(end, Op.SIGCONT, str(slot), ep)
                else:
                    down = rng.uniform(0.5, 6.0 if fault is Fault.KILL else 4.0)
                    end = t + down
                    sig = Op.SIGKILL if fault is Fault.KILL else Op.SIGTERM
                    ep = self.episode(fault, t, end, f"peer {slot}", f"down {down:.1f}s")
                    self.act(t, sig, str(slot), ep)
                    self.act(end, Op.START, str(slot), ep)
            t = end + rng.uniform(2.0, 10.0)

    def kafka_lane(self, rng: random.Random) -> None:
        plan = self.plan
        if Fault.KAFKA not in plan.faults or len(plan.kafka_nodes) < 3:
            return
        t = rng.uniform(15.0, 30.0)
        while t < plan.duration:
            node = rng.choice(plan.kafka_nodes)
            down = rng.uniform(3.0, 15.0)
            ep = self.episode(Fault.KAFKA, t, t + down, f"node {node}", f"down {down:.1f}s")
            self.act(t, Op.KAFKA_KILL, str(node), ep)
            self.act(t + down, Op.KAFKA_RESTART, str(node), ep)
            t += down + rng.uniform(20.0, 50.0)

    def server_lane(self, rng: random.Random) -> None:
        plan = self.plan
        kinds = [f for f in (Fault.FAIL, Fault.LATENCY) if f in plan.faults]
        t = rng.uniform(2.0, 8.0)
        while kinds and t < plan.duration:
            fault = rng.choice(kinds)
            length = rng.uniform(3.0, 10.0)
            if fault is Fault.FAIL:
                name, value = "fail_rate", round(rng.uniform(0.2, 0.7), 2)
                detail = f"fail_rate {value:g} for {length:.1f}s"
            else:
                name, value = "latency_ms", float(rng.choice((50, 200, 500, 1000, 1500)))
                detail = f"latency {value:g} ms for {length:.1f}s"
            ep = self.episode(fault, t, t + length, "server", detail)
            self.act(t, Op.FAULTS, name, ep, value)
            self.act(t + length, Op.FAULTS, name, ep, 0.0)
            t += length + rng.uniform(3.0, 12.0)

    def epoch_lane(self, rng: random.Random) -> None:
        plan = self.plan
        if Fault.EPOCH not in plan.faults:
            return
        t = rng.uniform(8.0, 20.0)
        while t < plan.duration:
            every = rng.random() < 0.15
            target = "*" if every else rng.choice(plan.subjects)
            ep = self.episode(Fault.EPOCH, t, t, "every subject" if every else target)
            self.act(t, Op.EPOCH, target, ep)
            t += rng.uniform(10.0, 30.0)

    def restart_lane(self, rng: random.Random) -> None:
        t = rng.uniform(20.0, 45.0)
        while Fault.SERVER_KILL in self.plan.faults and t < self.plan.duration:
            down = round(rng.uniform(0.5, 3.0), 1)
            ep = self.episode(Fault.SERVER_KILL, t, t + down, "server", f"down {down:g}s")
            # one action: the executor kills, waits and restarts, the publishers held still
            self.act(t, Op.SERVER_RESTART, "server", ep, down)
            t += down + rng.uniform(40.0, 80.0)


def build(seed: int, plan: Plan) -> Schedule:
    """The schedule of ``seed`` for ``plan``; the same inputs give the same schedule."""
    planner = _Planner(seed, plan)
    # a new lane's generator is drawn after the older ones: it leaves their faults in place
    lanes = [planner.lane_rng() for _ in range(5)]
    planner.peer_lane(lanes[0])
    planner.kafka_lane(lanes[1])
    planner.server_lane(lanes[2])
    planner.epoch_lane(lanes[3])
    planner.restart_lane(lanes[4])
    # numbered in time order; stable sorts keep the planning order of simultaneous ones
    order = sorted(planner.episodes, key=lambda e: e.start)
    renumber = {e.index: i for i, e in enumerate(order, start=1)}
    episodes = tuple(replace(e, index=renumber[e.index]) for e in order)
    actions = tuple(
        replace(a, episode=renumber[a.episode]) for a in sorted(planner.actions, key=lambda a: a.at)
    )
    return Schedule(seed, plan, episodes, actions)


def peer_slots(actions: Iterable[Action]) -> set[int]:
    """Every peer slot a schedule's actions touch."""
    return {int(a.target) for a in actions if a.op in _PEER_OPS}


_PEER_OPS: Final = frozenset({Op.SIGKILL, Op.SIGTERM, Op.SIGSTOP, Op.SIGCONT, Op.START, Op.RETIRE})


def running_after(peers: int, actions: Sequence[Action]) -> set[int]:
    """The peer slots that should be running once every action has run (for the checks)."""
    running = set(range(1, peers + 1))
    for action in actions:
        if action.op is Op.START:
            running.add(int(action.target))
        elif action.op is Op.RETIRE:
            running.discard(int(action.target))
    return running
