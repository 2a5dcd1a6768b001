"""Where each subject's stream stands at the source (its *head*), and how far a checkpoint is
behind it (*lag*): what ``mdpeer status`` shows next to each checkpoint.

The head is asked over the documented ``GET /rest/consume``, one subject per request:

1. ``history=1``: the newest message the server still caches, retained or not (the same
   request the ``latest`` start policy uses to learn the head);
2. when that is empty (nothing cached: history off, or the cache expired), a bare request: the
   snapshot, i.e. the newest *retained* message. An empty snapshot too means the subject has no
   message at all: head none, nothing to bridge, lag 0.

Only a snapshot can be older than the true head (non-retained messages published after it do
not show), so each head says which request it came from.

Bounded: at most ``concurrency`` requests in flight, every request within what is left of one
overall ``budget``; a subject whose head is not known when the budget ends is *unknown*, with
the reason, like a subject whose every server failed or that the token may not read. Nothing
here raises for a source fault: status must still show what Kafka knows.

The token travels as a query parameter: it is never part of a reason (texts are scrubbed).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp

from peer.config.servers import ServerAddress
from peer.model import Position
from peer.source.consume import CONSUME_PATH, describe_error, scrub_token
from peer.source.rest_config import RestSourceConfig
from peer.source.servers import ServerPool
from peer.source.tls import client_tls
from peer.source.wire import MalformedResponseError, decode_consume, decode_error

__all__ = [
    "DEFAULT_BUDGET",
    "Head",
    "HeadUnknown",
    "Lag",
    "LagState",
    "ask_heads",
    "lag_of",
]

#: seconds ``mdpeer status`` gives the source for all its subjects together
DEFAULT_BUDGET: Final = 5.0
_SLACK_S: Final = 0.01
_TLS_CLOSE_GRACE_S: Final = 0.25


@dataclass(frozen=True, slots=True)
class Head:
    """The newest message the source reports for a subject (``position`` None: it has none)."""

    subject: str
    position: Position | None
    #: which request told: "history" (newest cached message) or "snapshot" (newest retained)
    via: str


@dataclass(frozen=True, slots=True)
class HeadUnknown:
    """The source did not tell the head of ``subject``; ``reason`` says why (no secrets)."""

    subject: str
    reason: str


class LagState(enum.Enum):
    """How a subject's checkpoint compares with its head at the source."""

    #: same epoch: lag = head.seq - checkpoint.seq (0 when the checkpoint is at or past it)
    MEASURED = "measured"
    #: the source has no message for the subject: nothing to bridge, lag 0
    NO_MESSAGES = "no_messages"
    #: the head is in another epoch than the checkpoint: seqs cannot be compared
    EPOCH_CHANGED = "epoch_changed"
    #: no checkpoint position yet (never written, or reset and nothing since)
    NO_CHECKPOINT = "no_checkpoint"
    #: the source did not answer for the subject (reason given)
    UNKNOWN = "unknown"
    #: the source was not asked (no servers given, or --no-lag)
    NOT_ASKED = "not_asked"


@dataclass(frozen=True, slots=True)
class Lag:
    """A subject's lag: a number only where it is measured (or there is nothing to bridge)."""

    state: LagState
    messages: int | None = None
    head: Head | None = None
    reason: str | None = None

    def text(self) -> str:
        """One cell for people: ``12``, ``0 (no messages)``, ``epoch changed (3 -> 4)``..."""
        state = self.state
        if state is LagState.MEASURED:
            return str(self.messages)
        if state is LagState.NO_MESSAGES:
            return "0 (no messages)"
        if state is LagState.EPOCH_CHANGED:
            return "epoch changed"
        if state is LagState.NO_CHECKPOINT:
            return "no checkpoint"
        if state is LagState.UNKNOWN:
            return "unknown"
        return "-"


def lag_of(checkpoint: Position | None, head: Head | HeadUnknown | None) -> Lag:
    """Compare a checkpoint with what the source told (``head`` None: it was not asked)."""
    if head is None:
        return Lag(LagState.NOT_ASKED)
    if isinstance(head, HeadUnknown):
        return Lag(LagState.UNKNOWN, reason=head.reason)
    if head.position is None:
        return Lag(LagState.NO_MESSAGES, 0, head)
    if checkpoint is None:
        return Lag(LagState.NO_CHECKPOINT, head=head)
    if checkpoint.epoch != head.position.epoch:
        return Lag(LagState.EPOCH_CHANGED, head=head)
    # A checkpoint past the head happens when the head is an older snapshot: the peer has
    # read at least up to it, so nothing the source reports is missing.
    return Lag(LagState.MEASURED, max(0, head.position.seq - checkpoint.seq), head)


def ask_heads(
    config: RestSourceConfig,
    subjects: Sequence[str],
    *,
    budget: float = DEFAULT_BUDGET,
    concurrency: int | None = None,
) -> dict[str, Head | HeadUnknown]:
    """The head of each subject, within ``budget`` seconds overall; never raises for faults
    of the source (they become :class:`HeadUnknown`). Call from outside any event loop."""
    if budget <= 0:
        raise ValueError(f"budget={budget}: must be positive")
    if not subjects:
        return {}
    return asyncio.run(_HeadAsker(config, budget, concurrency).ask_all(list(subjects)))


