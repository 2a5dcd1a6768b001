"""What the demo found: counts, shard moves, the exactly-once verdicts, leftover processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peer.testing.verdict import SubjectVerdict


@dataclass
class DemoResult:
    checks: list[SubjectVerdict] = field(default_factory=list)
    per_topic: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    shard_moves: int = 0
    #: of those, the moves while the peers joined (before publishing started)
    joining_moves: int = 0
    killed: str | None = None
    caught_up: bool = False
    interrupted: bool = False
    #: every process the demo started: name → pid
    pids: dict[str, int] = field(default_factory=dict)
    left_running: list[int] = field(default_factory=list)
    #: peer id → exit code (negative: killed by that signal)
    peer_exits: dict[str, int | None] = field(default_factory=dict)
    run_dir: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return (
            not self.reason
            and not self.interrupted
            and self.caught_up
            and not self.left_running
            and bool(self.checks)
            and all(c.ok for c in self.checks)
        )

    def lines(self) -> list[str]:
        out = ["== mdpeer demo summary"]
        out += [
            f"topic {t}: {n} messages visible (read_committed)" for t, n in self.per_topic.items()
        ]
        out.append(
            f"shard moves seen: {self.shard_moves} ({self.joining_moves} while the peers "
            f"joined, {self.shard_moves - self.joining_moves} after publishing started)"
        )
        if self.killed:
            out.append(f"killed (SIGKILL): {self.killed}")
        out += [c.line() for c in self.checks]
        out.append(f"processes started: {len(self.pids)}, still running: {len(self.left_running)}")
        if self.peer_exits:
            out.append(
                "peer exit codes: " + ", ".join(f"{p}={c}" for p, c in self.peer_exits.items())
            )
        out.append(f"logs: {self.run_dir}")
        out.append("exactly-once check: " + ("PASSED" if self.ok else f"FAILED: {self.why()}"))
        return out

    def why(self) -> str:
        if self.reason:
            return self.reason
        if self.interrupted:
            return "interrupted before the check could complete"
        if not self.checks:
            return "nothing was checked"
        bad = [c.subject for c in self.checks if not c.ok]
        if bad:
            return "subjects failing: " + ", ".join(bad)
        if not self.caught_up:
            return "the consumer did not catch up within the timeout"
        if self.left_running:
            return f"processes still running: {self.left_running}"
        return ""

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": "" if self.ok else self.why(),
            "per_topic": self.per_topic,
            "published": self.published,
            "shard_moves": self.shard_moves,
            "joining_moves": self.joining_moves,
            "killed": self.killed,
            "caught_up": self.caught_up,
            "interrupted": self.interrupted,
            "checks": [c.as_json() for c in self.checks],
            "pids": self.pids,
            "left_running": self.left_running,
            "peer_exits": self.peer_exits,
            "run_dir": self.run_dir,
        }
