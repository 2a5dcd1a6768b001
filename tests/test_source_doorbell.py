"""The doorbell adapter (peer/source/doorbell.py): finding the client module and saying why
not, the mode a peer will use, and the client's callbacks turned into wake / denied /
connected, with the stand-in client against the reference server."""

from __future__ import annotations

import contextlib
import logging
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.config.settings import SourceSettings
from peer.dev.sim.server import SimServer
from peer.secret import Secret
from peer.source.doorbell import (
    DOORBELL,
    POLLING,
    UNAVAILABLE,
    Doorbell,
    DoorbellUnavailableError,
    client_servers,
    load_client,
    plan_for,
)
from peer.testing import wait_until

STANDIN_DIR = Path(__file__).parent / "standin"
TOKEN = "sub-token-8f3a"

#: a client of our own making that records the calls made to it and fails on request, to
#: drive the adapter's paths the stand-in never takes (int constants, lists as info, raising)
SCRIPTED = """
NOTIFY_SERVER_UP = 1
NOTIFY_SERVER_DOWN = 2
FAIL = set()
LAST = []

class MigratoryDataClient:
    NOTIFY_SUBSCRIBE_ALLOW = 10
    NOTIFY_SUBSCRIBE_DENY = 11
    NOTIFY_DATA_RESYNC = 12

    def __init__(self):
        self.calls = []
        self.listener = None
        LAST.append(self)

    def _do(self, name, *args):
        self.calls.append((name, args))
        if name in FAIL:
            raise OSError(f"{name} failed, token {TOKEN}")

    def set_servers(self, servers): self._do("set_servers", servers)
    def set_encryption(self, on): self._do("set_encryption", on)
    def set_entitlement_token(self, token): self._do("set_entitlement_token", "***")
    def set_listener(self, listener):
        self.listener = listener
        self._do("set_listener")
    def subscribe(self, subjects): self._do("subscribe", list(subjects))
    def unsubscribe(self, subjects): self._do("unsubscribe", list(subjects))
    def connect(self): self._do("connect")
    def disconnect(self): self._do("disconnect")
"""


class Events:
    """The three callbacks of the adapter, recorded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.log: list[tuple[str, Any]] = []

    def wake(self, subject: str) -> None:
        with self._lock:
            self.log.append(("wake", subject))

    def denied(self, subject: str, info: str) -> None:
        with self._lock:
            self.log.append(("denied", (subject, info)))

    def connected(self, up: bool) -> None:
        with self._lock:
            self.log.append(("connected", up))

    def count(self, kind: str, value: Any) -> int:
        with self._lock:
            return sum(1 for k, v in self.log if k == kind and v == value)

    def wait(self, kind: str, value: Any, times: int = 1) -> None:
        wait_until(
            lambda: self.count(kind, value) >= times,
            20,
            f"{kind} {value} x{times} (seen {self.log[-10:]})",
        )

    def denials(self) -> list[str]:
        with self._lock:
            return [v[0] for k, v in self.log if k == "denied"]


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], str]]:
    """Write a module into a directory on sys.path: ``modules(name, source) -> name``; the
    stand-in's directory is on sys.path too."""
    monkeypatch.syspath_prepend(str(STANDIN_DIR))
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


Modules = Callable[[str, str], str]


def bell(source: SourceSettings, events: Events) -> Doorbell:
    made = Doorbell.from_settings(
        source, wake=events.wake, denied=events.denied, connected=events.connected
    )
    assert made is not None
    return made


@pytest.fixture
def doorbells() -> Iterator[Callable[[SourceSettings, Events], Doorbell]]:
    with contextlib.ExitStack() as made:
        yield lambda source, events: made.enter_context(contextlib.closing(bell(source, events)))


# -- finding the client ------------------------------------------------------------------


def test_load_client_says_why_a_module_cannot_be_used(modules: Modules) -> None:
    cases = {
        "no_such_client_xyz": "'no_such_client_xyz' is not importable",
        modules("client_raises", "raise RuntimeError('boom')"): "RuntimeError: boom",
        modules("client_needs_dep", "import dep_missing_xyz"): "No module named 'dep_missing_xyz'",
        modules("client_no_class", "X = 1"): "has no class MigratoryDataClient",
        modules(
            "client_partial", "class MigratoryDataClient:\n    def subscribe(self, s): pass\n"
        ): "lacks set_servers, set_encryption",
    }
    for name, why in cases.items():
        module, reason = load_client(name)
        assert module is None, name
        assert why in reason, (name, reason)
    module, where = load_client("mdclient_standin")
    assert module is not None
    assert where.endswith("mdclient_standin.py")


