"""The reference server's documented REST interface: produce and consume over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from peer.dev.sim.server import SimServer
from peer.testing import http_json, wait_until

pytestmark = pytest.mark.sim

SimFactory = Callable[..., SimServer]

MESSAGE_KEYS = {"message_type", "content", "closure", "retained", "compressed", "epoch", "seq"}


def produce(
    server: SimServer, subject: str, body: bytes | str, **params: object
) -> tuple[int, Any]:
    data = body.encode() if isinstance(body, str) else body
    return http_json("POST", server.url + "/rest/produce", {"subject": subject, **params}, data)


def consume(server: SimServer, subject: str, **params: object) -> tuple[int, Any]:
    return http_json("GET", server.url + "/rest/consume", {"subject": subject, **params})


def messages(server: SimServer, subject: str, **params: object) -> list[dict[str, Any]]:
    status, body = consume(server, subject, **params)
    assert status == 200, body
    assert body["subject"] == subject
    assert isinstance(body["messages"], list)
    return list(body["messages"])


def seqs(msgs: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in msgs]


# -- produce ---------------------------------------------------------------------------------


def test_produce_answers_the_documented_shape_with_a_default_closure(
    sim_factory: SimFactory,
) -> None:
    server = sim_factory()
    before = time.time() * 1000
    status, body = produce(server, "/server/status1", "hello", token="any")
    after = time.time() * 1000
    assert status == 200
    assert set(body) == {"subject", "closure", "status"}
    assert body["subject"] == "/server/status1"
    assert body["status"] == "OK"
    # default closure: the time the server received the request, ms since the epoch
    assert isinstance(body["closure"], str)
    assert before - 1 <= int(body["closure"]) <= after + 1


def test_produce_echoes_an_explicit_closure_and_it_is_kept(sim_factory: SimFactory) -> None:
    server = sim_factory()
    status, body = produce(server, "/a/1", "x", token="t", closure="order-42")
    assert (status, body["closure"], body["status"]) == (200, "order-42", "OK")
    [msg] = messages(server, "/a/1")
    assert msg["closure"] == "order-42"


def test_consume_bare_returns_the_snapshot_with_its_real_position(
    sim_factory: SimFactory,
) -> None:
    server = sim_factory()
    assert messages(server, "/a/1", token="t") == []  # nothing published yet
    for text in ("one", "two", "three"):
        assert produce(server, "/a/1", text, token="t")[1]["status"] == "OK"
    [msg] = messages(server, "/a/1", token="t")
    assert set(msg) == MESSAGE_KEYS
    assert msg["message_type"] == "SNAPSHOT"
    assert msg["content"] == "three"
    assert (msg["epoch"], msg["seq"]) == (1, 3)
    assert msg["retained"] is True
    assert msg["compressed"] is False


def test_snapshot_is_the_latest_retained_message(sim_factory: SimFactory) -> None:
    server = sim_factory()
    produce(server, "/a/1", "kept", retained="true")
    produce(server, "/a/1", "passing", retained="false")
    [snap] = messages(server, "/a/1")
    assert (snap["content"], snap["seq"], snap["retained"]) == ("kept", 1, True)
    history = messages(server, "/a/1", history=10)
    assert [(m["content"], m["retained"]) for m in history] == [
        ("kept", True),
        ("passing", False),
    ]


def test_both_qos_levels_are_cached(sim_factory: SimFactory) -> None:
    server = sim_factory()
    produce(server, "/a/1", "s", qos="standard")
    produce(server, "/a/1", "g", qos="guaranteed")
    produce(server, "/a/1", "d")
    assert [m["content"] for m in messages(server, "/a/1", history=5)] == ["s", "g", "d"]


def test_content_round_trips_unicode_and_json_specials(sim_factory: SimFactory) -> None:
    server = sim_factory()
    text = 'quote " backslash \\ newline \n tab \t é 中文 \U0001f600 </script>'
    produce(server, "/a/1", text, closure='c"1\\')
    [msg] = messages(server, "/a/1")
    assert msg["content"] == text
    assert msg["closure"] == 'c"1\\'


def test_oversize_content_is_refused_and_not_stored(sim_factory: SimFactory) -> None:
    server = sim_factory(max_message_size=10)
    assert produce(server, "/a/1", b"0123456789")[1]["status"] == "OK"
    status, body = produce(server, "/a/1", b"0123456789X", closure="c")
    assert status == 200
    assert body == {"subject": "/a/1", "closure": "c", "status": "MESSAGE_SIZE_LIMIT_EXCEEDED"}
    # a large body (beyond aiohttp's own limits) is refused the same way
    assert produce(server, "/a/1", b"y" * 3_000_000)[1]["status"] == "MESSAGE_SIZE_LIMIT_EXCEEDED"
    assert seqs(messages(server, "/a/1", history=10)) == [1]


def test_non_utf8_content_fails_and_is_not_stored(sim_factory: SimFactory) -> None:
    server = sim_factory()
    status, body = produce(server, "/a/1", b"\xff\xfe bad")
    assert (status, body["status"]) == (200, "FAILED")
    assert messages(server, "/a/1", history=10) == []


def test_produce_denied_with_a_wrong_or_missing_pub_token(sim_factory: SimFactory) -> None:
    server = sim_factory(token_pub="pub-secret")
    for params in ({}, {"token": "wrong"}):
        status, body = produce(server, "/a/1", "x", **params)
        assert (status, body["status"], body["subject"]) == (200, "DENY", "/a/1")
        assert "closure" in body
    assert produce(server, "/a/1", "x", token="pub-secret")[1]["status"] == "OK"
    # the pub token does not entitle consume restrictions: consume is open here
    assert seqs(messages(server, "/a/1", history=5)) == [1]


# -- consume ---------------------------------------------------------------------------------


def test_history_returns_up_to_the_last_n_cached_messages(sim_factory: SimFactory) -> None:
    server = sim_factory()
    for i in range(1, 8):
        server.publish("/h/1", f"m{i}")
    last3 = messages(server, "/h/1", history=3)
    assert seqs(last3) == [5, 6, 7]
    assert {m["message_type"] for m in last3} == {"HISTORICAL"}
    assert [m["content"] for m in last3] == ["m5", "m6", "m7"]
    assert seqs(messages(server, "/h/1", history=100)) == list(range(1, 8))
    assert messages(server, "/h/1", history=0) == []
    assert messages(server, "/never/published", history=5) == []


@pytest.mark.parametrize(("inclusive", "first"), [(True, 4), (False, 5)])
def test_epoch_seq_is_inclusive_or_exclusive_by_switch(
    sim_factory: SimFactory, inclusive: bool, first: int
) -> None:
    server = sim_factory(seq_inclusive=inclusive)
    for i in range(1, 7):
        assert server.publish("/r/1", f"m{i}") == (1, i)
    got = messages(server, "/r/1", epoch=1, seq=4)
    assert seqs(got) == list(range(first, 7))
    assert {m["message_type"] for m in got} == {"RECOVERED"}
    assert [m["content"] for m in got] == [f"m{i}" for i in range(first, 7)]
    # from the head: inclusive returns the head itself, exclusive nothing
    assert seqs(messages(server, "/r/1", epoch=1, seq=6)) == ([6] if inclusive else [])
    assert messages(server, "/r/1", epoch=1, seq=7) == []  # beyond the head
    assert messages(server, "/r/1", epoch=1, seq=1000) == []


def test_position_older_than_the_cache_returns_what_is_left(sim_factory: SimFactory) -> None:
    server = sim_factory(cache_size=5)
    for i in range(1, 13):
        server.publish("/r/1", f"m{i}")
    assert server.state("/r/1")["subjects"]["/r/1"] == {
        "epoch": 1,
        "head_seq": 12,
        "cache_size": 5,
        "oldest_seq": 8,
        "snapshot": {"epoch": 1, "seq": 12},
    }
    assert seqs(messages(server, "/r/1", epoch=1, seq=2)) == [8, 9, 10, 11, 12]
    assert seqs(messages(server, "/r/1", epoch=1, seq=0)) == [8, 9, 10, 11, 12]
    assert seqs(messages(server, "/r/1", history=100)) == [8, 9, 10, 11, 12]


def test_unknown_epoch_returns_the_current_epochs_whole_cache(sim_factory: SimFactory) -> None:
    server = sim_factory()
    for i in range(1, 4):
        server.publish("/r/1", f"m{i}")
    for epoch in (0, 7, 123456):
        got = messages(server, "/r/1", epoch=epoch, seq=2)
        assert [(m["epoch"], m["seq"]) for m in got] == [(1, 1), (1, 2), (1, 3)]


def test_cache_is_bounded_by_age(sim_factory: SimFactory) -> None:
    server = sim_factory(cache_expire_s=0.3)
    for i in range(1, 4):
        server.publish("/x/1", f"m{i}")
    assert seqs(messages(server, "/x/1", history=10)) == [1, 2, 3]
    wait_until(lambda: not messages(server, "/x/1", history=10), 10.0, "the cache expired")
    state = server.state("/x/1")["subjects"]["/x/1"]
    assert (state["cache_size"], state["oldest_seq"], state["head_seq"]) == (0, None, 3)
    assert messages(server, "/x/1", epoch=1, seq=1) == []
    # the snapshot outlives the cache, and the sequence goes on where it was
    [snap] = messages(server, "/x/1")
    assert (snap["seq"], snap["content"]) == (3, "m3")
    server.publish("/x/1", "m4")
    assert seqs(messages(server, "/x/1", epoch=1, seq=1)) == [4]


def test_epoch_bump_resets_seq_and_old_positions_get_the_new_cache(
    sim_factory: SimFactory,
) -> None:
    server = sim_factory()
    for i in range(1, 4):
        server.publish("/e/1", f"old{i}")
    server.publish("/e/2", "other")
    status, body = http_json("POST", server.url + "/admin/epoch", {"subject": "/e/1"})
    assert (status, body) == (200, {"epochs": {"/e/1": 2}})
    assert server.publish("/e/1", "new1") == (2, 1)
    assert server.publish("/e/2", "other2") == (1, 2)  # untouched
    got = messages(server, "/e/1", epoch=1, seq=3)  # a position of the old epoch
    assert [(m["epoch"], m["seq"], m["content"]) for m in got] == [(2, 1, "new1")]
    # bump everything, as after a cluster restart
    status, body = http_json("POST", server.url + "/admin/epoch")
    assert (status, body) == (200, {"epochs": {"/e/1": 3, "/e/2": 2}})
    assert messages(server, "/e/1", history=10) == []
    # the snapshot survives the bump, under the epoch it was published in
    [snap] = messages(server, "/e/1")
    assert (snap["epoch"], snap["seq"], snap["content"]) == (2, 1, "new1")


def test_max_per_response_returns_the_first_n_from_the_position(sim_factory: SimFactory) -> None:
    server = sim_factory(max_per_response=3)
    for i in range(1, 11):
        server.publish("/m/1", f"m{i}")
    assert seqs(messages(server, "/m/1", epoch=1, seq=2)) == [2, 3, 4]
    assert seqs(messages(server, "/m/1", epoch=9, seq=2)) == [1, 2, 3]
    assert seqs(messages(server, "/m/1", history=5)) == [6, 7, 8]


def test_consume_returns_a_whole_cache_of_1000_in_one_response(sim_factory: SimFactory) -> None:
    server = sim_factory()
    for i in range(1, 1101):
        server.publish("/big/1", "x" * 100 + str(i))
    got = messages(server, "/big/1", epoch=1, seq=0)
    assert seqs(got) == list(range(101, 1101))
    assert got[-1]["content"] == "x" * 100 + "1100"


def test_consume_denied_with_403_naming_the_subject(sim_factory: SimFactory) -> None:
    server = sim_factory(token_sub="sub-secret")
    server.publish("/a/1", "x")
    for params in ({}, {"token": "wrong"}, {"token": ""}):
        status, body = consume(server, "/a/1", **params)
        assert status == 403
        assert body["subject"] == "/a/1"
        assert "/a/1" in body["error"]
        assert "sub-secret" not in body["error"]
    assert seqs(messages(server, "/a/1", token="sub-secret")) == [1]


# -- validation ------------------------------------------------------------------------------

BAD_SUBJECTS = [
    ("", "empty"),
    ("server/status", "start with '/'"),
    ("/", "at least one segment"),
    ("/a//b", "empty segment"),
    ("/a/b/", "trailing '/'"),
    ("/a/*", "wildcards"),
    ("/a b", "whitespace"),
    ("/a\tb", "whitespace"),
    ("/a\x01b", "control"),
]


@pytest.mark.parametrize(("subject", "problem"), BAD_SUBJECTS)
@pytest.mark.parametrize("endpoint", ["produce", "consume"])
def test_bad_subject_is_400_naming_the_problem(
    sim_factory: SimFactory, subject: str, problem: str, endpoint: str
) -> None:
    server = sim_factory()
    if endpoint == "produce":
        status, body = produce(server, subject, "x")
    else:
        status, body = consume(server, subject)
    assert status == 400
    assert body["subject"] == subject
    assert problem in body["error"]
    assert repr(subject) in body["error"]
    assert server.state()["subjects"] == {}


@pytest.mark.parametrize("endpoint", ["produce", "consume"])
def test_missing_subject_is_400(sim_factory: SimFactory, endpoint: str) -> None:
    server = sim_factory()
    method = "POST" if endpoint == "produce" else "GET"
    status, body = http_json(method, f"{server.url}/rest/{endpoint}", {"token": "t"}, b"x")
    assert status == 400
    assert "subject" in body["error"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"history": "abc"}, "history"),
        ({"history": "-1"}, "history"),
        ({"history": "1.5"}, "history"),
        ({"epoch": "1"}, "seq"),
        ({"seq": "1"}, "epoch"),
        ({"epoch": "x", "seq": "1"}, "epoch"),
        ({"epoch": "1", "seq": "-3"}, "seq"),
    ],
)
def test_bad_consume_parameters_are_400_naming_them(
    sim_factory: SimFactory, params: dict[str, str], named: str
) -> None:
    server = sim_factory()
    status, body = consume(server, "/a/1", **params)
    assert status == 400
    assert named in body["error"]
    assert body["subject"] == "/a/1"


@pytest.mark.parametrize(
    ("params", "named"), [({"retained": "yes"}, "retained"), ({"qos": "x"}, "qos")]
)
def test_bad_produce_parameters_are_400_naming_them(
    sim_factory: SimFactory, params: dict[str, str], named: str
) -> None:
    server = sim_factory()
    status, body = produce(server, "/a/1", "x", **params)
    assert status == 400
    assert named in body["error"]
    assert server.state()["subjects"] == {}
