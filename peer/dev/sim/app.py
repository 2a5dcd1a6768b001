"""The aiohttp application: REST produce/consume as documented, fault injection, admin.

Status codes where MigratoryData's docs are silent are decisions of this project, written
down in docs/REFERENCE-SERVER.md: 400 for a bad subject or parameter, 403 for a denied
consume, 503 for an injected failure; produce answers 200 with its status in the body.
"""

from __future__ import annotations

import asyncio
import hmac
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Final, TypedDict, Unpack

from aiohttp import web

from peer.dev.sim.generator import Generator, GeneratorSpec
from peer.dev.sim.model import Store, encode_json, now_closure, subject_problem
from peer.dev.sim.notify import NotifyChannel, NotifyHub

_JSON: Final = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Faults:
    """Injected faults: latency, fail and drop apply to /rest/ requests only (admin stays
    reachable); the notify_* ones to the doorbells of the notification channel."""

    latency_ms: int = 0
    #: fraction of requests answered 503
    fail_rate: float = 0.0
    #: fraction of connections closed without any response
    drop_rate: float = 0.0
    #: fraction of doorbells (news events) never sent
    notify_drop_rate: float = 0.0
    #: each doorbell is held back a random 0..notify_delay_ms
    notify_delay_ms: int = 0

    def __post_init__(self) -> None:
        check_faults(**self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultChanges(TypedDict, total=False):
    """Faults to change; one left out, or None, stays as it is."""

    latency_ms: int | None
    fail_rate: float | None
    drop_rate: float | None
    notify_drop_rate: float | None
    notify_delay_ms: int | None


def check_faults(**faults: object) -> None:
    """Raises ValueError naming the first fault out of range."""
    for name, value in faults.items():
        if name.endswith("_ms"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be an integer >= 0")
        elif (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0
        ):
            raise ValueError(f"{name}={value!r} must be a number between 0 and 1")


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=encode_json(body), content_type=_JSON)


def _bad(subject: str | None, error: str, status: int = 400) -> web.Response:
    return _json(status, {"error": error, "subject": subject})


class _BadParamError(Exception):
    def __init__(self, error: str) -> None:
        self.error = error
        super().__init__(error)


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or not text.isascii():
        raise _BadParamError(f"parameter {name}={raw!r} must be a non-negative integer")
    return int(text)


def _subject_param(query: Mapping[str, str]) -> str:
    subject = query.get("subject")
    if subject is None:
        raise _BadParamError("missing required parameter 'subject'")
    problem = subject_problem(subject)
    if problem is not None:
        raise _BadParamError(f"invalid subject {subject!r}: {problem}")
    return subject


def _bool_param(query: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = query.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    raise _BadParamError(f"parameter {name}={raw!r} must be 'true' or 'false'")


class SimApp:
    """Store + faults + generator behind an aiohttp application."""

    def __init__(
        self,
        store: Store,
        *,
        token_sub: str | None,
        token_pub: str | None,
        admin_token: str | None,
        max_message_size: int,
        faults: Faults,
        seed: int | None,
        describe_config: Callable[[], dict[str, Any]],
        notify: bool = True,
    ) -> None:
        self.store = store
        self._token_sub = token_sub
        self._token_pub = token_pub
        self._admin_token = admin_token
        self.max_message_size = max_message_size
        self.faults = faults
        self._rng = random.Random(seed)
        self._describe_config = describe_config
        self.generator: Generator | None = None
        self.counters: Counter[str] = Counter()
        #: subjects no token is entitled to consume (as a JWT whose permissions leave them
        #: out): answered 403 like a wrong token, per subject
        self.denied_sub: frozenset[str] = frozenset()
        self.app = web.Application(
            middlewares=[self._fault_middleware],
            # the body limit is enforced by produce itself (MESSAGE_SIZE_LIMIT_EXCEEDED)
            client_max_size=max(max_message_size * 4 + 4096, 1 << 20),
        )
        self.app.add_routes(
            [
                web.post("/rest/produce", self.produce),
                web.get("/rest/consume", self.consume),
                web.post("/admin/epoch", self.admin_epoch),
                web.get("/admin/faults", self.admin_faults),
                web.post("/admin/faults", self.admin_faults),
                web.get("/admin/state", self.admin_state),
                web.get("/admin/generate", self.admin_generate),
                web.post("/admin/generate", self.admin_generate),
                web.delete("/admin/generate", self.admin_generate),
            ]
        )
        #: the notification channel (docs/REFERENCE-SERVER.md), None when it is turned off
        self.notify: NotifyHub | None = None
        if notify:
            self.notify = NotifyHub(store, self._notify_faults, seed)
            self.app.add_routes(NotifyChannel(self.notify, self.subscribe_denial).routes())
        self.app.on_shutdown.append(self._on_shutdown)

    def _notify_faults(self) -> tuple[float, int]:
        faults = self.faults
        return faults.notify_drop_rate, faults.notify_delay_ms

    # -- faults ------------------------------------------------------------------------------

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/rest/"):
            return await handler(request)
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.drop_rate and self._rng.random() < faults.drop_rate:
            self.counters["dropped"] += 1
            transport = request.transport
            if transport is not None:
                transport.abort()
            # The connection is gone; aiohttp discards whatever is returned here.
            return web.Response(status=500)
        if faults.fail_rate and self._rng.random() < faults.fail_rate:
            self.counters["failed_injected"] += 1
            return _json(503, {"error": "service unavailable (injected fault: fail_rate)"})
        return await handler(request)

    # -- REST --------------------------------------------------------------------------------

    @staticmethod
    def _allowed(expected: str | None, given: str | None) -> bool:
        if expected is None:
            return True
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, or None when it exceeds max_message_size (the rest is discarded)."""
        limit = self.max_message_size
        length = request.content_length
        if length is not None and length > limit:
            return None
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = await request.content.readany()
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > limit:
                return None
            chunks.append(chunk)

    async def produce(self, request: web.Request) -> web.Response:
        self.counters["produce"] += 1
        received = now_closure()
        query = request.query
        try:
            subject = _subject_param(query)
            retained = _bool_param(query, "retained", default=True)
            qos = query.get("qos", "guaranteed").strip().lower()
            if qos not in ("standard", "guaranteed"):
                raise _BadParamError(
                    f"parameter qos={query['qos']!r} must be 'standard' or 'guaranteed'"
                )
        except _BadParamError as exc:
            return _bad(query.get("subject"), exc.error)
        closure = query.get("closure", received)

        def answer(status: str) -> web.Response:
            self.counters[f"produce_{status}"] += 1
            return _json(200, {"subject": subject, "closure": closure, "status": status})

        if not self._allowed(self._token_pub, query.get("token")):
            return answer("DENY")
        body = await self._read_body(request)
        if body is None:
            return answer("MESSAGE_SIZE_LIMIT_EXCEEDED")
        try:
            content = body.decode("utf-8")
        except UnicodeDecodeError:
            return answer("FAILED")  # MigratoryData content is UTF-8 text
        # Both qos levels are cached: this server never loses a message it accepted.
        self.store.publish(subject, content, closure=closure, retained=retained)
        return answer("OK")

    async def consume(self, request: web.Request) -> web.Response:
        self.counters["consume"] += 1
        query = request.query
        try:
            subject = _subject_param(query)
            history = _int_param(query, "history")
            epoch = _int_param(query, "epoch")
            seq = _int_param(query, "seq")
            if (epoch is None) != (seq is None):
                given, missing = ("epoch", "seq") if seq is None else ("seq", "epoch")
                raise _BadParamError(f"parameter {given!r} needs {missing!r} as well")
        except _BadParamError as exc:
            return _bad(query.get("subject"), exc.error)
        denial = self.subscribe_denial(subject, query.get("token"))
        if denial is not None:
            self.counters["consume_denied"] += 1
            return _bad(subject, denial, status=403)
        store = self.store
        if epoch is not None and seq is not None:
            body = store.recover(subject, epoch, seq)
        elif history is not None:
            body = store.history(subject, history)
        else:
            body = store.snapshot(subject)
        return web.Response(body=body, content_type=_JSON)

    def subscribe_denial(self, subject: str, token: str | None) -> str | None:
        """Why ``token`` may not consume (or be notified of) ``subject``; None if it may."""
        if not self._allowed(self._token_sub, token):
            error = "missing" if token is None else "not entitled"
            return f"subscribe denied on {subject!r}: the token is {error}"
        if subject in self.denied_sub:
            return f"subscribe denied on {subject!r}: the token is not entitled to this subject"
        return None

    # -- admin -------------------------------------------------------------------------------

    def _admin_denied(self, request: web.Request) -> web.Response | None:
        if self._allowed(self._admin_token, request.query.get("token")):
            return None
        return _json(403, {"error": "admin denied: the admin token is missing or wrong"})

    async def admin_epoch(self, request: web.Request) -> web.Response:
        if denied := self._admin_denied(request):
            return denied
        subject = request.query.get("subject")
        if subject is not None:
            problem = subject_problem(subject)
            if problem is not None:
                return _bad(subject, f"invalid subject {subject!r}: {problem}")
        return _json(200, {"epochs": self.bump_epoch(subject)})

    def bump_epoch(self, subject: str | None) -> dict[str, int]:
        return self.store.bump_epoch(subject)

    async def admin_faults(self, request: web.Request) -> web.Response:
        if denied := self._admin_denied(request):
            return denied
        if request.method == "POST":
            try:
                data = await request.json()
                if not isinstance(data, dict):
                    raise ValueError("the body must be a JSON object")
                self.set_faults(**data)
            except (ValueError, TypeError) as exc:
                return _json(400, {"error": f"faults: {exc}"})
        return _json(200, self.faults.as_dict())

    def set_faults(self, **changes: Unpack[FaultChanges]) -> dict[str, Any]:
        given: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
        new = replace(self.faults, **given)
        self.faults = new  # one assignment: handlers see the old or the new set, never a mix
        return new.as_dict()

    async def admin_state(self, request: web.Request) -> web.Response:
        if denied := self._admin_denied(request):
            return denied
        return _json(200, self.state(request.query.get("subject")))

    def state(self, subject: str | None = None) -> dict[str, Any]:
        gen = self.generator
        return {
            "subjects": self.store.describe(subject),
            "subject_count": self.store.subject_count(),
            "published": self.store.published,
            "faults": self.faults.as_dict(),
            "generator": None if gen is None else gen.describe(),
            "requests": dict(self.counters),
            "notify": {"enabled": False} if self.notify is None else self.notify.describe(),
            "config": self._describe_config(),
            "process_cpu_s": round(time.process_time(), 3),
        }

    async def admin_generate(self, request: web.Request) -> web.Response:
        if denied := self._admin_denied(request):
            return denied
        if request.method == "POST":
            try:
                spec = GeneratorSpec.from_json(await request.json())
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                return _json(400, {"error": str(exc)})
            info = await self.start_generator(spec)
            info["subject_names"] = list(spec.resolved[:1000])
            return _json(200, info)
        if request.method == "DELETE":
            return _json(200, {"generator": await self.stop_generator()})
        gen = self.generator
        return _json(200, {"generator": None if gen is None else gen.describe()})

    async def start_generator(self, spec: GeneratorSpec) -> dict[str, Any]:
        """Start a generator, replacing (stopping) any running one."""
        await self.stop_generator()
        gen = self.generator = Generator(self.store, spec)
        gen.start()
        return {"generator": gen.describe()}

    async def stop_generator(self) -> dict[str, Any] | None:
        gen = self.generator
        if gen is None:
            return None
        await gen.stop()
        return gen.describe()

    async def _on_shutdown(self, _app: web.Application) -> None:
        if self.notify is not None:
            self.notify.shutdown()
        await self.stop_generator()
