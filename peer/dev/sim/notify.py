"""The reference server's notification channel: "subject S has news", as server-sent events.

This channel is **mdpeer's own design**, made for testing the peers' doorbell mode without
MigratoryData's client. It is not MigratoryData's protocol (that protocol is not public, and
nothing here is modelled on it). See docs/REFERENCE-SERVER.md, "Notification channel".

* ``GET /x-mdpeer/notify[?heartbeat_ms=N]`` opens one *session*: a ``text/event-stream``
  whose first event, ``session``, names the session id; a comment line every heartbeat.
* ``POST /x-mdpeer/notify/<session>/subscribe?token=T`` with a JSON list of subjects answers,
  per subject, allowed or denied by the same entitlement check as ``/rest/consume``.
* ``POST /x-mdpeer/notify/<session>/unsubscribe`` with a JSON list of subjects.
* Every message published on a subscribed subject rings a ``news`` event naming the subject.
  A doorbell, not a feed: rings for a subject not yet sent are coalesced into one.

Cost: a subject that nobody subscribed costs nothing, and a subscribed idle subject costs one
dict entry: publishing looks the subject up once (and not even that while no session has any
subscription: the store's hook is unset then); there is no timer per subject or session
beyond the heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from peer.dev.sim.model import Store, encode_json, subject_problem

PREFIX: Final = "/x-mdpeer/notify"
DEFAULT_HEARTBEAT_MS: Final = 10_000
HEARTBEAT_RANGE_MS: Final = (100, 300_000)
#: subjects in one subscribe or unsubscribe request, and the bytes of its body
MAX_SUBJECTS: Final = 50_000
MAX_BODY: Final = 8 << 20

#: (subject, token) -> why the token may not subscribe the subject, or None when it may
Entitlement = Callable[[str, str | None], str | None]
#: the doorbell faults now: (fraction dropped, longest random delay in ms)
NotifyFaults = Callable[[], tuple[float, int]]


@dataclass(eq=False)
class Session:
    """One open event stream and the subjects it subscribed."""

    id: str
    loop: asyncio.AbstractEventLoop
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    subjects: set[str] = field(default_factory=set)
    #: subjects rung and not yet sent, in ring order (a dict: an ordered set)
    pending: dict[str, None] = field(default_factory=dict)
    closed: bool = False


class NotifyHub:
    """Sessions, their subscriptions and the rings between publish and stream.

    Thread-safe: the store calls :meth:`notify` from whichever thread published (the event
    loop, or a test's thread through ``SimServer.publish``); a stream is woken on its loop.
    """

    def __init__(self, store: Store, faults: NotifyFaults, seed: int | None) -> None:
        self._store = store
        self._faults = faults
        # its own generator: the rings must not shift the REST faults' sequence of a seed
        self._rng = random.Random(None if seed is None else f"notify:{seed}")
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        #: subject -> the sessions subscribed to it (a tuple: rebuilt on the rare change,
        #: iterated on every publish)
        self._index: dict[str, tuple[Session, ...]] = {}
        self.counters: Counter[str] = Counter()
        store.on_publish = None

    # -- sessions and subscriptions (on the loop) ---------------------------------------------

    def open(self, loop: asyncio.AbstractEventLoop) -> Session:
        session = Session(secrets.token_urlsafe(12), loop)
        with self._lock:
            self._sessions[session.id] = session
            self.counters["sessions_opened"] += 1
        return session

    def close(self, session: Session) -> None:
        """End a session and drop its subscriptions (idempotent)."""
        with self._lock:
            session.closed = True
            if self._sessions.pop(session.id, None) is None:
                return
            self._remove(session, list(session.subjects))
            session.pending.clear()
            self.counters["sessions_closed"] += 1
            self._set_hook()

    def shutdown(self) -> None:
        """The server stops: every stream ends after what it has already been sent."""
        with self._lock:
            sessions = list(self._sessions.values())
            for session in sessions:
                session.closed = True
        for session in sessions:
            session.wake.set()

    def known(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._sessions

    def subscribe(self, session_id: str, subjects: Iterable[str], *, denied: int = 0) -> bool:
        """Add subscriptions (``denied``: how many the request asked for in vain, counted);
        False when the session does not exist (any more)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return False
            self.counters["subscribe_denied"] += denied
            index = self._index
            for subject in subjects:
                if subject not in session.subjects:
                    session.subjects.add(subject)
                    index[subject] = (*index.get(subject, ()), session)
            self._set_hook()
            return True

    def unsubscribe(self, session_id: str, subjects: Iterable[str]) -> int | None:
        """Remove subscriptions (and their rings not yet sent); how many there were, None
        when the session does not exist (any more)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            gone = [s for s in subjects if s in session.subjects]
            self._remove(session, gone)
            for subject in gone:
                session.pending.pop(subject, None)
            self._set_hook()
            return len(gone)

    def _remove(self, session: Session, subjects: Iterable[str]) -> None:
        index = self._index
        for subject in subjects:
            session.subjects.discard(subject)
            left = tuple(s for s in index.get(subject, ()) if s is not session)
            if left:
                index[subject] = left
            else:
                index.pop(subject, None)

    def _set_hook(self) -> None:
        # Publishing pays for the channel only while someone is subscribed.
        self._store.on_publish = self.notify if self._index else None

    # -- rings (any thread) ---------------------------------------------------------------

    def notify(self, subjects: Sequence[str]) -> None:
        """Messages were published on ``subjects`` (the store's hook)."""
        drop_rate, delay_ms = self._faults()
        with self._lock:
            index = self._index
            for subject in subjects:
                sessions = index.get(subject)
                if sessions:
                    for session in sessions:
                        self._ring(session, subject, drop_rate, delay_ms)

    def _ring(self, session: Session, subject: str, drop_rate: float, delay_ms: int) -> None:
        self.counters["news_rung"] += 1
        if drop_rate and self._rng.random() < drop_rate:
            self.counters["news_dropped"] += 1
            return
        if delay_ms:
            self.counters["news_delayed"] += 1
            delay = self._rng.uniform(0.0, delay_ms / 1000)
            _on_loop(session.loop, self._delay, session, subject, delay)
            return
        self._queue(session, subject)

    def _delay(self, session: Session, subject: str, delay: float) -> None:
        session.loop.call_later(delay, self._delayed, session, subject)

    def _delayed(self, session: Session, subject: str) -> None:
        with self._lock:
            if not session.closed and subject in session.subjects:
                self._queue(session, subject)

    def _queue(self, session: Session, subject: str) -> None:
        pending = session.pending
        if subject in pending:
            self.counters["news_coalesced"] += 1
            return
        pending[subject] = None
        if len(pending) == 1:
            _on_loop(session.loop, session.wake.set)

    def take(self, session: Session) -> list[str]:
        """The subjects rung since the last take, in ring order."""
        with self._lock:
            out = list(session.pending)
            session.pending.clear()
            self.counters["news_sent"] += len(out)
            return out

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "enabled": True,
                "sessions": len(self._sessions),
                "subscriptions": sum(len(s.subjects) for s in self._sessions.values()),
                **{k: self.counters[k] for k in sorted(self.counters)},
            }


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: object) -> None:
    # a closed loop: the server has stopped, and the stream with it
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