class _NoHeadError(Exception):
    """The head of one subject cannot be known (refused, no server, out of time): ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _HeadAsker:
    def __init__(self, config: RestSourceConfig, budget: float, concurrency: int | None) -> None:
        self._config = config
        self._budget = budget
        self._limit = max(1, min(concurrency or config.max_concurrency, config.max_concurrency))
        self._deadline = 0.0
        self._pool = ServerPool(config.servers, down_for=config.server_down_for)
        self._urls = {s: f"{config.scheme}://{s.netloc}{CONSUME_PATH}" for s in config.servers}
        self._token = config.token.reveal() if config.token is not None else None

    async def ask_all(self, subjects: list[str]) -> dict[str, Head | HeadUnknown]:
        cfg = self._config
        self._deadline = time.monotonic() + self._budget
        connector = aiohttp.TCPConnector(limit=self._limit, ssl=client_tls(cfg.tls_ca_file))
        sem = asyncio.Semaphore(self._limit)
        async with aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        ) as session:
            tasks = {
                s: asyncio.create_task(self._head(session, sem, s), name=f"head {s}")
                for s in dict.fromkeys(subjects)
            }
            _, late = await asyncio.wait(tasks.values(), timeout=self._budget)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if cfg.encryption:
            # a TLS connection cut mid-answer closes asynchronously (close_notify);
            # give it a moment so the socket does not outlive the loop
            await asyncio.sleep(_TLS_CLOSE_GRACE_S)
        out: dict[str, Head | HeadUnknown] = {}
        for subject, task in tasks.items():
            if task.cancelled():
                out[subject] = HeadUnknown(
                    subject, f"no answer within the {self._budget:g} s budget"
                )
            else:
                out[subject] = task.result()
        return out

    async def _head(
        self, session: aiohttp.ClientSession, sem: asyncio.Semaphore, subject: str
    ) -> Head | HeadUnknown:
        try:
            async with sem:
                newest = await self._newest(session, subject, {"history": "1"})
                if newest is not None:
                    return Head(subject, newest, "history")
                return Head(subject, await self._newest(session, subject, {}), "snapshot")
        except _NoHeadError as exc:
            return HeadUnknown(subject, exc.reason)

    async def _newest(
        self, session: aiohttp.ClientSession, subject: str, query: dict[str, str]
    ) -> Position | None:
        """The position of the last message of one consume answer (None: no message)."""
        params = {"subject": subject, **query}
        if self._token is not None:
            params["token"] = self._token
        body = await self._get(session, params)
        try:
            messages = decode_consume(subject, body)
            if not messages:
                return None
            last = max(messages, key=lambda m: (m.epoch, m.seq))
        except MalformedResponseError as exc:
            raise _NoHeadError(f"malformed answer: {self._scrub(exc.reason)}") from None
        return Position(last.epoch, last.seq)

    async def _get(self, session: aiohttp.ClientSession, params: dict[str, str]) -> bytes:
        """A 200 body, trying each server at most once (failover by weight)."""
        failures: list[str] = []
        for _ in self._config.servers:
            left = self._deadline - time.monotonic()
            if left <= 0:
                break
            server = self._pool.choose()
            timeout = aiohttp.ClientTimeout(total=min(left, self._config.request_timeout))
            try:
                async with session.get(self._urls[server], params=params, timeout=timeout) as resp:
                    status = resp.status
                    body = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                if isinstance(exc, TimeoutError) and self._spent():
                    break  # cut by the budget, not a fault of this server
                failures.append(self._failed(server, self._describe(exc)))
                continue
            if status == 200:
                self._pool.mark_up(server)
                return body
            detail = self._scrub(decode_error(body))
            if status >= 500 or status in (408, 429):
                failures.append(self._failed(server, f"HTTP {status}: {detail}"))
                continue
            if status == 403:
                raise _NoHeadError(f"the entitlement token is denied (HTTP 403): {detail}")
            raise _NoHeadError(f"{server.netloc} answered HTTP {status}: {detail}")
        if self._spent():
            earlier = f" (before: {'; '.join(failures)})" if failures else ""
            raise _NoHeadError(f"no answer within the {self._budget:g} s budget{earlier}")
        raise _NoHeadError("no server answered: " + "; ".join(failures))

    def _spent(self) -> bool:
        # asyncio may fire a timer up to its clock resolution early: a small slack
        return time.monotonic() >= self._deadline - _SLACK_S

    def _failed(self, server: ServerAddress, reason: str) -> str:
        self._pool.mark_down(server)
        return f"{server.netloc}: {reason}"

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return "timed out"
        return describe_error(exc, self._token)

    def _scrub(self, text: str) -> str:
        return scrub_token(text, self._token)
