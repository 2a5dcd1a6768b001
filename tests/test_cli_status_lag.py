"""`mdpeer status`: each subject's head at the source and its lag, and status of a KIP-848 group.

Heads come from the real reference server (peer.dev.sim); checkpoints from real `mdpeer run` peers
on the real broker.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from peer.cli import app
from peer.config.servers import parse_servers
from peer.dev.sim.server import SimServer
from peer.model import Position, StartPolicy
from peer.routes.model import Route
from peer.source.heads import Head, HeadUnknown, LagState, ask_heads, lag_of
from peer.source.rest_config import RestSourceConfig
from peer.testing import free_port, wait_until
from tests.fixtures.deploy import Deploy, routed
from tests.fixtures.kafka import TopicFactory
from tests.peers import read_committed
from tests.test_source_malformed import SUBJECT, ScriptedServer, up_to
from tests.test_source_tls import tls_server  # noqa: F401 - a fixture

HISTORY = StartPolicy.parse("history:1000")
TOKEN = "s3cret-token-value"
runner = CliRunner()


def _config(servers: str, **settings: Any) -> RestSourceConfig:
    return RestSourceConfig.from_settings({"servers": servers, **settings})


# --- peer.source.heads against the reference server --------------------------------------------


@pytest.mark.sim
def test_heads_come_from_history_then_snapshot_and_none_for_an_empty_subject(
    sim_factory: Callable[..., SimServer],
) -> None:
    cached = sim_factory()
    for i in range(3):
        cached.publish("/h/a", f"m{i}")
    cached.publish("/h/a", "not retained", retained=False)
    heads = ask_heads(_config(f"127.0.0.1:{cached.port}"), ["/h/a", "/h/never"])
    # history=1 sees the newest message, retained or not
    assert heads["/h/a"] == Head("/h/a", Position(1, 4), "history")
    assert heads["/h/never"] == Head("/h/never", None, "snapshot")

    uncached = sim_factory(cache_size=0)
    uncached.publish("/h/b", "retained")
    uncached.publish("/h/b", "not retained", retained=False)
    heads = ask_heads(_config(f"127.0.0.1:{uncached.port}"), ["/h/b"])
    # nothing cached: the snapshot (newest retained message) is all the source tells
    assert heads["/h/b"] == Head("/h/b", Position(1, 1), "snapshot")


@pytest.mark.sim
def test_heads_fail_over_and_name_why_they_are_unknown_without_the_token(
    sim_factory: Callable[..., SimServer],
) -> None:
    sim = sim_factory(token_sub=TOKEN)
    sim.publish("/t/a", "x")
    dead = f"127.0.0.1:{free_port()}"
    live = f"127.0.0.1:{sim.port}"

    heads = ask_heads(_config(f"{dead},{live}", token=TOKEN), ["/t/a", "/t/b"])
    assert heads["/t/a"] == Head("/t/a", Position(1, 1), "history")
    assert heads["/t/b"] == Head("/t/b", None, "snapshot")

    denied = ask_heads(_config(live, token="wrong-" + TOKEN), ["/t/a"])["/t/a"]
    assert isinstance(denied, HeadUnknown)
    assert "HTTP 403" in denied.reason
    assert TOKEN not in denied.reason

    down = ask_heads(_config(dead, token=TOKEN), ["/t/a"])["/t/a"]
    assert isinstance(down, HeadUnknown)
    assert down.reason.startswith(f"no server answered: {dead}: ")
    assert TOKEN not in down.reason


@pytest.mark.sim
def test_a_slow_source_is_cut_at_the_budget(sim_factory: Callable[..., SimServer]) -> None:
    sim = sim_factory(latency_ms=3000)
    subjects = [f"/slow/{i}" for i in range(20)]
    started = time.monotonic()
    heads = ask_heads(_config(f"127.0.0.1:{sim.port}"), subjects, budget=0.5, concurrency=4)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert set(heads) == set(subjects)
    for head in heads.values():
        assert isinstance(head, HeadUnknown)
        assert "0.5 s budget" in head.reason


def test_heads_over_https_and_from_a_malformed_answer(
    tls_server: tuple[ScriptedServer, Path],  # noqa: F811 - the fixture
) -> None:
    server, cert = tls_server
    servers = parse_servers(server.url)
    trusted = RestSourceConfig(servers=servers, encryption=True, tls_ca_file=cert)
    assert ask_heads(trusted, [SUBJECT]) == {SUBJECT: Head(SUBJECT, Position(1, 3), "history")}
    assert server.requests[-1]["history"] == "1"
    unverified = ask_heads(RestSourceConfig(servers=servers, encryption=True), [SUBJECT])
    head = unverified[SUBJECT]
    assert isinstance(head, HeadUnknown)
    assert "certificate" in head.reason.lower()

    garbled = ScriptedServer([(200, b"{not json")], up_to(3))
    garbled.start()
    try:
        plain = RestSourceConfig(servers=parse_servers(garbled.url))
        head = ask_heads(plain, [SUBJECT])[SUBJECT]
    finally:
        garbled.stop()
    assert isinstance(head, HeadUnknown)
    assert head.reason.startswith("malformed answer: not JSON")


def test_lag_is_a_number_only_where_the_source_can_tell() -> None:
    at = Position(3, 10)
    head = Head("/s", Position(3, 25), "history")
    assert lag_of(at, head).state is LagState.MEASURED
    assert lag_of(at, head).messages == 15
    older = Head("/s", Position(3, 4), "snapshot")  # a snapshot behind the checkpoint
    assert (lag_of(at, older).state, lag_of(at, older).messages) == (LagState.MEASURED, 0)
    bumped = lag_of(at, Head("/s", Position(4, 2), "history"))
    assert (bumped.state, bumped.messages) == (LagState.EPOCH_CHANGED, None)
    none = lag_of(None, Head("/s", None, "snapshot"))
    assert (none.state, none.messages) == (LagState.NO_MESSAGES, 0)
    fresh = lag_of(None, head)
    assert (fresh.state, fresh.messages) == (LagState.NO_CHECKPOINT, None)
    unknown = lag_of(at, HeadUnknown("/s", "no server answered"))
    assert (unknown.state, unknown.messages, unknown.reason) == (
        LagState.UNKNOWN,
        None,
        "no server answered",
    )
    assert lag_of(at, None).state is LagState.NOT_ASKED
    assert lag_of(at, None).messages is None


# --- mdpeer status against real peers -----------------------------------------------------------


def status(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    kafka_log = logging.getLogger("peer.kafka")
    level = kafka_log.level
    base = {
        "COLUMNS": "250",
        "MDPEER_CONFIG": "",
        "MDPEER_CONTROL_TOPIC": "",
        "MDPEER_SERVERS": "",
        "MDPEER_TOKEN": "",
    }
    try:
        result = runner.invoke(app, ["status", *args], env={**base, **(env or {})})
    finally:
        kafka_log.setLevel(level)  # the CLI quiets client logs; other tests may want them
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def status_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    code, out, err = status(*args, "--json", env=env)
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


@pytest.fixture
def sim(sim_factory: Callable[..., SimServer]) -> SimServer:
    return sim_factory(cache_size=10_000)


S1, S2, S3 = "/lag/one", "/lag/empty", "/lag/unbridged"


@pytest.mark.kafka
@pytest.mark.sim
@pytest.mark.slow
def test_status_reports_exact_lag_epoch_change_and_an_unreachable_source(
    deploy: Deploy,
    unique_topic: TopicFactory,
    tmp_path: Path,
    sim: SimServer,
    sim_factory: Callable[..., SimServer],
) -> None:
    topic = unique_topic(1)
    routes = [Route(S1, topic, start=HISTORY), Route(S2, topic, start=HISTORY)]
    servers = f"127.0.0.1:{sim.port}"
    with deploy(servers, routes, shards=2) as dep:
        for i in range(5):
            sim.publish(S1, f"before{i}")
        peer = dep.start_peer("lagger")
        wait_until(lambda: len(read_committed(dep.bootstrap, [topic])) >= 5, 30, "5 bridged")
        assert peer.stop() == 0
        # behind the stopped peer's back: 7 more on S1, and a subject routed after it stopped
        for i in range(7):
            sim.publish(S1, f"after{i}")
        sim.publish(S3, "x")
        dep.write_routes([Route(S3, topic, start=HISTORY)])
        kafka = ("--bootstrap", dep.bootstrap, "--group", dep.group)

        data = status_json(*kafka, "--servers", servers)
        assert data["source"]["asked"] is True
        assert data["source"]["servers"] == [servers]
        subjects = {s["subject"]: s for s in data["subjects"]}
        one = subjects[S1]
        assert (one["checkpoint"]["epoch"], one["checkpoint"]["seq"]) == (1, 5)
        assert one["head"] == {"epoch": 1, "seq": 12, "via": "history"}
        assert (one["lag"], one["lag_state"], one["lag_reason"]) == (7, "measured", None)
        empty = subjects[S2]
        assert (empty["head"], empty["lag"], empty["lag_state"]) == (None, 0, "no_messages")
        unbridged = subjects[S3]
        assert unbridged["checkpoint"] is None
        assert unbridged["head"] == {"epoch": 1, "seq": 1, "via": "history"}
        assert (unbridged["lag"], unbridged["lag_state"]) == (None, "no_checkpoint")

        code, out, err = status(*kafka, env={"MDPEER_SERVERS": servers})
        assert code == 0, err
        row = next(line for line in out.splitlines() if S1 in line and "1:12" in line)
        assert "1:5" in row
        assert " 7 " in row
        assert "no checkpoint" in out
        assert "0 (no messages)" in out

        sim.bump_epoch(S1)
        sim.publish(S1, "new epoch")
        one = {s["subject"]: s for s in status_json(*kafka, "--servers", servers)["subjects"]}[S1]
        assert one["head"] == {"epoch": 2, "seq": 1, "via": "history"}
        assert (one["lag"], one["lag_state"]) == (None, "epoch_changed")
        code, out, _ = status(*kafka, "--servers", servers)
        assert "epoch changed" in out

        # an unreachable source: lag unknown with the reason, the rest shown, exit 0
        dead = f"127.0.0.1:{free_port()}"
        secret = {"MDPEER_TOKEN": TOKEN}
        data = status_json(*kafka, "--servers", dead, env=secret)
        assert TOKEN not in json.dumps(data)
        for s in data["subjects"]:
            assert (s["head"], s["lag"], s["lag_state"]) == (None, None, "unknown")
            assert s["lag_reason"].startswith(f"no server answered: {dead}: ")
        one = {s["subject"]: s for s in data["subjects"]}[S1]
        assert (one["checkpoint"]["epoch"], one["checkpoint"]["seq"]) == (1, 5)
        assert len(data["shard_owners"]) == 2
        code, out, err = status(*kafka, "--servers", dead, env=secret)
        assert code == 0
        assert TOKEN not in out + err
        assert "1:5" in out
        assert f"warning: lag unknown for {S2}, {S1}, {S3}: no server answered" in err

        # a source that wants a token: --token-file is sent (and never shown); without it, 403
        guarded = sim_factory(token_sub=TOKEN)
        for i in range(3):
            guarded.publish(S2, f"g{i}")
        token_file = tmp_path / "md-token"
        token_file.write_text(TOKEN + "\n")
        at_guarded = ("--servers", f"127.0.0.1:{guarded.port}")
        data = status_json(*kafka, *at_guarded, "--token-file", str(token_file))
        assert TOKEN not in json.dumps(data)
        empty = {s["subject"]: s for s in data["subjects"]}[S2]
        assert (empty["head"], empty["lag_state"]) == (
            {"epoch": 1, "seq": 3, "via": "history"},
            "no_checkpoint",
        )
        empty = {s["subject"]: s for s in status_json(*kafka, *at_guarded)["subjects"]}[S2]
        assert empty["lag_state"] == "unknown"
        assert "HTTP 403" in empty["lag_reason"]

        # no source given: no lag column, and why; JSON says not asked, never a number
        code, out, _ = status(*kafka)
        assert code == 0
        assert "lag not shown: no MigratoryData servers given (--servers, MDPEER_SERVERS or " in out
        assert "source.servers in --config)" in out
        data = status_json(*kafka)
        assert data["source"]["asked"] is False
        assert {(s["lag"], s["head"], s["lag_state"]) for s in data["subjects"]} == {
            (None, None, "not_asked")
        }
        data = status_json(*kafka, "--servers", servers, "--no-lag")
        assert data["source"] == {
            "asked": False,
            "reason": "not asked (--no-lag)",
            "servers": [],
            "budget_s": 5.0,
            "elapsed_s": data["source"]["elapsed_s"],
        }


@pytest.mark.kafka
@pytest.mark.sim
@pytest.mark.slow
def test_status_of_a_kip848_group_shows_every_shard_owned(
    deploy: Deploy, unique_topic: TopicFactory, sim: SimServer
) -> None:
    topic = unique_topic(2)
    subjects, routes = routed(topic, "/kip848", 8, start=HISTORY)
    servers = f"127.0.0.1:{sim.port}"
    for s in subjects:
        sim.publish(s, "x")
    with deploy(servers, routes, group_protocol="consumer") as dep:
        a, b = dep.start_peer("a"), dep.start_peer("b")
        everything = set(range(dep.shards))

        def shared() -> bool:
            mine, theirs = a.owned(), b.owned()
            return bool(mine) and bool(theirs) and mine | theirs == everything

        wait_until(shared, 30, "both KIP-848 peers owning shards")
        kafka = ("--bootstrap", dep.bootstrap, "--group", dep.group, "--servers", servers)
        seen: dict[str, Any] = {}

        def status_shows_both() -> bool:
            seen.update(status_json(*kafka, "--timeout", "5"))
            owners = {s["shard"]: s["owner"] for s in seen["shard_owners"]}
            return set(owners) == everything and set(owners.values()) == {"a", "b"}

        wait_until(status_shows_both, 20, "status showing every shard owned by a or b")
        peers = {p["peer"]: set(p["shards"]) for p in seen["peers"]}
        assert set(peers) == {"a", "b"}
        assert peers["a"].isdisjoint(peers["b"])
        assert peers["a"] | peers["b"] == everything
        assert peers["a"] == a.owned()
        assert peers["b"] == b.owned()
        for row in seen["subjects"]:
            assert row["owner"] == next(p for p, s in peers.items() if row["shard"] in s)
        code, out, _ = status(*kafka)
        assert code == 0
        assert f"{len(everything)}/{len(everything)} shards owned" in out

        def caught_up() -> bool:
            rows = status_json(*kafka)["subjects"]
            return {(r["lag_state"], r["lag"]) for r in rows} == {("measured", 0)}

        wait_until(caught_up, 20, "every subject at lag 0 while the peers run")
        assert a.stop() == 0
        assert b.stop() == 0


def test_status_budget_default_is_the_sources_and_the_cli_starts_without_aiohttp() -> None:
    import subprocess
    import sys

    from peer.cli import status_cmd
    from peer.source import heads

    assert status_cmd.DEFAULT_BUDGET == heads.DEFAULT_BUDGET
    # `mdpeer health` (the image's HEALTHCHECK, every 30 s) must not pay for the REST stack.
    probe = "import sys, peer.cli.main; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
