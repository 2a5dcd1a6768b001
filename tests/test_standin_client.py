"""The stand-in for MigratoryData's Python client (tests/standin/mdclient_standin.py) against
real ``mdpeer sim serve`` processes: its documented surface, subscribe allow/deny, a pushed
message after a publish, server down and up again with its subjects subscribed again."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator

import pytest

from peer.testing import SimProcess, free_port, http_json, wait_until
from tests.standin import mdclient_standin as md
from tests.standin.recorder import Recorder

pytestmark = pytest.mark.sim

ProcessFactory = Callable[..., SimProcess]


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., md.MigratoryDataClient]]:
    """Clients on the given servers with a :class:`Recorder` listener, disconnected at the end."""
    monkeypatch.setattr(md, "RECONNECT_MAX_S", 0.5)
    made: list[md.MigratoryDataClient] = []

    def make(servers: list[str], token: str | None = None) -> md.MigratoryDataClient:
        client = md.MigratoryDataClient()
        client.set_servers(servers)
        client.set_encryption(False)
        if token is not None:
            client.set_entitlement_token(token)
        client.set_listener(Recorder())
        made.append(client)
        return client

    yield make
    for client in made:
        client.disconnect()


def recorder(client: md.MigratoryDataClient) -> Recorder:
    listener = client._listener
    assert isinstance(listener, Recorder)
    return listener


def produce(proc: SimProcess, subject: str, token: str | None = None) -> None:
    params = {"subject": subject} | ({} if token is None else {"token": token})
    status, body = http_json("POST", proc.url + "/rest/produce", params, b"content")
    assert (status, body["status"]) == (200, "OK")


def test_it_has_the_documented_surface_and_messages_carry_no_position() -> None:
    client_api = {
        "set_servers",
        "set_encryption",
        "set_entitlement_token",
        "set_listener",
        "subscribe",
        "subscribeWithHistory",
        "unsubscribe",
        "publish",
        "connect",
        "disconnect",
    }
    public = {n for n, _ in inspect.getmembers(md.MigratoryDataClient) if not n.startswith("_")}
    assert public == client_api
    message = md.MigratoryDataMessage("/a/1", "hello", closure="c", qos=md.QoS.STANDARD)
    assert (message.get_subject(), message.get_content(), message.get_closure()) == (
        "/a/1",
        b"hello",
        "c",
    )
    assert message.get_qos() is md.QoS.STANDARD
    assert message.is_retained() is True
    assert message.get_reply_subject() == ""
    assert message.is_compressed() is False
    assert message.get_message_type() is md.MessageType.UPDATE
    fields = {n.lower() for n in dir(message)}
    assert not {f for f in fields if "epoch" in f or "seq" in f}
    for name in ("SERVER_UP", "SERVER_DOWN", "SUBSCRIBE_ALLOW", "SUBSCRIBE_DENY", "DATA_SYNC"):
        assert getattr(md, f"NOTIFY_{name}") == f"NOTIFY_{name}"


def test_subscribe_allow_deny_and_a_pushed_message_after_a_publish(
    sim_process_factory: ProcessFactory, clients: Callable[..., md.MigratoryDataClient]
) -> None:
    proc = sim_process_factory("--token-sub", "sub-token")
    client = clients([proc.hostport], token="sub-token")
    seen = recorder(client)
    client.subscribe(["/a/1"])  # before connect: sent once connected
    client.connect()
    seen.wait(md.NOTIFY_SERVER_UP, proc.hostport)
    seen.wait(md.NOTIFY_SUBSCRIBE_ALLOW, "/a/1")
    client.subscribeWithHistory(["/a/2"], 10)
    seen.wait(md.NOTIFY_SUBSCRIBE_ALLOW, "/a/2")
    produce(proc, "/a/2")
    seen.wait_message("/a/2")
    pushed = seen.messages[0]
    assert pushed.get_content() == b""  # a doorbell: the subject, not the data
    assert pushed.get_message_type() is md.MessageType.UPDATE

    wrong = clients([proc.hostport], token="wrong-token")
    wrong.subscribe(["/a/1"])
    wrong.connect()
    recorder(wrong).wait(md.NOTIFY_SUBSCRIBE_DENY, "/a/1")
    assert recorder(wrong).count(md.NOTIFY_SUBSCRIBE_ALLOW) == 0

    client.publish(md.MigratoryDataMessage("/a/1", "from the client", closure="c-1"))
    seen.wait(md.NOTIFY_PUBLISH_OK, "c-1")
    seen.wait_message("/a/1")
    assert seen.count(md.NOTIFY_SERVER_DOWN) == 0


def test_server_killed_then_restarted_down_up_and_subscribed_again(
    sim_process_factory: ProcessFactory, clients: Callable[..., md.MigratoryDataClient]
) -> None:
    proc = sim_process_factory()
    client = clients([proc.hostport])
    seen = recorder(client)
    client.connect()
    client.subscribe(["/a/1", "/a/2"])
    seen.wait(md.NOTIFY_SUBSCRIBE_ALLOW, "/a/2")
    proc.kill()
    seen.wait(md.NOTIFY_SERVER_DOWN, proc.hostport)
    again = sim_process_factory(port=proc.port)
    seen.wait(md.NOTIFY_SERVER_UP, times=2)
    # several attempts failed meanwhile; the outage was said once
    assert seen.count(md.NOTIFY_SERVER_DOWN) == 1
    seen.wait(md.NOTIFY_SUBSCRIBE_ALLOW, "/a/1", times=2)
    seen.wait(md.NOTIFY_SUBSCRIBE_ALLOW, "/a/2", times=2)
    assert again.state()["notify"]["subscriptions"] == 2
    produce(again, "/a/1")
    seen.wait_message("/a/1")

    client.unsubscribe(["/a/2"])
    wait_until(lambda: again.state()["notify"]["subscriptions"] == 1, 10, "the unsubscribe to land")
    produce(again, "/a/2")
    produce(again, "/a/1")
    seen.wait_message("/a/1", times=2)
    assert "/a/2" not in seen.subjects()


def test_it_fails_over_to_a_server_that_answers(
    sim_process_factory: ProcessFactory, clients: Callable[..., md.MigratoryDataClient]
) -> None:
    proc = sim_process_factory()
    client = clients([f"127.0.0.1:{free_port()}", f"50 {proc.hostport}"])
    seen = recorder(client)
    client.subscribe(["/a/1"])
    client.connect()
    seen.wait(md.NOTIFY_SERVER_UP, proc.hostport)
    seen.wait(md.NOTIFY_SUBSCRIBE_ALLOW, "/a/1")
    client.disconnect()
    assert not [t for t in threading.enumerate() if t.name.startswith("standin-")]
    wait_until(lambda: proc.state()["notify"]["sessions"] == 0, 15, "the session to end")
