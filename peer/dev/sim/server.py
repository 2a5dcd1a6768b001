"""The reference server's configuration and its two ways to run.

* :class:`SimServer`: in-process, on its own event loop in a daemon thread (tests).
* :func:`serve`: in the calling thread until SIGTERM/SIGINT (``mdpeer sim serve``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeVar, Unpack

from aiohttp import web

from peer.dev.sim.app import FaultChanges, Faults, SimApp
from peer.dev.sim.generator import GeneratorSpec
from peer.dev.sim.listener import RELEASE_DEADLINE_S, Listener
from peer.dev.sim.model import FIRST_EPOCH, Store, check_subject, now_closure

__all__ = ["GeneratorSpec", "SimConfig", "SimServer", "serve"]

#: MigratoryData's default port
DEFAULT_PORT: Final = 8800
_SHUTDOWN_TIMEOUT_S: Final = 1.0
_START_TIMEOUT_S: Final = 15.0

T = TypeVar("T")
log = logging.getLogger("peer.dev.sim")


@dataclass(frozen=True)
class SimConfig:
    """Everything the server can be told at start. Tokens never show in repr."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    #: the token consume requires (None = open)
    token_sub: str | None = field(default=None, repr=False)
    #: the token produce requires (None = open)
    token_pub: str | None = field(default=None, repr=False)
    max_message_size: int = 65536
    cache_size: int = 1000
    cache_expire_s: float = 180.0
    #: consume with epoch+seq returns seq >= Q (True) or seq > Q (False)
    seq_inclusive: bool = True
    #: at most this many messages per consume response; 0 = unlimited
    max_per_response: int = 0
    latency_ms: int = 0
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    #: seed of the fault-injection randomness (None = unpredictable)
    seed: int | None = None
    #: the token the /admin/ endpoints require (None = open)
    admin_token: str | None = field(default=None, repr=False)
    #: the notification channel (/x-mdpeer/notify, our own design) is served
    notify: bool = True
    #: fraction of doorbells dropped, and the longest random delay of one (ms)
    notify_drop_rate: float = 0.0
    notify_delay_ms: int = 0
    #: the epoch every subject starts in (above 1: a restart that lost the store)
    first_epoch: int = FIRST_EPOCH

    def __post_init__(self) -> None:
        def bad(name: str, reason: str) -> ValueError:
            return ValueError(f"{name}={getattr(self, name)!r}: {reason}")

        if not self.host:
            raise bad("host", "must not be empty")
        if not 0 <= self.port <= 65535:
            raise bad("port", "must be 0..65535 (0 = pick a free port)")
        for name in ("token_sub", "token_pub", "admin_token"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                # no value in the message: it is a secret
                raise ValueError(f"{name}: must not be empty or blank (omit it for no token)")
        if self.max_message_size < 1:
            raise bad("max_message_size", "must be at least 1 byte")
        if self.cache_size < 0:
            raise bad("cache_size", "must be >= 0")
        if not self.cache_expire_s > 0:
            raise bad("cache_expire_s", "must be > 0 seconds")
        if self.max_per_response < 0:
            raise bad("max_per_response", "must be >= 0 (0 = unlimited)")
        if isinstance(self.first_epoch, bool) or not isinstance(self.first_epoch, int):
            raise bad("first_epoch", "must be an integer")
        if self.first_epoch < 1:
            raise bad("first_epoch", "must be >= 1")
        self.faults()  # raises naming the field

    def faults(self) -> Faults:
        return Faults(
            self.latency_ms,
            self.fail_rate,
            self.drop_rate,
            self.notify_drop_rate,
            self.notify_delay_ms,
        )

    def describe(self) -> dict[str, Any]:
        """The settings, safe to show: tokens only say whether they are set."""
        return {
            "host": self.host,
            "port": self.port,
            "token_sub": self.token_sub is not None,
            "token_pub": self.token_pub is not None,
            "admin_token": self.admin_token is not None,
            "max_message_size": self.max_message_size,
            "cache_size": self.cache_size,
            "cache_expire_s": self.cache_expire_s,
            "seq_inclusive": self.seq_inclusive,
            "max_per_response": self.max_per_response,
            "notify": self.notify,
            "first_epoch": self.first_epoch,
        }


def _build(config: SimConfig, store: Store | None = None, faults: Faults | None = None) -> SimApp:
    if store is None:
        store = Store(
            cache_size=config.cache_size,
            cache_expire_s=config.cache_expire_s,
            seq_inclusive=config.seq_inclusive,
            max_per_response=config.max_per_response,
            first_epoch=config.first_epoch,
        )
    return SimApp(
        store,
        token_sub=config.token_sub,
        token_pub=config.token_pub,
        admin_token=config.admin_token,
        max_message_size=config.max_message_size,
        faults=faults or config.faults(),
        seed=config.seed,
        describe_config=config.describe,
        notify=config.notify,
    )


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _start_site(
    sim: SimApp, config: SimConfig, listener: Listener | None = None
) -> tuple[web.AppRunner, str]:
    """Listen on ``config``'s host and port, or on ``listener`` (bound there) when given."""
    runner = web.AppRunner(sim.app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site: web.BaseSite = (
            web.TCPSite(runner, config.host, config.port)
            if listener is None
            else web.SockSite(runner, listener)
        )
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    return runner, _url(config.host, port)


class SimServer:
    """The reference server in this process, on an event loop in a daemon thread.

    ``publish``, ``bump_epoch``, ``set_faults`` and ``state`` may be called from any thread,
    also before ``start`` (the store exists from construction). After ``stop`` the server
    may be started again: it keeps its subjects, faults and denied subjects and listens on
    the same port (a restart, e.g. to test failover back to it); notification sessions end
    with the stop.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self._sim = _build(self.config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._last_port: int | None = None
        self._listener: Listener | None = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> str:
        """Listen (port 0 = a free one) and return the base URL, e.g. http://127.0.0.1:8800."""
        if self._url is not None:
            return self._url
        config = self.config
        if self._last_port is not None:
            # an aiohttp application belongs to one loop: a restart needs a fresh one
            config = replace(config, port=self._last_port)
            denied = self._sim.denied_sub
            self._sim = _build(config, self._sim.store, self._sim.faults)
            self._sim.denied_sub = denied
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="sim-server", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            # every connection it accepts is closed at stop (peer.dev.sim.listener)
            self._listener = Listener(config.host, config.port)
            start = _start_site(self._sim, config, self._listener)
            fut = asyncio.run_coroutine_threadsafe(start, loop)
            self._runner, self._url = fut.result(_START_TIMEOUT_S)
            self._last_port = int(self._url.rsplit(":", 1)[1])
        except BaseException:
            self._stop_loop()
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            raise
        return self._url

    def stop(self) -> None:
        """Stop listening and end the loop thread (idempotent)."""
        loop, runner = self._loop, self._runner
        if loop is None:
            return
        if runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._cleanup(runner), loop)
            fut.result(_SHUTDOWN_TIMEOUT_S + RELEASE_DEADLINE_S + 10)
        self._runner = None
        self._url = None
        self._stop_loop()

    async def _cleanup(self, runner: web.AppRunner) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.refuse()
        await runner.cleanup()
        if listener is not None:
            left = await listener.release()
            if left:
                log.warning("reference server stopped with %d connection(s) still open", len(left))
            listener.close()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None:
            return

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        asyncio.run_coroutine_threadsafe(drain(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> SimServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the reference server is not started")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    # -- in-process controls -----------------------------------------------------------------

    def publish(
        self,
        subject: str,
        content: bytes | str,
        *,
        closure: str | None = None,
        retained: bool = True,
    ) -> tuple[int, int]:
        """Publish as produce would (closure defaults to now in ms); returns (epoch, seq).

        Raises ValueError (naming the subject) where produce would answer 400,
        MESSAGE_SIZE_LIMIT_EXCEEDED or FAILED.
        """
        check_subject(subject)
        data = content.encode() if isinstance(content, str) else content
        if len(data) > self.config.max_message_size:
            raise ValueError(
                f"subject {subject!r}: content of {len(data)} bytes exceeds "
                f"max_message_size={self.config.max_message_size}"
            )
        try:
            text = data.decode("utf-8") if isinstance(content, bytes) else content
        except UnicodeDecodeError:
            raise ValueError(f"subject {subject!r}: content is not UTF-8 text") from None
        return self._sim.store.publish(
            subject, text, closure=now_closure() if closure is None else closure, retained=retained
        )

    def bump_epoch(self, subject: str | None = None) -> dict[str, int]:
        """New epoch for one subject, or all (as after a cluster restart): {subject: epoch}."""
        if subject is not None:
            check_subject(subject)
        return self._sim.bump_epoch(subject)

    def set_faults(self, **changes: Unpack[FaultChanges]) -> dict[str, Any]:
        """Change the given faults (others stay); returns all current faults."""
        return self._sim.set_faults(**changes)

    def deny_subjects(self, *subjects: str) -> None:
        """From now on, consume of these subjects is denied (403), whatever the token; none
        given: every subject is allowed again (as the token allows)."""
        for subject in subjects:
            check_subject(subject)
        self._sim.denied_sub = frozenset(subjects)

    def state(self, subject: str | None = None) -> dict[str, Any]:
        """What ``GET /admin/state`` answers."""
        return self._on_loop(self._async_state(subject), lambda: self._sim.state(subject))

    async def _async_state(self, subject: str | None) -> dict[str, Any]:
        return self._sim.state(subject)

    def start_generator(self, spec: GeneratorSpec) -> dict[str, Any]:
        """Start the in-process generator (replacing a running one); the server must run."""
        return self._on_loop(self._sim.start_generator(spec))

    def generator_status(self) -> dict[str, Any] | None:
        """The running (or last) generator's description, None if none was started."""
        gen = self._sim.generator
        return None if gen is None else gen.describe()

    def stop_generator(self) -> dict[str, Any] | None:
        """Stop the generator; returns its final description (None if none ran)."""
        return self._on_loop(self._sim.stop_generator(), lambda: None)

    def _on_loop(self, coro: Coroutine[Any, Any, T], fallback: Callable[[], T] | None = None) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            if fallback is None:
                raise RuntimeError("the reference server is not started")
            return fallback()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)


async def serve(
    config: SimConfig,
    *,
    generator: GeneratorSpec | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly. ``announce`` gets the base URL."""
    sim = _build(config)
    runner, url = await _start_site(sim, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if generator is not None:
            await sim.start_generator(generator)
        announce(url)
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