def test_the_mode_a_peer_will_use_and_why(modules: Modules) -> None:
    raising = modules("client_raises_again", "raise RuntimeError('must not be imported')")
    off = plan_for(SourceSettings(doorbell="off", doorbell_module=raising))
    assert (off.mode, off.setting) == (POLLING, "off")
    assert "must not be imported" not in off.reason
    auto = plan_for(SourceSettings(doorbell_module="no_such_client_xyz"))
    assert auto.mode == POLLING
    assert "not importable" in auto.reason
    assert "every subject is polled" in auto.reason
    on = plan_for(SourceSettings(doorbell="on", doorbell_module="no_such_client_xyz"))
    assert on.mode == UNAVAILABLE
    with pytest.raises(DoorbellUnavailableError) as caught:
        on.require()
    assert caught.value.field == "source.doorbell"
    assert caught.value.hint is not None
    assert 'doorbell = "auto"' in caught.value.hint
    found = plan_for(SourceSettings(doorbell_module="mdclient_standin"))
    assert found.mode == DOORBELL
    assert "every 30000 ms" in found.reason
    assert found.as_dict()["module"] == "mdclient_standin"
    # without a client a peer has no doorbell, and "on" refuses to start
    events = Events()
    settings = SourceSettings(doorbell_module="no_such_client_xyz")
    assert Doorbell.from_settings(settings, **_callbacks(events)) is None
    settings = SourceSettings(doorbell="on", doorbell_module="no_such_client_xyz")
    with pytest.raises(DoorbellUnavailableError):
        Doorbell.from_settings(settings, **_callbacks(events))


def _callbacks(events: Events) -> dict[str, Any]:
    return {"wake": events.wake, "denied": events.denied, "connected": events.connected}


def test_server_entries_are_given_as_the_vendors_clients_take_them() -> None:
    entries = ["100 a.example.com:1", "50 https://b.example.com:8443", "https://[::1]"]
    assert client_servers(entries) == ["a.example.com:1", "50 b.example.com:8443", "[::1]:443"]


# -- with the stand-in and the reference server -------------------------------------------