def event(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event (JSON data has no newline)."""
    return b"event: " + name.encode() + b"\ndata: " + encode_json(data) + b"\n\n"


def _news(subject: str) -> bytes:
    return b"event: news\ndata: " + encode_json({"subject": subject}) + b"\n\n"


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=encode_json(body), content_type="application/json")


class _BadRequestError(Exception):
    pass


class NotifyChannel:
    """The HTTP side: the stream and the subscribe/unsubscribe requests of :class:`NotifyHub`."""

    def __init__(self, hub: NotifyHub, entitlement: Entitlement) -> None:
        self.hub = hub
        self._entitlement = entitlement

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(PREFIX, self.stream),
            web.post(PREFIX + "/{session}/subscribe", self.subscribe),
            web.post(PREFIX + "/{session}/unsubscribe", self.unsubscribe),
        ]

    async def stream(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("heartbeat_ms", str(DEFAULT_HEARTBEAT_MS))
        low, high = HEARTBEAT_RANGE_MS
        if not raw.isdigit() or not low <= int(raw) <= high:
            return _json(400, {"error": f"parameter heartbeat_ms={raw!r} must be {low}..{high}"})
        heartbeat = int(raw) / 1000
        session = self.hub.open(asyncio.get_running_loop())
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            await response.prepare(request)
            await response.write(
                event("session", {"session": session.id, "heartbeat_ms": int(raw)})
            )
            while not session.closed:
                try:
                    await asyncio.wait_for(session.wake.wait(), heartbeat)
                except TimeoutError:
                    # also how a client that went away silently is noticed
                    await response.write(b": heartbeat\n\n")
                    continue
                session.wake.clear()
                subjects = self.hub.take(session)
                if subjects:
                    await response.write(b"".join(_news(s) for s in subjects))
        except ConnectionError:
            pass  # the client went away; its session ends with it
        finally:
            self.hub.close(session)
        return response

    async def _subjects(self, request: web.Request) -> list[str]:
        chunks: list[bytes] = []
        total = 0
        while chunk := await request.content.readany():
            total += len(chunk)
            if total > MAX_BODY:
                raise _BadRequestError(f"the body exceeds {MAX_BODY} bytes")
            chunks.append(chunk)
        try:
            subjects = json.loads(b"".join(chunks))
        except ValueError:
            raise _BadRequestError("the body must be a JSON list of subjects") from None
        if not isinstance(subjects, list) or not all(isinstance(s, str) for s in subjects):
            raise _BadRequestError("the body must be a JSON list of subjects (strings)")
        if len(subjects) > MAX_SUBJECTS:
            raise _BadRequestError(f"at most {MAX_SUBJECTS} subjects per request")
        return subjects

    def _unknown(self, session_id: str) -> web.Response:
        return _json(404, {"error": f"no notification session {session_id!r} (open a new one)"})

    async def subscribe(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session"]
        if not self.hub.known(session_id):
            return self._unknown(session_id)
        try:
            subjects = await self._subjects(request)
        except _BadRequestError as exc:
            return _json(400, {"error": str(exc)})
        token = request.query.get("token")
        results: list[dict[str, Any]] = []
        allowed: list[str] = []
        for subject in subjects:
            problem = subject_problem(subject)
            why = (
                f"invalid subject {subject!r}: {problem}"
                if problem is not None
                else self._entitlement(subject, token)
            )
            if why is None:
                allowed.append(subject)
                results.append({"subject": subject, "allowed": True})
            else:
                results.append({"subject": subject, "allowed": False, "reason": why})
        if not self.hub.subscribe(session_id, allowed, denied=len(subjects) - len(allowed)):
            return self._unknown(session_id)
        return _json(200, {"session": session_id, "results": results})

    async def unsubscribe(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session"]
        try:
            subjects = await self._subjects(request)
        except _BadRequestError as exc:
            return _json(400, {"error": str(exc)})
        gone = self.hub.unsubscribe(session_id, subjects)
        if gone is None:
            return self._unknown(session_id)
        return _json(200, {"session": session_id, "unsubscribed": gone})


__all__ = ["PREFIX", "NotifyChannel", "NotifyHub", "Session", "event"]
