"""MigratoryData's own Python client as a doorbell: a pushed message wakes its subject's REST
fetch at once, so an idle subject needs polling only on a long safety interval (issue #16).

This module is the only place that uses the client, and it uses only its documented public
API: the class ``MigratoryDataClient`` and its setters ``set_servers``, ``set_encryption``,
``set_entitlement_token``, ``set_listener``; the listener's ``on_message(message)`` and
``on_status(status, info)``; ``subscribe``, ``unsubscribe``, ``connect`` (called when the
class has one) and ``disconnect``. The client is the user's download from the vendor (no
package index has it), imported by the name ``[source] doorbell_module``.

A doorbell carries no data: the documented message has no epoch or seq, so exact resume by
(epoch, seq) stays with REST. A message only means "fetch this subject now"; its content is
never read.

The three callbacks given to :class:`Doorbell` are called from the client's threads (never
with a lock of this module held); whatever they raise is logged, never passed to the client:

* ``wake(subject)``: fetch the subject now. Rung by a message, by the subscription being
  allowed (that fetch closes the window between the last fetch and the subscription taking
  effect) and by ``NOTIFY_DATA_SYNC`` / ``NOTIFY_DATA_RESYNC``.
* ``denied(subject, info)``: the server denied the subscription: stop and report the subject.
* ``connected(up)``: ``False``: poll every subject as without a doorbell; ``True``: fetch
  every subject once, since doorbells may have been missed while the client was down.

Decisions where the vendor's documentation is silent (docs/SOURCE.md, "Doorbell mode"):

* a status is recognised by the value of the module's (or the class's) ``NOTIFY_*``
  constant of that name, or by its name itself when the status is that string;
* a subscription status's ``info`` names the subject, or holds a list of subjects;
* a subject is *armed* (:meth:`Doorbell.armed`: the source may rely on doorbells for it)
  only while the client is connected, and only after evidence since the latest connection:
  its subscription was allowed, its data synced, or a message for it came. A client that
  never says so again after a reconnect leaves its subjects on ordinary polling: costly, but
  never slow.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from peer.config.servers import MAX_WEIGHT, parse_servers
from peer.config.settings import SourceSettings
from peer.errors import ConfigError
from peer.secret import Secret

log = logging.getLogger("peer.source")

CLIENT_CLASS: Final = "MigratoryDataClient"
#: what the adapter calls; ``connect`` is called when present
REQUIRED_METHODS: Final = (
    "set_servers",
    "set_encryption",
    "set_entitlement_token",
    "set_listener",
    "subscribe",
    "unsubscribe",
    "disconnect",
)
DOORBELL: Final = "doorbell"
POLLING: Final = "polling"
UNAVAILABLE: Final = "unavailable"

_WAKES: Final = frozenset({"NOTIFY_SUBSCRIBE_ALLOW", "NOTIFY_DATA_SYNC", "NOTIFY_DATA_RESYNC"})

Wake = Callable[[str], None]
Denied = Callable[[str, str], None]
Connected = Callable[[bool], None]


def load_client(module_name: str) -> tuple[ModuleType | None, str]:
    """Import the client module: (module, where it was found) or (None, why it cannot be used).

    Importing runs the module's code: that is the user's installed client, as ``mdpeer run``
    would import it.
    """
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            return None, (
                f"module {module_name!r} is not importable (MigratoryData's Python client is "
                "the vendor's download: put its directory on the peer's PYTHONPATH)"
            )
        return None, f"importing {module_name!r} failed: {exc}"
    except Exception as exc:
        return None, f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
    cls = getattr(module, CLIENT_CLASS, None)
    if not isinstance(cls, type):
        return None, f"module {module_name!r} has no class {CLIENT_CLASS}"
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        return None, f"{module_name}.{CLIENT_CLASS} lacks {', '.join(missing)}"
    where = getattr(module, "__file__", None)
    return module, str(Path(where)) if where else module_name


@dataclass(frozen=True, slots=True)
class DoorbellPlan:
    """Which mode a peer with these settings uses, and why (``mdpeer validate`` prints it).

    ``mode``: ``doorbell``, ``polling``, or ``unavailable`` (``doorbell = "on"`` without a
    usable client: the peer must not start).
    """

    setting: str
    #: the module's name
    module: str
    mode: str
    reason: str
    #: the imported module, in doorbell mode
    client_module: ModuleType | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        return f"{self.mode} ({self.reason})"

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ("mode", "setting", "module", "reason")}

    def require(self) -> None:
        """Raise :class:`DoorbellUnavailableError` when the mode is ``unavailable``."""
        if self.mode == UNAVAILABLE:
            raise DoorbellUnavailableError(self)


class DoorbellUnavailableError(ConfigError):
    """``doorbell = "on"`` but the client module cannot be used; names the setting."""

    def __init__(self, plan: DoorbellPlan) -> None:
        self.plan = plan
        super().__init__(
            "source.doorbell",
            plan.setting,
            plan.reason,
            hint=f'install the client as {plan.module!r}, or set doorbell = "auto" '
            "to poll without it",
        )


def plan_for(source: SourceSettings) -> DoorbellPlan:
    """The mode of a peer with ``source`` settings here (imports the module to find out)."""
    setting, name = source.doorbell, source.doorbell_module
    if setting == "off":
        return DoorbellPlan(setting, name, POLLING, 'doorbell = "off": every subject is polled')
    module, found = load_client(name)
    if module is None:
        if setting == "on":
            return DoorbellPlan(setting, name, UNAVAILABLE, found)
        return DoorbellPlan(setting, name, POLLING, f"{found}; every subject is polled")
    return DoorbellPlan(
        setting,
        name,
        DOORBELL,
        f"{name} from {found}; an idle subject is fetched when pushed and every "
        f"{source.poll_safety_interval_ms} ms",
        module,
    )


def client_servers(servers: Iterable[str]) -> list[str]:
    """Server entries as the vendor's clients take them: ``[weight ]host:port``, no scheme
    (encryption is its own setting)."""
    out = []
    for address in parse_servers(list(servers)):
        weight = "" if address.weight == MAX_WEIGHT else f"{address.weight} "
        out.append(weight + address.netloc)
    return out


def _status_names(module: ModuleType) -> dict[object, str]:
    names: dict[object, str] = {}
    for holder in (module, getattr(module, CLIENT_CLASS, None)):
        for attr in dir(holder):
            if attr.startswith("NOTIFY_"):
                value = getattr(holder, attr)
                try:
                    names.setdefault(value, attr)
                except TypeError:
                    continue  # an unhashable constant cannot be looked up anyway
    return names


def _subjects_of(info: object) -> list[str]:
    if isinstance(info, str):
        return [info] if info.startswith("/") else []
    if isinstance(info, list | tuple | set | frozenset):
        return [s for s in info if isinstance(s, str) and s.startswith("/")]
    return []


class _Listener:
    """What the client calls back; nothing it does may raise into the client."""

    def __init__(self, doorbell: Doorbell) -> None:
        self._doorbell = doorbell

    def on_message(self, message: Any) -> None:
        try:
            self._doorbell._on_message(message)
        except Exception:
            log.exception("doorbell: handling a pushed message failed")

    def on_status(self, status: Any, info: Any) -> None:
        try:
            self._doorbell._on_status(status, info)
        except Exception:
            log.exception("doorbell: handling a status notification failed")


class Doorbell:
    """One client connection for one peer: subscribe the subjects it owns, turn the client's
    callbacks into ``wake``, ``denied`` and ``connected``. Thread-safe; no client exception
    escapes (each is logged and counted in :meth:`stats`)."""

    def __init__(
        self,
        module: ModuleType,
        *,
        servers: Sequence[str],
        encryption: bool,
        token: Secret | None,
        wake: Wake,
        denied: Denied,
        connected: Connected,
    ) -> None:
        self._module = module
        self._servers = client_servers(servers)
        self._encryption = encryption
        self._token = token
        self._wake, self._denied, self._connected_cb = wake, denied, connected
        self._names = _status_names(module)
        #: guards the sets and flags below; never held while calling out
        self._lock = threading.Lock()
        #: serialises the calls into the client
        self._calls = threading.Lock()
        self._client: Any = None
        self._closed = False
        self._connected = False
        self._subjects: set[str] = set()
        #: subscriptions confirmed since the latest connection (see the module's docstring)
        self._confirmed: set[str] = set()
        self._refused: set[str] = set()
        self._errors = 0
        self._last_error: str | None = None

    @classmethod
    def from_settings(
        cls,
        source: SourceSettings,
        *,
        wake: Wake,
        denied: Denied,
        connected: Connected,
        plan: DoorbellPlan | None = None,
    ) -> Doorbell | None:
        """The doorbell of a peer with ``source`` settings, None in polling mode. Raises
        :class:`DoorbellUnavailableError` for ``doorbell = "on"`` without a usable client."""
        plan = plan or plan_for(source)
        plan.require()
        if plan.client_module is None:
            return None
        return cls(
            plan.client_module,
            servers=source.servers,
            encryption=source.effective_encryption,
            token=source.token,
            wake=wake,
            denied=denied,
            connected=connected,
        )

    # -- the peer's side -----------------------------------------------------------------

    def start(self) -> None:
        """Create the client, subscribe what is subscribed so far, connect. A failure is
        logged: the peer then polls as without a doorbell."""
        with self._calls:
            if self._client is not None or self._closed:
                return
            client = self._call("create the client", getattr(self._module, CLIENT_CLASS))
            if client is _FAILED:
                return
            steps: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = [
                ("set_servers", client.set_servers, (list(self._servers),)),
                ("set_encryption", client.set_encryption, (self._encryption,)),
                ("set_listener", client.set_listener, (_Listener(self),)),
            ]
            if self._token is not None:
                token = self._token.reveal()
                steps.append(("set_entitlement_token", client.set_entitlement_token, (token,)))
            with self._lock:
                subjects = sorted(self._subjects)
            if subjects:
                steps.append(("subscribe", client.subscribe, (subjects,)))
            connect = getattr(client, "connect", None)
            if callable(connect):
                steps.append(("connect", connect, ()))
            for what, method, args in steps:
                if self._call(what, method, *args) is _FAILED:
                    # half set up: let go of whatever it may have started
                    self._call("disconnect", client.disconnect)
                    return
            self._client = client

    def subscribe(self, subjects: Iterable[str]) -> None:
        """Add subjects (already subscribed ones are skipped)."""
        with self._calls:
            with self._lock:
                new = [s for s in dict.fromkeys(subjects) if s not in self._subjects]
                self._subjects.update(new)
            if new and self._client is not None:
                self._call("subscribe", self._client.subscribe, new)

    def unsubscribe(self, subjects: Iterable[str]) -> None:
        """Remove subjects (unknown ones are skipped); no callback names them afterwards."""
        with self._calls:
            with self._lock:
                gone = [s for s in dict.fromkeys(subjects) if s in self._subjects]
                self._subjects.difference_update(gone)
                self._confirmed.difference_update(gone)
                self._refused.difference_update(gone)
            if gone and self._client is not None:
                self._call("unsubscribe", self._client.unsubscribe, gone)

    def close(self) -> None:
        """Disconnect (idempotent); says ``connected(False)`` if it was connected."""
        with self._calls:
            client, self._client = self._client, None
            with self._lock:
                self._closed = True
                was = self._connected
                self._connected = False
                self._confirmed.clear()
            if client is not None:
                self._call("disconnect", client.disconnect)
        if was:
            self._say_connected(up=False)

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def armed(self, subject: str) -> bool:
        """Whether a message for ``subject`` would ring now: the source may poll it only on
        the safety interval."""
        with self._lock:
            return self._connected and subject in self._confirmed

    def stats(self) -> dict[str, Any]:
        """For metrics and status: counts, never subjects or secrets."""
        with self._lock:
            return {
                "connected": self._connected,
                "subjects": len(self._subjects),
                "armed": len(self._confirmed) if self._connected else 0,
                "denied": len(self._refused),
                "errors": self._errors,
                "last_error": self._last_error,
            }

    # -- the client's side ---------------------------------------------------------------

    def _on_message(self, message: Any) -> None:
        getter = getattr(message, "get_subject", None)
        subject = getter() if callable(getter) else getattr(message, "subject", None)
        if not isinstance(subject, str):
            return
        with self._lock:
            if self._closed or subject not in self._subjects:
                return  # a late push for a subject given up: nothing to wake
            if self._connected and subject not in self._refused:
                self._confirmed.add(subject)
        self._notify(self._wake, subject)

    def _on_status(self, status: Any, info: Any) -> None:
        name = self._name(status)
        if name in ("NOTIFY_SERVER_UP", "NOTIFY_SERVER_DOWN"):
            self._server(name == "NOTIFY_SERVER_UP")
        elif name in _WAKES or name == "NOTIFY_SUBSCRIBE_DENY":
            self._subject_status(name, info)
        else:
            log.debug("doorbell: status %s ignored", name or repr(status))

    def _name(self, status: Any) -> str | None:
        try:
            name = self._names.get(status)
        except TypeError:
            name = None
        if name is None and isinstance(status, str) and status.startswith("NOTIFY_"):
            name = status
        return name

    def _server(self, up: bool) -> None:
        with self._lock:
            if self._closed or self._connected == up:
                return
            self._connected = up
            self._confirmed.clear()  # a new connection: its subscriptions are not known yet
        log.info("doorbell: MigratoryData client %s", "connected" if up else "disconnected")
        self._say_connected(up=up)

    def _say_connected(self, *, up: bool) -> None:
        self._notify(self._connected_cb, up)

    def _subject_status(self, name: str, info: Any) -> None:
        deny = name == "NOTIFY_SUBSCRIBE_DENY"
        allow = name == "NOTIFY_SUBSCRIBE_ALLOW"
        named: list[str] = []
        with self._lock:
            if self._closed:
                return
            for subject in _subjects_of(info):
                if subject not in self._subjects:
                    continue  # not (any more) this peer's
                if deny:
                    self._refused.add(subject)
                    self._confirmed.discard(subject)
                elif allow or subject not in self._refused:
                    self._refused.discard(subject)
                    if self._connected:
                        self._confirmed.add(subject)
                else:
                    continue  # data synced for a subject it was denied: nothing to fetch
                named.append(subject)
        if not named:
            log.debug("doorbell: %s for no subject of this peer (info %r)", name, info)
        for subject in named:
            if deny:
                self._notify(
                    self._denied, subject, f"MigratoryData denied the subscription ({name})"
                )
            else:
                self._notify(self._wake, subject)

    # -- calling out ---------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call into the client; an exception is logged and counted, and gives ``_FAILED``."""
        try:
            return fn(*args)
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if self._token is not None:
                text = text.replace(self._token.reveal(), "***")
            with self._lock:
                self._errors += 1
                self._last_error = f"{what}: {text}"
            log.warning("doorbell: the MigratoryData client failed to %s: %s", what, text)
            return _FAILED

    @staticmethod
    def _notify(callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception(
                "doorbell: the peer's %s callback raised", getattr(callback, "__name__", "?")
            )


#: what :meth:`Doorbell._call` returns for a call that raised (None may be a real answer)
_FAILED: Final = object()


__all__ = [
    "DOORBELL",
    "POLLING",
    "UNAVAILABLE",
    "Doorbell",
    "DoorbellPlan",
    "DoorbellUnavailableError",
    "client_servers",
    "load_client",
    "plan_for",
]
