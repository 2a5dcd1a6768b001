"""The processes the harness drives: the reference server, the peers, and the publishers.

Servers and peers are :mod:`peer.testing` processes: each in its own session (a Ctrl-C in the
terminal reaches only the harness, which then stops them in order) and, on Linux, dying with
the harness (``setpriv --pdeathsig KILL``), so even a SIGKILL of the harness leaves nothing
running. Their logs are files of the run directory.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from peer.dev.chaos.content import content
from peer.dev.chaos.verdict import Ledger
from peer.testing import PeerProcess, SimProcess, run_mdpeer

#: a SIGTERMed peer gets this long to commit and leave before it is SIGABRTed, then SIGKILLed
PEER_STOP_GRACE_S: Final = 20.0


class HarnessError(RuntimeError):
    """The harness itself could not do a step (not a verdict on the peers)."""


def run_cli(args: list[str], log: Path, timeout: float = 60.0) -> str:
    """One ``mdpeer`` admin command; its output is appended to ``log``; error -> HarnessError."""
    try:
        done = run_mdpeer(args, timeout)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"mdpeer {' '.join(args[:2])} did not finish in {timeout}s") from exc
    with log.open("a") as out:
        out.write(
            f"$ mdpeer {' '.join(args)}\n{done.stdout}{done.stderr}(exit {done.returncode})\n"
        )
    if done.returncode != 0:
        raise HarnessError(f"mdpeer {' '.join(args[:2])} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def start_sim(
    run_dir: Path, seed: int, *, port: int = 0, first_epoch: int = 1, notify_drop: float = 0.0
) -> SimProcess:
    """``mdpeer sim serve`` with a cache big enough that only epoch bumps (and restarts, which
    are new epochs) lose data. A restart passes the killed one's port, and a first epoch above
    every epoch that one handed out."""
    try:
        return SimProcess(
            *("--cache-size", "10000000", "--cache-expire", "86400", "--seed", str(seed)),
            *("--first-epoch", str(first_epoch)),
            *(("--notify-drop-rate", str(notify_drop)) if notify_drop else ()),
            port=port,
            log=run_dir / "sim.log",
        )
    except RuntimeError as exc:
        raise HarnessError(f"the reference server did not start: {exc}") from exc


# --- peers -------------------------------------------------------------------------------------


@dataclass
class PeerSlot:
    """One peer id; its process comes and goes as the schedule says."""

    slot: int
    log: Path
    proc: PeerProcess | None = None
    #: the schedule wants it running (False after a kill/term until its restart, or retired)
    wanted: bool = True
    paused: bool = False
    #: we signalled it: its exit is expected (a crash is any other exit)
    signalled: str | None = None
    starts: int = 0
    exits: list[tuple[int, str]] = field(default_factory=list)  # (code, why)
    exit_noted: bool = False
    #: this process was paused (SIGSTOP) at some point: exiting fenced (code 2) is expected
    was_paused: bool = False
    signalled_at: float = 0.0
    #: a restart is due, but the previous process has not exited yet
    pending_start: bool = False

    @property
    def peer_id(self) -> str:
        return f"chaos-{self.slot}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()


class Fleet:
    """The peers. Nothing here blocks for long: a restart due while the previous process of
    the slot is still shutting down is deferred (the slot keeps its identity, so two
    processes must not overlap), and :meth:`supervise` carries it out."""

    def __init__(self, run_dir: Path, config: Path, env: dict[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.config = config
        #: the peers' environment (doorbell mode: where the stand-in client is)
        self.env = env
        self.slots: dict[int, PeerSlot] = {}
        self.crashes: list[str] = []

    def start(self, slot: int) -> PeerSlot:
        peer = self.slots.get(slot) or PeerSlot(slot, self.run_dir / f"peer-{slot}.log")
        self.slots[slot] = peer
        if peer.alive():
            # still shutting down after our signal: supervise() starts it later; running
            # without one (an orchestrator restart beat the schedule to it): nothing to do
            peer.pending_start = peer.signalled is not None
            return peer
        if peer.proc is not None:
            self._note_exit(peer)
        # one log per slot across restarts: a marker line tells the processes apart
        with peer.log.open("ab") as out:
            out.write(f'{{"chaos":"start","slot":{slot},"t":{time.time():.3f}}}\n'.encode())
        # a peer that hangs is sent SIGABRT before SIGKILL: its Python stacks land in its log,
        # even when its main thread is blocked inside librdkafka
        peer.proc = PeerProcess(
            self.config, peer.peer_id, env=self.env, log=peer.log, grace=PEER_STOP_GRACE_S
        )
        peer.wanted, peer.paused, peer.signalled, peer.exit_noted = True, False, None, False
        peer.was_paused = peer.pending_start = False
        peer.starts += 1
        return peer

    def _force(self, peer: PeerSlot, grace: float) -> None:
        """It did not exit within ``grace`` of our signal: dump its stacks, then SIGKILL."""
        assert peer.proc is not None
        self.crashes.append(
            f"peer {peer.slot} did not exit within {grace:g}s of {peer.signalled}: "
            f"SIGABRT (Python stacks in {peer.log.name}), then SIGKILL"
        )
        peer.proc.force()
        peer.signalled = f"{peer.signalled}, then SIGABRT"
        self._note_exit(peer)

    def _reap(self, peer: PeerSlot, grace: float) -> None:
        assert peer.proc is not None
        left = max(grace - (time.monotonic() - peer.signalled_at), 0.0)
        try:
            peer.proc.proc.wait(left)
        except subprocess.TimeoutExpired:
            self._force(peer, grace)
        self._note_exit(peer)

    def _note_exit(self, peer: PeerSlot, why: str | None = None) -> None:
        assert peer.proc is not None
        code = peer.proc.returncode
        if not peer.exit_noted and code is not None:
            peer.exit_noted = True
            peer.exits.append((code, why or peer.signalled or "own"))

    def signal(self, slot: int, sig: signal.Signals) -> None:
        peer = self.slots[slot]
        if peer.pending_start and sig in (signal.SIGKILL, signal.SIGTERM):
            # the restart it was to stop never happened: the slot just stays down; the old
            # process, already SIGTERMed, is not signalled twice (that would cut its
            # shutdown short), but a SIGKILL is a SIGKILL
            peer.pending_start = False
            if sig is signal.SIGTERM:
                return
        if not peer.alive():
            if sig in (signal.SIGKILL, signal.SIGTERM):
                # it died by itself just before: the slot is down as the schedule wants,
                # and supervise() must not restart it
                peer.wanted = False
            return
        assert peer.proc is not None
        if sig in (signal.SIGKILL, signal.SIGTERM):
            peer.wanted = False
            peer.signalled = sig.name
            peer.signalled_at = time.monotonic()
        if sig is signal.SIGTERM:
            peer.proc.terminate()  # resumed first if paused: a stopped process cannot act on it
        elif sig is signal.SIGKILL:
            peer.proc.kill()
            self._note_exit(peer)
        else:
            peer.proc.signal(sig)
        if sig is signal.SIGSTOP:
            peer.paused = peer.was_paused = True
        elif sig in (signal.SIGCONT, signal.SIGTERM):
            peer.paused = False

    def supervise(self) -> list[tuple[str, bool]]:
        """Carry out deferred restarts; restart wanted peers that exited on their own (what
        an orchestrator does). Returns (line, expected): a resumed zombie that exits 2
        (fenced) is expected."""
        events: list[tuple[str, bool]] = []
        for peer in list(self.slots.values()):
            if peer.proc is None:
                continue
            if peer.pending_start:
                if peer.alive() and time.monotonic() - peer.signalled_at > PEER_STOP_GRACE_S:
                    self._force(peer, PEER_STOP_GRACE_S)
                if not peer.alive():
                    self.start(peer.slot)
                continue
            if peer.alive():
                continue
            if peer.wanted:
                self._note_exit(peer, "own")
                code = peer.proc.returncode
                fenced = peer.was_paused and code == 2
                why = " after its pause (fenced)" if fenced else ""
                events.append(
                    (f"peer {peer.slot} exited by itself{why} with code {code}: restarted", fenced)
                )
                self.start(peer.slot)
            else:
                self._note_exit(peer)
        return events

    def running(self) -> list[int]:
        return sorted(s for s, p in self.slots.items() if p.alive())

    def stop_all(self) -> None:
        """SIGTERM every live peer (resumed first if paused), then wait; force stragglers."""
        for peer in self.slots.values():
            peer.pending_start = False
            if peer.alive():
                assert peer.proc is not None
                peer.wanted = False
                if peer.signalled is None:
                    peer.signalled = "SIGTERM (end)"
                    peer.signalled_at = time.monotonic()
                    peer.proc.terminate()
        for peer in self.slots.values():
            if peer.proc is not None:
                self._reap(peer, PEER_STOP_GRACE_S)  # also notes an exit that came quickly

    def close(self) -> None:
        """Release every process (kills what still runs; the logs stay in the run dir)."""
        for peer in self.slots.values():
            if peer.proc is not None:
                peer.proc.close()


# --- publishers --------------------------------------------------------------------------------


class Publisher(threading.Thread):
    """Publishes ``rate`` msgs/s on one subject through ``POST /rest/produce``, one at a time.

    It keeps the ledger: how many messages the server accepted and in which epoch each one
    is. An injected 503 is a definite "not published" (retried); a transport error or a
    timeout is settled by asking the server's admin state, which is exact because nothing
    else publishes on this subject and epoch bumps take the same lock. ``sim`` is replaced
    (with ``lock`` held) when the server is restarted.
    """

    def __init__(self, sim: SimProcess, subject: str, rate: float, size: int) -> None:
        super().__init__(name=f"publish {subject}", daemon=True)
        self.sim = sim
        self.subject = subject
        self.interval = 1.0 / rate
        self.size = size
        self.lock = threading.Lock()
        self.count = 0
        self.epoch = 1
        self.seq = 0
        self.epochs: list[tuple[int, int]] = [(1, 1)]
        self.rejected = 0  # 503s and transport errors (each retried)
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._path = "/rest/produce?" + urllib.parse.urlencode(
            {"subject": subject, "qos": "guaranteed", "retained": "true"}
        )

    def run(self) -> None:
        due = time.monotonic()
        while not self._halt.is_set():
            self._halt.wait(max(due - time.monotonic(), 0))
            if self._halt.is_set():
                break
            with self.lock:
                self._publish_one()
            due = max(due + self.interval, time.monotonic() - 1.0)
        if self._conn is not None:
            self._conn.close()

    def _server_position(self) -> tuple[int, int]:
        state = self.sim.admin(
            "GET", "/admin/state?" + urllib.parse.urlencode({"subject": self.subject})
        )
        desc = state["subjects"].get(self.subject)
        return (0, 0) if not desc else (int(desc["epoch"]), int(desc["head_seq"]))

    def _publish_one(self) -> None:
        """Publish the next counter until the server has it (or the harness stops)."""
        body = content(self.subject, self.count + 1, self.size)
        while not self._halt.is_set():
            try:
                if self._conn is None:
                    host, port = self.sim.url.removeprefix("http://").rsplit(":", 1)
                    self._conn = http.client.HTTPConnection(host, int(port), timeout=10)
                self._conn.request("POST", self._path, body=body)
                resp = self._conn.getresponse()
                raw = resp.read()
                if resp.status == 200:
                    status = json.loads(raw).get("status")
                    if status != "OK":
                        raise HarnessError(f"produce on {self.subject} answered {status}")
                    self._accepted()
                    return
                self.rejected += 1
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.rejected += 1
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                try:
                    if self._server_position() == (self.epoch, self.seq + 1):
                        self._accepted()  # the answer was lost, the publish was not
                        return
                except (OSError, ValueError, KeyError) as again:
                    self.errors.append(f"{type(exc).__name__}; state: {again}")
            self._halt.wait(0.05)

    def _accepted(self) -> None:
        self.count += 1
        self.seq += 1

    def check_position(self) -> None:
        """The server agrees with the ledger (call with ``lock`` held)."""
        before = self._server_position()
        if before not in ((self.epoch, self.seq), (0, 0)):
            raise HarnessError(
                f"{self.subject}: server at {before}, ledger at {(self.epoch, self.seq)}"
            )

    def bumped(self, epoch: int) -> None:
        """The server moved this subject to ``epoch`` (call with ``lock`` held)."""
        self.epoch = epoch
        self.seq = 0
        self.epochs.append((epoch, self.count + 1))

    def ledger(self) -> Ledger:
        with self.lock:
            return Ledger(self.subject, self.count, tuple(self.epochs))

    def stop(self) -> None:
        self._halt.set()


def bump_epochs(sim: SimProcess, publishers: list[Publisher]) -> dict[str, int]:
    """Bump the epoch of ``publishers``' subjects between two publishes of each.

    One subject: ``POST /admin/epoch?subject=S``; every subject: ``POST /admin/epoch`` (as
    after a cluster restart), with every publisher held still meanwhile.
    """
    with contextlib.ExitStack() as stack:
        for pub in publishers:
            stack.enter_context(pub.lock)
            pub.check_position()
        if len(publishers) == 1:
            subject = publishers[0].subject
            path = "/admin/epoch?" + urllib.parse.urlencode({"subject": subject})
        else:
            path = "/admin/epoch"
        epochs: dict[str, int] = {k: int(v) for k, v in sim.admin("POST", path)["epochs"].items()}
        for pub in publishers:
            pub.bumped(epochs[pub.subject])
        return {p.subject: epochs[p.subject] for p in publishers}