def test_callbacks_from_the_standin_against_the_reference_server(
    modules: Modules,
    sim_factory: Callable[..., SimServer],
    doorbells: Callable[[SourceSettings, Events], Doorbell],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = sim_factory(token_sub=TOKEN)
    server.deny_subjects("/x/denied")
    source = SourceSettings(
        servers=(server.url,), token=Secret(TOKEN), doorbell_module="mdclient_standin"
    )
    events = Events()
    door = doorbells(source, events)
    monkeypatch.setattr(sys.modules["mdclient_standin"], "RECONNECT_MAX_S", 0.3)
    door.subscribe(["/a/1", "/x/denied"])
    door.start()
    events.wait("connected", value=True)
    events.wait("wake", "/a/1")  # its subscription was allowed: fetch once
    # a subscription may be answered twice (the stand-in subscribes again on a new stream)
    wait_until(lambda: set(events.denials()) == {"/x/denied"}, 20, "the denial")
    assert door.armed("/a/1")
    assert not door.armed("/x/denied")
    server.publish("/a/1", "m")
    events.wait("wake", "/a/1", times=2)

    door.unsubscribe(["/a/1"])
    assert not door.armed("/a/1")
    door.subscribe(["/a/2"])
    events.wait("wake", "/a/2")
    server.publish("/a/1", "after the unsubscribe")
    server.publish("/a/2", "m")
    events.wait("wake", "/a/2", times=2)
    assert events.count("wake", "/a/1") == 2

    server.stop()
    events.wait("connected", value=False)
    assert not door.armed("/a/2")
    server.start()
    events.wait("connected", value=True, times=2)
    events.wait("wake", "/a/2", times=3)  # allowed again on the new connection
    assert door.armed("/a/2")
    assert door.stats() == {
        "connected": True,
        "subjects": 2,
        "armed": 1,
        "denied": 1,
        "errors": 0,
        "last_error": None,
    }
    door.close()
    events.wait("connected", value=False, times=2)
    assert not door.armed("/a/2")
    assert TOKEN not in caplog.text


def test_callbacks_that_raise_do_not_reach_the_client(
    modules: Modules,
    sim_factory: Callable[..., SimServer],
    doorbells: Callable[[SourceSettings, Events], Doorbell],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = sim_factory()
    events = Events()
    raised = threading.Event()

    def wake(subject: str) -> None:
        events.wake(subject)
        raised.set()
        raise RuntimeError("the peer's wake failed")

    door = Doorbell.from_settings(
        SourceSettings(servers=(server.url,), doorbell_module="mdclient_standin"),
        wake=wake,
        denied=events.denied,
        connected=events.connected,
    )
    assert door is not None
    try:
        door.subscribe(["/a/1"])
        door.start()
        events.wait("wake", "/a/1")
        server.publish("/a/1", "m")
        events.wait("wake", "/a/1", times=2)  # the client went on after the first raised
        assert door.connected
        assert door.stats()["errors"] == 0
        assert "callback raised" in caplog.text
    finally:
        door.close()


# -- the paths the stand-in does not take --------------------------------------------------


def scripted(modules: Modules) -> Any:
    name = modules("scripted_client", SCRIPTED.replace("{TOKEN}", TOKEN))
    return sys.modules.get(name) or __import__(name)


def test_statuses_as_constants_and_info_as_a_list(
    modules: Modules, doorbells: Callable[[SourceSettings, Events], Doorbell]
) -> None:
    module = scripted(modules)
    events = Events()
    source = SourceSettings(
        servers=("50 md1:8800", "md2:8800"),
        encryption=True,
        token=Secret(TOKEN),
        doorbell_module="scripted_client",
    )
    door = doorbells(source, events)
    door.subscribe(["/a/1", "/a/2", "/a/3"])
    door.start()
    client = module.LAST[-1]
    assert [c[0] for c in client.calls] == [
        "set_servers",
        "set_encryption",
        "set_listener",
        "set_entitlement_token",
        "subscribe",
        "connect",
    ]
    assert client.calls[0][1] == (["50 md1:8800", "md2:8800"],)
    assert client.calls[1][1] == (True,)
    listener, cls = client.listener, module.MigratoryDataClient
    listener.on_status(cls.NOTIFY_SUBSCRIBE_ALLOW, ["/a/1", "/a/2", "/not/mine"])
    assert events.count("wake", "/a/1") == 1
    assert events.count("wake", "/not/mine") == 0
    assert not door.armed("/a/1")  # allowed, but not connected yet
    listener.on_status(module.NOTIFY_SERVER_UP, "md1:8800")
    listener.on_status(module.NOTIFY_SERVER_UP, "md1:8800")  # said twice, told once
    assert events.count("connected", value=True) == 1
    assert not door.armed("/a/1")  # a new connection: evidence since then is needed
    listener.on_status(cls.NOTIFY_DATA_RESYNC, "/a/1")
    assert door.armed("/a/1")
    listener.on_status(cls.NOTIFY_SUBSCRIBE_DENY, ("/a/3",))
    assert events.denials() == ["/a/3"]
    listener.on_status(cls.NOTIFY_DATA_RESYNC, "/a/3")  # denied: nothing to fetch
    assert events.count("wake", "/a/3") == 0

    class Message:
        def get_subject(self) -> str:
            return "/a/2"

    listener.on_message(Message())
    assert events.count("wake", "/a/2") == 2
    assert door.armed("/a/2")
    listener.on_status("NOTIFY_SOMETHING_NEW", "/a/1")  # unknown: ignored
    listener.on_status(object(), None)
    listener.on_message(object())  # no subject: ignored
    listener.on_status(module.NOTIFY_SERVER_DOWN, "md1:8800")
    assert events.count("connected", value=False) == 1
    assert not door.armed("/a/2")
    door.unsubscribe(["/a/2", "/never"])
    assert client.calls[-1] == ("unsubscribe", (["/a/2"],))
    listener.on_message(Message())  # a late push for a subject given up
    assert events.count("wake", "/a/2") == 2


def test_a_failing_client_is_logged_and_counted_never_raised(
    modules: Modules,
    doorbells: Callable[[SourceSettings, Events], Doorbell],
    caplog: pytest.LogCaptureFixture,
) -> None:
    module = scripted(modules)
    module.FAIL.update({"connect", "subscribe"})
    events = Events()
    source = SourceSettings(
        servers=("md1:8800",), token=Secret(TOKEN), doorbell_module="scripted_client"
    )
    door = doorbells(source, events)
    door.start()  # connect raises: the peer polls as without a doorbell
    assert [c[0] for c in module.LAST[-1].calls][-2:] == ["connect", "disconnect"]
    stats = door.stats()
    assert stats["errors"] == 1
    assert stats["connected"] is False
    assert stats["last_error"] == "connect: OSError: connect failed, token ***"
    module.FAIL.clear()
    door.start()
    module.FAIL.add("subscribe")
    door.subscribe(["/a/1"])
    assert door.stats()["errors"] == 2
    assert "the MigratoryData client failed to subscribe" in caplog.text
    assert TOKEN not in caplog.text
    door.close()
    door.close()
    assert module.LAST[-1].calls[-1] == ("disconnect", ())
