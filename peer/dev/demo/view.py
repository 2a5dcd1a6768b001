"""What the demo shows while it runs: a rich live table on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

#: seconds between two plain lines when the output is not a terminal
PLAIN_EVERY_S = 2.0


@dataclass(frozen=True, slots=True)
class PeerRow:
    peer_id: str
    pid: int
    #: running, ready, killed, exited <code>
    state: str
    shards: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DemoStatus:
    """One observation of the whole demo, taken about twice a second."""

    elapsed_s: float
    phase: str
    published: dict[str, int]
    visible: dict[str, int]
    peers: tuple[PeerRow, ...]
    group_state: str
    unowned: tuple[int, ...]
    shard_moves: int
    events: tuple[str, ...] = field(default=())


def _table(status: DemoStatus) -> Group:
    flow = Table(title="messages", expand=False)
    flow.add_column("subject → topic")
    flow.add_column("published", justify="right")
    flow.add_column("visible (read_committed)", justify="right")
    for (subject, count), (topic, visible) in zip(
        status.published.items(), status.visible.items(), strict=False
    ):
        flow.add_row(f"{subject} → {topic}", str(count), str(visible))
    peers = Table(title=f"peers (group {status.group_state})", expand=False)
    peers.add_column("peer")
    peers.add_column("pid", justify="right")
    peers.add_column("state")
    peers.add_column("shards")
    for row in status.peers:
        style = "red" if row.state.startswith(("killed", "exited")) else ""
        peers.add_row(
            row.peer_id,
            str(row.pid),
            Text(row.state, style=style),
            ",".join(map(str, row.shards)) or "-",
        )
    head = Text(
        f"mdpeer demo · {status.phase} · {status.elapsed_s:5.1f}s · shard moves "
        f"{status.shard_moves}" + (f" · unowned {list(status.unowned)}" if status.unowned else ""),
        style="bold",
    )
    events = Text("\n".join(status.events[-5:]), style="yellow")
    return Group(head, flow, peers, events)


def plain_line(status: DemoStatus) -> str:
    pub = " ".join(f"{s}={n}" for s, n in status.published.items())
    vis = " ".join(f"{t}={n}" for t, n in status.visible.items())
    peers = " ".join(
        f"{r.peer_id}[{r.state}]:{','.join(map(str, r.shards)) or '-'}" for r in status.peers
    )
    return (
        f"demo {status.elapsed_s:6.1f}s {status.phase}: published {pub} | visible {vis} | "
        f"peers {peers} | group {status.group_state} | moves {status.shard_moves}"
    )


class View:
    """Live table when ``out`` is a terminal (and ``live`` is allowed), else plain lines."""

    def __init__(self, out: IO[str] | None = None, *, live: bool | None = None) -> None:
        self._out = out or sys.stdout
        self._live_wanted = self._out.isatty() if live is None else live
        self._live: Live | None = None
        self._last_plain = 0.0

    def __enter__(self) -> View:
        if self._live_wanted:
            console = Console(file=self._out)
            self._live = Live(console=console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def event(self, line: str) -> None:
        """A one-off line (a step, the kill): above the live table, or plain."""
        if self._live is not None:
            self._live.console.print(line)
        else:
            print(line, file=self._out, flush=True)

    def update(self, status: DemoStatus, *, force: bool = False) -> None:
        if self._live is not None:
            self._live.update(_table(status))
            return
        now = time.monotonic()
        if force or now - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = now
            print(plain_line(status), file=self._out, flush=True)


def as_json(status: DemoStatus) -> dict[str, Any]:
    return {
        "elapsed_s": round(status.elapsed_s, 1),
        "published": status.published,
        "visible": status.visible,
        "shard_moves": status.shard_moves,
        "peers": [
            {"peer": r.peer_id, "pid": r.pid, "state": r.state, "shards": list(r.shards)}
            for r in status.peers
        ],
    }
