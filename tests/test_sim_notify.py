"""The reference server's notification channel (our own design, docs/REFERENCE-SERVER.md):
sessions, subscribe allow/deny, news, unsubscribe, doorbell faults, the end of a session."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from peer.dev.sim.server import SimServer
from peer.testing import SimProcess, http_get, http_json, wait_until

pytestmark = pytest.mark.sim

SimFactory = Callable[..., SimServer]
PATH = "/x-mdpeer/notify"


class Stream:
    """One session, its events read on a thread into a queue: ``(name, data)``; a heartbeat
    is ``(":", text)`` and the end of the stream ``("end", None)``."""

    def __init__(self, url: str, heartbeat_ms: int | None = None) -> None:
        self.url = url
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        query = "" if heartbeat_ms is None else f"?heartbeat_ms={heartbeat_ms}"
        self.conn.request("GET", PATH + query)
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        assert self.resp.getheader("Content-Type", "").startswith("text/event-stream")
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        name, first = self.next_event()
        assert name == "session", (name, first)
        self.session: str = first["session"]
        self.heartbeat_ms: int = first["heartbeat_ms"]

    def _read(self) -> None:
        name = ""
        try:
            while raw := self.resp.readline():
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    self.events.put((":", line))
                elif line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    self.events.put((name, json.loads(line.removeprefix("data: "))))
        except OSError:
            pass  # closed by the test
        self.events.put(("end", None))

    def next_event(self, *, skip_heartbeats: bool = True) -> tuple[str, Any]:
        while True:
            name, data = self.events.get(timeout=10)
            if name != ":" or not skip_heartbeats:
                return name, data

    def news(self) -> str:
        """The subject of the next news event."""
        name, data = self.next_event()
        assert name == "news", (name, data)
        return str(data["subject"])

    def request(self, what: str, body: object, **params: object) -> tuple[int, Any]:
        raw = json.dumps(body).encode()
        return http_json("POST", f"{self.url}{PATH}/{self.session}/{what}", params, raw)

    def subscribe(self, *subjects: str, **params: object) -> dict[str, dict[str, Any]]:
        status, answer = self.request("subscribe", list(subjects), **params)
        assert status == 200, answer
        assert answer["session"] == self.session
        return {r["subject"]: r for r in answer["results"]}

    def close(self) -> None:
        """Cut the connection (as a client that goes away), then release it."""
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.reader.join(10)
        self.resp.close()
        self.conn.close()


@pytest.fixture
def streams() -> Iterator[Callable[..., Stream]]:
    opened: list[Stream] = []

    def open_stream(url: str, heartbeat_ms: int | None = None) -> Stream:
        stream = Stream(url, heartbeat_ms)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


Streams = Callable[..., Stream]


def notify_state(server: SimServer) -> dict[str, Any]:
    state: dict[str, Any] = server.state()["notify"]
    return state


def test_a_session_gets_news_of_what_it_subscribed(
    sim_factory: SimFactory, streams: Streams
) -> None:
    server = sim_factory()
    stream = streams(server.url)
    assert stream.heartbeat_ms == 10_000  # the default
    answer = stream.subscribe("/a/1", "/a/2")
    assert answer == {
        "/a/1": {"subject": "/a/1", "allowed": True},
        "/a/2": {"subject": "/a/2", "allowed": True},
    }
    server.publish("/a/2", "x")
    assert stream.news() == "/a/2"
    server.publish("/b/1", "not subscribed")
    server.publish("/a/1", "y")
    assert stream.news() == "/a/1"  # nothing of /b/1 came before it
    state = notify_state(server)
    assert (state["enabled"], state["sessions"], state["subscriptions"]) == (True, 1, 2)
    # a second session is told only of its own subjects
    other = streams(server.url)
    assert other.session != stream.session
    other.subscribe("/b/1")
    server.publish("/b/1", "z")
    assert other.news() == "/b/1"
    server.publish("/a/1", "w")
    assert stream.news() == "/a/1"


def test_subscribe_is_allowed_or_denied_per_subject_as_consume_is(
    sim_factory: SimFactory, streams: Streams
) -> None:
    server = sim_factory(token_sub="sub-token")
    server.deny_subjects("/x/denied")
    stream = streams(server.url)
    answer = stream.subscribe("/a/1", "/x/denied", "no-slash", token="sub-token")
    assert answer["/a/1"]["allowed"] is True
    assert answer["/x/denied"]["allowed"] is False
    assert "not entitled to this subject" in answer["/x/denied"]["reason"]
    assert answer["no-slash"]["allowed"] is False
    assert "invalid subject" in answer["no-slash"]["reason"]
    wrong = stream.subscribe("/a/2", token="wrong")
    assert wrong["/a/2"]["allowed"] is False
    assert "not entitled" in wrong["/a/2"]["reason"]
    missing = stream.subscribe("/a/3")
    assert "the token is missing" in missing["/a/3"]["reason"]
    # the same check as consume: 403 there, for the same subjects
    consume = server.url + "/rest/consume"
    assert http_json("GET", consume, {"subject": "/x/denied", "token": "sub-token"})[0] == 403
    assert http_json("GET", consume, {"subject": "/a/2", "token": "wrong"})[0] == 403
    for subject in ("/x/denied", "/a/2", "/a/3", "/a/1"):
        server.publish(subject, "m")
    assert stream.news() == "/a/1"  # no news of the denied ones came before it
    assert notify_state(server)["subscribe_denied"] == 4
    assert "sub-token" not in json.dumps(server.state())


def test_unsubscribe_stops_the_news(sim_factory: SimFactory, streams: Streams) -> None:
    server = sim_factory()
    stream = streams(server.url)
    stream.subscribe("/a/1", "/a/2")
    status, answer = stream.request("unsubscribe", ["/a/1", "/never/subscribed"])
    assert (status, answer) == (200, {"session": stream.session, "unsubscribed": 1})
    server.publish("/a/1", "gone")
    server.publish("/a/2", "still here")
    assert stream.news() == "/a/2"
    assert notify_state(server)["subscriptions"] == 1


def test_rings_not_yet_sent_are_coalesced_and_every_one_is_accounted_for(
    sim_factory: SimFactory, streams: Streams
) -> None:
    server = sim_factory()
    stream = streams(server.url)
    stream.subscribe("/a/1")
    for i in range(200):
        server.publish("/a/1", str(i))
    assert stream.news() == "/a/1"

    def settled() -> bool:
        s = notify_state(server)
        return bool(s["news_rung"] == 200 and s["news_sent"] + s.get("news_coalesced", 0) == 200)

    wait_until(settled, 10, "every ring sent or coalesced")
    assert 1 <= notify_state(server)["news_sent"] <= 200


def test_dropped_doorbells_never_come_and_the_drops_follow_the_seed(
    sim_factory: SimFactory, streams: Streams
) -> None:
    subjects = [f"/d/{i}" for i in range(60)]

    def received(seed: int) -> list[str]:
        server = sim_factory(notify_drop_rate=0.5, seed=seed)
        stream = streams(server.url)
        stream.subscribe(*subjects, "/end")
        for subject in subjects:
            server.publish(subject, "m")
        server.set_faults(notify_drop_rate=0.0)
        server.publish("/end", "sentinel")  # the stream is in order: all others came first
        got = []
        while (subject := stream.news()) != "/end":
            got.append(subject)
        assert notify_state(server)["news_dropped"] == len(subjects) - len(got)
        return got

    first = received(7)
    assert 0 < len(first) < len(subjects)
    assert received(7) == first


def test_a_dropped_doorbell_does_not_lose_the_message(
    sim_factory: SimFactory, streams: Streams
) -> None:
    server = sim_factory(notify_drop_rate=1.0)
    stream = streams(server.url)
    stream.subscribe("/a/1", "/a/2")
    server.publish("/a/1", "kept")
    server.set_faults(notify_drop_rate=0.0)
    server.publish("/a/2", "rung")
    assert stream.news() == "/a/2"
    _, body = http_json("GET", server.url + "/rest/consume", {"subject": "/a/1"})
    assert [m["content"] for m in body["messages"]] == ["kept"]


def test_delayed_doorbells_still_come(sim_factory: SimFactory, streams: Streams) -> None:
    server = sim_factory(notify_delay_ms=200, seed=3)
    stream = streams(server.url)
    stream.subscribe("/a/1", "/a/2")
    server.publish("/a/1", "m")
    server.publish("/a/2", "m")
    assert {stream.news(), stream.news()} == {"/a/1", "/a/2"}
    assert notify_state(server)["news_delayed"] == 2


def test_a_session_ends_with_its_client_and_with_the_server(
    sim_factory: SimFactory, streams: Streams
) -> None:
    server = sim_factory()
    gone = streams(server.url, heartbeat_ms=100)
    assert gone.next_event(skip_heartbeats=False)[0] == ":"  # heartbeats flow
    gone.subscribe("/a/1")
    kept = streams(server.url)
    kept.subscribe("/a/1")
    gone.close()

    def only_one() -> bool:
        state = notify_state(server)
        return bool(state["sessions"] == 1 and state["subscriptions"] == 1)

    wait_until(only_one, 10, "the server to end the closed session")
    server.stop()  # a clean end of stream, not a cut
    assert kept.next_event() == ("end", None)
    assert notify_state(server)["sessions"] == 0


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        (PATH + "/nope/subscribe", ["/a/1"], 404),
        (PATH + "/nope/unsubscribe", ["/a/1"], 404),
        (PATH + "/{session}/subscribe", {"subjects": ["/a/1"]}, 400),
        (PATH + "/{session}/subscribe", ["/a/1", 7], 400),
        (PATH + "/{session}/unsubscribe", "/a/1", 400),
    ],
)
def test_bad_requests_are_refused(
    sim_factory: SimFactory, streams: Streams, path: str, body: object, status: int
) -> None:
    server = sim_factory()
    stream = streams(server.url)
    url = server.url + path.format(session=stream.session)
    got, answer = http_json("POST", url, body=json.dumps(body).encode())
    assert got == status, answer
    assert answer["error"]


def test_a_bad_heartbeat_is_refused(sim_factory: SimFactory) -> None:
    server = sim_factory()
    status, answer = http_json("GET", server.url + PATH, {"heartbeat_ms": 5})
    assert status == 400
    assert "heartbeat_ms" in answer["error"]


def test_the_channel_can_be_turned_off(sim_process_factory: Callable[..., SimProcess]) -> None:
    proc = sim_process_factory("--no-notify")
    assert http_get(proc.url + PATH)[0] == 404
    state = proc.state()
    assert state["notify"] == {"enabled": False}
    assert state["config"]["notify"] is False
    # and on by default, with the doorbell faults from the command line
    on = sim_process_factory("--notify-drop-rate", "0.25", "--notify-delay-ms", "40")
    assert on.state()["faults"]["notify_drop_rate"] == 0.25
    assert on.state()["faults"]["notify_delay_ms"] == 40
    assert on.state()["notify"]["enabled"] is True
