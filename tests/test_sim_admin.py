"""The reference server's fault injection, admin endpoints, generator and Python API."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
from collections.abc import Callable

import pytest

from peer.dev.sim.generator import GeneratorSpec
from peer.dev.sim.model import SubjectError
from peer.dev.sim.server import SimConfig, SimServer
from peer.testing import http_json, wait_until

pytestmark = pytest.mark.sim

SimFactory = Callable[..., SimServer]

NO_FAULTS = {
    "latency_ms": 0,
    "fail_rate": 0.0,
    "drop_rate": 0.0,
    "notify_drop_rate": 0.0,
    "notify_delay_ms": 0,
}


def consume_status(server: SimServer, subject: str = "/a/1") -> int:
    return http_json("GET", server.url + "/rest/consume", {"subject": subject})[0]


def refused(server: SimServer, path: str, body: dict[str, object]) -> str:
    """The error of a POST of ``body`` that the admin endpoint ``path`` refuses (400)."""
    status, answer = http_json("POST", server.url + path, body=body)
    assert status == 400, answer
    return str(answer["error"])


# -- faults ----------------------------------------------------------------------------------


def test_fail_rate_one_answers_503_and_admin_stays_reachable(sim_factory: SimFactory) -> None:
    server = sim_factory(fail_rate=1.0)
    status, body = http_json("GET", server.url + "/rest/consume", {"subject": "/a/1"})
    assert status == 503
    assert "injected" in body["error"]
    status, _ = http_json("POST", server.url + "/rest/produce", {"subject": "/a/1"}, b"x")
    assert status == 503
    assert server.state()["subjects"] == {}  # the failed produce did not publish
    # turn it off through the admin endpoint, which faults never touch
    status, faults = http_json("POST", server.url + "/admin/faults", body={"fail_rate": 0})
    assert (status, faults) == (200, {**NO_FAULTS, "fail_rate": 0})
    assert consume_status(server) == 200
    assert server.state()["requests"]["failed_injected"] == 2


def test_fail_rate_is_a_fraction_reproducible_with_a_seed(sim_factory: SimFactory) -> None:
    def failures(seed: int) -> list[int]:
        server = sim_factory(fail_rate=0.5, seed=seed)
        return [consume_status(server) for _ in range(40)]

    first, again = failures(7), failures(7)
    assert first == again
    assert 0 < first.count(503) < 40
    assert set(first) == {200, 503}


def test_latency_delays_each_rest_request(sim_factory: SimFactory) -> None:
    server = sim_factory()
    server.set_faults(latency_ms=600)
    start = time.monotonic()
    assert consume_status(server) == 200
    assert time.monotonic() - start >= 0.6
    # admin is not delayed, and latency can be removed again
    start = time.monotonic()
    assert http_json("GET", server.url + "/admin/state")[0] == 200
    assert server.set_faults(latency_ms=0)["latency_ms"] == 0
    assert consume_status(server) == 200
    assert time.monotonic() - start < 0.6


def test_drop_rate_one_closes_connections_without_an_answer(sim_factory: SimFactory) -> None:
    server = sim_factory(drop_rate=1.0)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        consume_status(server)
    assert server.state()["requests"]["dropped"] == 1
    server.set_faults(drop_rate=0.0)
    assert consume_status(server) == 200


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"fail_rate": 2}, "fail_rate"),
        ({"drop_rate": -0.1}, "drop_rate"),
        ({"latency_ms": "slow"}, "latency_ms"),
        ({"notify_drop_rate": 1.5}, "notify_drop_rate"),
        ({"notify_delay_ms": -1}, "notify_delay_ms"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_admin_faults_refuses_bad_values_naming_them(
    sim_factory: SimFactory, body: dict[str, object], named: str
) -> None:
    server = sim_factory()
    assert named in refused(server, "/admin/faults", body)
    assert http_json("GET", server.url + "/admin/faults")[1] == NO_FAULTS


def test_admin_token_protects_the_admin_endpoints(sim_factory: SimFactory) -> None:
    server = sim_factory(admin_token="adm")
    for method, path in (("GET", "/admin/state"), ("POST", "/admin/epoch")):
        status, body = http_json(method, server.url + path)
        assert status == 403
        assert "adm" not in body["error"].replace("admin", "")
    assert http_json("GET", server.url + "/admin/state", {"token": "adm"})[0] == 200


def test_admin_state_describes_subjects_and_hides_tokens(sim_factory: SimFactory) -> None:
    server = sim_factory(token_sub="very-secret-sub", cache_size=2)
    for i in range(3):
        server.publish("/s/1", f"m{i}")
    status, state = http_json("GET", server.url + "/admin/state")
    assert status == 200
    assert state["subjects"] == {
        "/s/1": {
            "epoch": 1,
            "head_seq": 3,
            "cache_size": 2,
            "oldest_seq": 2,
            "snapshot": {"epoch": 1, "seq": 3},
        }
    }
    assert state["published"] == 3
    assert state["config"]["token_sub"] is True
    assert "very-secret-sub" not in repr(state)
    assert "very-secret-sub" not in repr(server.config)
    one = http_json("GET", server.url + "/admin/state", {"subject": "/nope"})[1]
    assert one["subjects"] == {}


def test_admin_epoch_refuses_a_bad_subject(sim_factory: SimFactory) -> None:
    server = sim_factory()
    status, body = http_json("POST", server.url + "/admin/epoch", {"subject": "no-slash"})
    assert status == 400
    assert "start with '/'" in body["error"]


# -- generator -------------------------------------------------------------------------------


def test_generator_feeds_subjects_until_stopped(sim_factory: SimFactory) -> None:
    server = sim_factory()
    status, body = http_json(
        "POST",
        server.url + "/admin/generate",
        body={"prefix": "/bench/s", "count": 5, "rate": 2000, "size": 50},
    )
    assert status == 200
    assert body["subject_names"] == [f"/bench/s/{i}" for i in range(1, 6)]
    assert body["generator"]["running"] is True
    wait_until(lambda: server.state()["published"] >= 200, 10.0, "200 messages generated")
    subjects = server.state()["subjects"]
    assert sorted(subjects) == [f"/bench/s/{i}" for i in range(1, 6)]
    status, msgs = http_json(
        "GET", server.url + "/rest/consume", {"subject": "/bench/s/1", "history": 3}
    )
    assert status == 200
    assert all(len(m["content"]) == 50 for m in msgs["messages"])
    status, body = http_json("DELETE", server.url + "/admin/generate")
    assert status == 200
    final = body["generator"]
    assert final["running"] is False
    assert final["published"] >= 200
    # stopped means stopped: the count does not move any more
    assert server.state()["published"] == final["published"]


def test_generator_stops_after_total(sim_factory: SimFactory) -> None:
    server = sim_factory()
    server.start_generator(GeneratorSpec(subjects=("/g/a", "/g/b"), rate=0, size=10, total=1001))

    def done() -> bool:
        status = server.generator_status()
        return status is not None and not status["running"]

    wait_until(done, 10.0, "the generator done")
    state = server.state()
    assert state["published"] == 1001
    assert state["subjects"]["/g/a"]["head_seq"] == 501
    assert state["subjects"]["/g/b"]["head_seq"] == 500


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"prefix": "/p", "count": 0}, "count"),
        ({"subjects": ["bad"]}, "start with '/'"),
        ({"subjects": ["/a"], "prefix": "/p", "count": 1}, "either"),
        ({"subjects": ["/a"], "rate": -1}, "rate"),
        ({"subjects": ["/a"], "size": "big"}, "size"),
        ({"subjects": ["/a"], "speed": 1}, "speed"),
    ],
)
def test_generator_refuses_a_bad_spec(
    sim_factory: SimFactory, body: dict[str, object], named: str
) -> None:
    server = sim_factory()
    assert named in refused(server, "/admin/generate", body)
    assert server.generator_status() is None


# -- Python API ------------------------------------------------------------------------------


def test_in_process_publish_is_thread_safe(sim_factory: SimFactory) -> None:
    server = sim_factory(cache_size=10_000)
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(500):
            pos = server.publish("/t/1", f"{n}-{i}")
            with lock:
                results.append(pos)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [(1, s) for s in range(1, 2001)]


def test_in_process_publish_refuses_what_produce_refuses(sim_factory: SimFactory) -> None:
    server = sim_factory(max_message_size=4)
    with pytest.raises(SubjectError, match="'a/b'"):
        server.publish("a/b", "x")
    with pytest.raises(ValueError, match="max_message_size=4"):
        server.publish("/a/b", "12345")
    with pytest.raises(ValueError, match="not UTF-8"):
        server.publish("/a/b", b"\xff")
    assert server.state()["subjects"] == {}


def test_restart_keeps_subjects_and_port() -> None:
    server = SimServer(SimConfig(port=0))
    with server:
        url = server.url
        server.publish("/a/1", "before")
    with pytest.raises(urllib.error.URLError):
        http_json("GET", url + "/rest/consume", {"subject": "/a/1"}, timeout=2)
    with server:
        assert server.url == url
        status, body = http_json("GET", url + "/rest/consume", {"subject": "/a/1"})
        assert status == 200
        assert body["messages"][0]["content"] == "before"


def test_config_refuses_bad_values_naming_the_field() -> None:
    with pytest.raises(ValueError, match="cache_expire_s"):
        SimConfig(cache_expire_s=0)
    with pytest.raises(ValueError, match="fail_rate"):
        SimConfig(fail_rate=1.5)
    with pytest.raises(ValueError, match="port"):
        SimConfig(port=70000)
    with pytest.raises(ValueError, match="token_sub") as info:
        SimConfig(token_sub="  ")
    assert "'  '" not in str(info.value)
