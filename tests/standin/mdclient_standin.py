"""A stand-in for MigratoryData's Python client, for mdpeer's tests only.

It has the client's *documented* public API and nothing else of it: the class
``MigratoryDataClient`` with ``set_servers``, ``set_encryption``, ``set_entitlement_token``,
``set_listener`` (a listener with ``on_message(message)`` and ``on_status(status, info)``),
``subscribe``, ``subscribeWithHistory``, ``unsubscribe``, ``publish``, ``connect`` and
``disconnect``; a message type with the documented fields (no epoch, no seq); the status
names as module constants. It was written from that list alone.

It talks to mdpeer's reference server over **mdpeer's own notification channel**
(``/x-mdpeer/notify``, server-sent events; docs/REFERENCE-SERVER.md), which is not
MigratoryData's protocol. That channel is a doorbell: a pushed message names its subject,
its content is empty and the fields the channel does not carry keep their defaults.

Behaviour (our decisions where MigratoryData's docs say nothing):

* ``connect`` starts two daemon threads: one reads the event stream, one sends subscribe,
  unsubscribe and publish requests; every method returns at once, answers come as statuses.
* A lost or refused stream gives ``NOTIFY_SERVER_DOWN`` (once per outage); the client
  reconnects with a jittered backoff (``RECONNECT_INITIAL_S`` doubling to
  ``RECONNECT_MAX_S``), to another server of the list when there is one, and says
  ``NOTIFY_SERVER_UP`` when a stream is open again; then it subscribes every subject again,
  and each gets its ``NOTIFY_SUBSCRIBE_ALLOW`` or ``NOTIFY_SUBSCRIBE_DENY`` again.
* A status's ``info`` is the subject (subscribe), the server ``host:port`` (server up/down)
  or the message's closure (publish).
* ``subscribeWithHistory`` is ``subscribe``: the channel has no history to give.

Importable as ``mdclient_standin`` when ``tests/standin`` is on ``sys.path``/``PYTHONPATH``
(what a peer's ``doorbell_module = "mdclient_standin"`` loads), and as
``tests.standin.mdclient_standin``. It imports nothing of mdpeer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import http.client
import json
import logging
import queue
import random
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any, Final

NOTIFY_SERVER_UP: Final = "NOTIFY_SERVER_UP"
NOTIFY_SERVER_DOWN: Final = "NOTIFY_SERVER_DOWN"
NOTIFY_DATA_SYNC: Final = "NOTIFY_DATA_SYNC"
NOTIFY_DATA_RESYNC: Final = "NOTIFY_DATA_RESYNC"
NOTIFY_SUBSCRIBE_ALLOW: Final = "NOTIFY_SUBSCRIBE_ALLOW"
NOTIFY_SUBSCRIBE_DENY: Final = "NOTIFY_SUBSCRIBE_DENY"
NOTIFY_PUBLISH_OK: Final = "NOTIFY_PUBLISH_OK"
NOTIFY_PUBLISH_FAILED: Final = "NOTIFY_PUBLISH_FAILED"
NOTIFY_PUBLISH_DENIED: Final = "NOTIFY_PUBLISH_DENIED"
NOTIFY_MESSAGE_SIZE_LIMIT_EXCEEDED: Final = "NOTIFY_MESSAGE_SIZE_LIMIT_EXCEEDED"

#: the stand-in's own pacing (not part of the documented API)
RECONNECT_INITIAL_S = 0.1
RECONNECT_MAX_S = 2.0
#: the server sends a heartbeat this often; three missed ones end the stream
HEARTBEAT_MS = 2000
CONNECT_TIMEOUT_S = 5.0
#: subjects per subscribe request
CHUNK = 5000

_PATH: Final = "/x-mdpeer/notify"
_PUBLISH_STATUS: Final = {
    "OK": NOTIFY_PUBLISH_OK,
    "DENY": NOTIFY_PUBLISH_DENIED,
    "MESSAGE_SIZE_LIMIT_EXCEEDED": NOTIFY_MESSAGE_SIZE_LIMIT_EXCEEDED,
}
_log = logging.getLogger("mdclient_standin")


class MessageType(enum.Enum):
    SNAPSHOT = "SNAPSHOT"
    UPDATE = "UPDATE"
    RECOVERED = "RECOVERED"
    HISTORICAL = "HISTORICAL"


class QoS(enum.Enum):
    STANDARD = "STANDARD"
    GUARANTEED = "GUARANTEED"


def _getter(name: str) -> Any:
    def get(self: MigratoryDataMessage) -> Any:
        return getattr(self, name)

    get.__name__ = f"get_{name}"
    return get


@dataclasses.dataclass
class MigratoryDataMessage:
    """A message: subject, content, closure, retained, qos, message type, reply subject,
    compression. No epoch and no sequence number: the documented message has none."""

    subject: str
    content: bytes | str = b""
    closure: str = ""
    qos: QoS = QoS.GUARANTEED
    retained: bool = True
    reply_subject: str = ""
    compression: bool = False
    message_type: MessageType = MessageType.UPDATE

    def __post_init__(self) -> None:
        if isinstance(self.content, str):
            self.content = self.content.encode()

    get_subject = _getter("subject")
    get_content = _getter("content")
    get_closure = _getter("closure")
    get_qos = _getter("qos")
    is_retained = _getter("retained")
    get_reply_subject = _getter("reply_subject")
    is_compressed = _getter("compression")
    get_message_type = _getter("message_type")


class _Server:
    __slots__ = ("host", "port", "weight")

    def __init__(self, entry: str) -> None:
        text = entry.strip()
        weight, _, rest = text.partition(" ")
        if rest and weight.isdigit():
            self.weight, text = int(weight), rest.strip()
        else:
            self.weight = 100
        for scheme in ("http://", "https://"):
            text = text.removeprefix(scheme)
        host, sep, port = text.rstrip("/").rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"server {entry!r}: expected [weight ]host:port")
        self.host, self.port = host.strip("[]"), int(port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class MigratoryDataClient:
    """Connects to one of the servers, subscribes subjects, calls the listener back."""

    def __init__(self) -> None:
        self._servers: list[_Server] = []
        self._encryption = False
        self._token: str | None = None
        self._listener: Any = None
        self._lock = threading.Lock()
        #: the subjects subscribed, in order (a dict: an ordered set)
        self._wanted: dict[str, None] = {}
        self._ops: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: the open stream: its server and session id, and its connection (to cut it)
        self._session: tuple[_Server, str] | None = None
        self._stream: http.client.HTTPConnection | None = None
        self._up = False
        self._down_said = False

    # -- the documented API --------------------------------------------------------------

    def set_servers(self, servers: list[str]) -> None:
        self._servers = [_Server(s) for s in servers]

    def set_encryption(self, encryption: bool) -> None:
        self._encryption = bool(encryption)

    def set_entitlement_token(self, token: str) -> None:
        self._token = token

    def set_listener(self, listener: Any) -> None:
        self._listener = listener

    def subscribe(self, subjects: list[str]) -> None:
        with self._lock:
            new = [s for s in subjects if s not in self._wanted]
            self._wanted.update(dict.fromkeys(new))
        if new:
            self._ops.put(("subscribe", new))

    def subscribeWithHistory(self, subjects: list[str], number_of_history_messages: int) -> None:
        del number_of_history_messages  # the channel has no history
        self.subscribe(subjects)

    def unsubscribe(self, subjects: list[str]) -> None:
        with self._lock:
            gone = [s for s in subjects if s in self._wanted]
            for subject in gone:
                del self._wanted[subject]
        if gone:
            self._ops.put(("unsubscribe", gone))

    def publish(self, message: MigratoryDataMessage) -> None:
        self._ops.put(("publish", message))

    def connect(self) -> None:
        if not self._servers:
            raise ValueError("set_servers first: no server to connect to")
        if self._threads:
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._read_loop, name="standin-stream", daemon=True),
            threading.Thread(target=self._send_loop, name="standin-requests", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def disconnect(self) -> None:
        self._stop.set()
        self._cut()
        self._ops.put(("stop", None))
        threads, self._threads = self._threads, []
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(10)
        self._up = self._down_said = False

    # -- the stream ------------------------------------------------------------------------

    def _read_loop(self) -> None:
        attempt, avoid = 0, None
        while not self._stop.is_set():
            server = self._pick(avoid)
            try:
                reason = self._one_stream(server)
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                with self._lock:
                    self._session = None
                    self._stream = None
            if self._stop.is_set():
                return
            if self._up:
                attempt = 0  # it was open: a new outage starts
            avoid = server
            self._went_down(server, reason)
            delay = min(RECONNECT_MAX_S, RECONNECT_INITIAL_S * 2**attempt)
            attempt += 1
            self._stop.wait(delay * random.uniform(0.8, 1.2))

    def _one_stream(self, server: _Server) -> str:
        """Open a stream and read it to its end; why it ended (or never opened)."""
        conn = self._connection(server)
        with self._lock:
            if self._stop.is_set():
                return "disconnected"
            self._stream = conn
        try:
            conn.request(
                "GET",
                f"{_PATH}?heartbeat_ms={HEARTBEAT_MS}",
                headers={"Accept": "text/event-stream"},
            )
            resp = conn.getresponse()
            if resp.status != 200:
                return f"{server} answered {resp.status} to the notification stream"
            if conn.sock is not None:
                conn.sock.settimeout(HEARTBEAT_MS * 3 / 1000)
            events = _events(resp)
            name, data = next(events, ("", ""))
            if name != "session":
                return f"{server} did not open a session"
            session = json.loads(data)["session"]
            # up first: no subscription status of this session may come before it
            self._went_up(server)
            with self._lock:
                self._session = (server, session)
            self._ops.put(("resubscribe", session))
            for name, data in events:
                if name == "news":
                    self._news(json.loads(data)["subject"])
            return "the server ended the stream"
        finally:
            conn.close()

    def _news(self, subject: str) -> None:
        with self._lock:
            wanted = subject in self._wanted
        if wanted:
            self._call("on_message", MigratoryDataMessage(subject))

    def _went_up(self, server: _Server) -> None:
        self._up, self._down_said = True, False
        self._call("on_status", NOTIFY_SERVER_UP, str(server))

    def _went_down(self, server: _Server, reason: str) -> None:
        if self._up or not self._down_said:
            self._up, self._down_said = False, True
            _log.info("stand-in client: %s down: %s", server, reason)
            self._call("on_status", NOTIFY_SERVER_DOWN, str(server))

    def _cut(self) -> None:
        with self._lock:
            stream = self._stream
        sock = None if stream is None else stream.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

    def _pick(self, avoid: _Server | None) -> _Server:
        choices = [s for s in self._servers if s is not avoid] or self._servers
        weights = [s.weight for s in choices]
        if not any(weights):
            return random.choice(choices)
        return random.choices(choices, weights=weights)[0]

    def _connection(self, server: _Server) -> http.client.HTTPConnection:
        if self._encryption:
            return http.client.HTTPSConnection(
                server.host,
                server.port,
                timeout=CONNECT_TIMEOUT_S,
                context=ssl.create_default_context(),
            )
        return http.client.HTTPConnection(server.host, server.port, timeout=CONNECT_TIMEOUT_S)

    # -- requests --------------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            op, arg = self._ops.get()
            if op == "stop":
                return
            try:
                if op == "publish":
                    self._publish(arg)
                elif op == "unsubscribe":
                    self._request("unsubscribe", arg, None)
                elif op == "subscribe":
                    self._subscribe(arg, None)
                else:
                    self._subscribe(None, arg)
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                # the stream notices a lost server; a new stream subscribes everything again
                _log.info("stand-in client: %s failed: %s: %s", op, type(exc).__name__, exc)

    def _subscribe(self, subjects: list[str] | None, session: str | None) -> None:
        """``subjects`` (None: every one, for the new stream ``session``)."""
        with self._lock:
            current = self._session
            if current is None or (session is not None and current[1] != session):
                return  # no stream, or a newer one that subscribes for itself
            todo = [
                s for s in (self._wanted if subjects is None else subjects) if s in self._wanted
            ]
        for at in range(0, len(todo), CHUNK):
            answer = self._request("subscribe", todo[at : at + CHUNK], current)
            if answer is None:
                return
            for result in answer["results"]:
                subject = result["subject"]
                with self._lock:
                    wanted = subject in self._wanted
                if wanted:
                    status = NOTIFY_SUBSCRIBE_ALLOW if result["allowed"] else NOTIFY_SUBSCRIBE_DENY
                    self._call("on_status", status, subject)

    def _request(
        self, what: str, subjects: list[str], session: tuple[_Server, str] | None
    ) -> dict[str, Any] | None:
        """POST to the session's subscribe/unsubscribe; None when there is no session."""
        if session is None:
            with self._lock:
                session = self._session
            if session is None:
                return None
        server, session_id = session
        query = "" if self._token is None else "?" + urllib.parse.urlencode({"token": self._token})
        status, body = self._post(
            server, f"{_PATH}/{session_id}/{what}{query}", json.dumps(subjects).encode()
        )
        if status == 404:
            return None  # that stream has ended: the next one subscribes everything
        if status != 200:
            raise ValueError(f"{what} answered {status}: {body[:200]!r}")
        answer: dict[str, Any] = json.loads(body)
        return answer

    def _publish(self, message: MigratoryDataMessage) -> None:
        params = {
            "subject": message.subject,
            "retained": "true" if message.retained else "false",
            "qos": message.qos.value.lower(),
        }
        if message.closure:
            params["closure"] = message.closure
        if self._token is not None:
            params["token"] = self._token
        content = message.content
        data = content if isinstance(content, bytes) else content.encode()
        try:
            path = "/rest/produce?" + urllib.parse.urlencode(params)
            status, body = self._post(self._pick(None), path, data)
            answer = json.loads(body).get("status") if status == 200 else None
        except (OSError, http.client.HTTPException, ValueError):
            answer = None
        self._call(
            "on_status", _PUBLISH_STATUS.get(str(answer), NOTIFY_PUBLISH_FAILED), message.closure
        )

    def _post(self, server: _Server, path: str, body: bytes) -> tuple[int, bytes]:
        conn = self._connection(server)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _call(self, method: str, *args: Any) -> None:
        listener = self._listener
        if listener is None:
            return
        try:
            getattr(listener, method)(*args)
        except Exception:
            _log.exception("stand-in client: the listener's %s raised", method)


def _events(resp: http.client.HTTPResponse) -> Iterator[tuple[str, str]]:
    """(event name, data) of a server-sent event stream, until it ends."""
    name, data = "message", list[str]()
    while raw := resp.readline():
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
