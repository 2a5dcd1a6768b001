"""The admin commands (init, routes, checkpoints, status) against the real broker."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from peer.cli import app
from peer.control import encode_checkpoint
from peer.control.shards import shard_of
from peer.testing import free_port, mdpeer_argv
from tests.fixtures.cli import Cli, runner
from tests.fixtures.kafka import GroupFactory

pytestmark = pytest.mark.kafka

DATA = Path(__file__).parent / "data"


@pytest.fixture
def cli(
    kafka_bootstrap: str, kafka_admin: AdminClient, unique_group: GroupFactory
) -> Iterator[Cli]:
    runner_ = Cli(kafka_bootstrap, unique_group("cli"))
    yield runner_
    futures = kafka_admin.delete_topics([f"{runner_.group}.control"], operation_timeout=10)
    for future in futures.values():
        with contextlib.suppress(Exception):
            future.result(10)


def routes_of(cli: Cli) -> dict[str, dict[str, Any]]:
    return {r["subject"]: r for r in cli.json("routes", "list")["routes"]}


def test_init_from_the_vendor_connector_applies_its_routes_idempotently(cli: Cli) -> None:
    _, out, err = cli("init", "--from-connector", str(DATA / "connector.json"))
    assert out.splitlines() == [
        "+ /server/status1 -> topic1",
        "+ /server/status2 -> topic2 (key mykey)",
    ]
    # tasks.max 2 is below the default: 12 shards, so a second peer gets a subject too
    assert f"control topic {cli.group}.control created 12 shards (the default; tasks.max=2" in err
    assert "note: connector.class:" in err
    assert "some-token" not in out + err
    listed = cli.json("routes", "list")
    assert listed["shards"] == 12
    routes = {r["subject"]: r for r in listed["routes"]}
    assert routes["/server/status1"]["topic"] == "topic1"
    assert routes["/server/status1"]["key"] is None
    assert routes["/server/status2"]["topic"] == "topic2"
    assert routes["/server/status2"]["key"] == "mykey"

    _, out, err = cli("init", "--from-connector", str(DATA / "connector.json"))
    assert out == ""
    assert "exists already, unchanged: 12 shards" in err
    assert "no changes" in err


def test_a_connector_with_an_unknown_key_applies_nothing_unless_lenient(
    cli: Cli, tmp_path: Path
) -> None:
    cli("init", "--shards", "2")
    path = tmp_path / "connector.json"
    path.write_text(
        json.dumps({"migratorydata.subject.a.b": "ta", "migratorydata.subjects.c": "tc"})
    )
    code, out, err = cli("routes", "apply", str(path), ok=False)
    assert code == 1
    assert out == ""
    assert "did you mean 'migratorydata.subject.c'?" in err
    assert cli.json("routes", "list")["routes"] == []
    _, out, err = cli("routes", "apply", str(path), "--lenient")
    assert out.splitlines() == ["+ /a/b -> ta"]
    assert "note: migratorydata.subjects.c: not a MigratoryData connector key" in err
    assert list(routes_of(cli)) == ["/a/b"]


def test_init_refuses_another_shard_count(cli: Cli) -> None:
    first = cli.json("init", "--shards", "3")
    assert first["created"] is True
    assert first["shards"] == 3
    again = cli.json("init", "--shards", "3")
    assert again["created"] is False
    code, _, err = cli("init", "--shards", "5", ok=False)
    assert code == 1
    lines = err.splitlines()
    assert lines[0].startswith(f"error: control topic '{cli.group}.control' has 3 shards")
    assert "cannot change" in lines[0]
    assert lines[1].strip().startswith("hint: keep --shards 3")
    # the default (12) is another count too: refused, nothing changed
    assert cli("init", ok=False)[0] == 1
    assert cli.json("routes", "list")["shards"] == 3


ROUTES = """
[[route]]
subject = "/a/1"
topic = "ta"

[[route]]
subject = "/a/2"
topic = "ta"
key = "k2"

[[route]]
subject = "/b/1"
topic = "tb"
start = "latest"
"""

ROUTES_V2 = """
[[route]]
subject = "/a/1"
topic = "ta"
key = "k1"

[[route]]
subject = "/a/2"
topic = "ta"
key = "k2"
"""


def test_routes_apply_dry_run_diff_keep_and_prune(cli: Cli, tmp_path: Path) -> None:
    v1, v2 = tmp_path / "v1.toml", tmp_path / "v2.toml"
    v1.write_text(ROUTES)
    v2.write_text(ROUTES_V2)
    cli("init", "--shards", "4")

    _, out, err = cli("routes", "apply", str(v1), "--dry-run")
    assert out.splitlines() == [
        "+ /a/1 -> ta",
        "+ /a/2 -> ta (key k2)",
        "+ /b/1 -> tb (start latest)",
    ]
    assert "dry run: 3 added, 0 changed, 0 removed; nothing written" in err
    assert routes_of(cli) == {}

    _, out, err = cli("routes", "apply", str(v1))
    assert len(out.splitlines()) == 3
    assert "applied 3 added, 0 changed, 0 removed" in err
    listed = routes_of(cli)
    assert set(listed) == {"/a/1", "/a/2", "/b/1"}
    assert listed["/b/1"]["start"] == "latest"
    assert listed["/a/2"]["shard"] == shard_of("/a/2", 4)

    _, out, err = cli("routes", "apply", str(v1))  # idempotent
    assert out == ""
    assert "no changes" in err

    _, out, err = cli("routes", "apply", str(v2))  # without --prune /b/1 is kept
    assert out.splitlines() == ["~ /a/1: key none -> k1"]
    assert "1 route(s)" in err
    assert "kept (--prune removes them)" in err
    assert set(routes_of(cli)) == {"/a/1", "/a/2", "/b/1"}
    assert routes_of(cli)["/a/1"]["key"] == "k1"

    result = cli.json("routes", "apply", str(v2), "--prune", "--dry-run")
    assert [r["subject"] for r in result["removed"]] == ["/b/1"]
    assert result["written"] == 0
    assert set(routes_of(cli)) == {"/a/1", "/a/2", "/b/1"}

    _, out, _ = cli("routes", "apply", str(v2), "--prune")
    assert out.splitlines() == ["- /b/1 -> tb (start latest)"]
    assert set(routes_of(cli)) == {"/a/1", "/a/2"}


def test_routes_add_remove_and_their_errors(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("routes", "list", ok=False)  # before init
    assert code == 1
    assert f"error: control topic '{cli.group}.control' does not exist" in err
    assert "mdpeer init" in err

    cli("init", "--shards", "2")
    _, out, _ = cli("routes", "add", "/s/1", "t1", "--key", "k", "--on-oversize", "skip")
    assert out.splitlines() == ["+ /s/1 -> t1 (key k, on_oversize skip)"]
    _, out, _ = cli("routes", "add", "/s/1", "t2", "--key", "k", "--on-oversize", "skip")
    assert out.splitlines() == ["~ /s/1: topic t1 -> t2"]
    assert routes_of(cli)["/s/1"]["topic"] == "t2"

    code, _, err = cli("routes", "add", "/s/2", "bad topic", ok=False)
    assert code == 1
    assert err.startswith("error: topic='bad topic'")
    code, _, err = cli("routes", "add", "/s/2", "t", "--on-oversize", "dead-letter", ok=False)
    assert code == 1
    assert "dead_letter_topic" in err.splitlines()[0]

    code, _, err = cli("routes", "remove", "/unknown/subject", ok=False)
    assert code == 1
    assert err.splitlines()[0] == (
        f"error: subject '/unknown/subject' has no route in control topic '{cli.group}.control'"
    )

    bad = tmp_path / "bad.toml"
    bad.write_text('[[route]]\nsubject = "/x"\ntopic = "t"\nkye = "typo"\n')
    code, _, err = cli("routes", "apply", str(bad), ok=False)
    assert code == 1
    assert err.startswith("error: route[1].kye=")

    _, out, _ = cli("routes", "remove", "/s/1")
    assert out.splitlines() == ["- /s/1 -> t2 (key k, on_oversize skip)"]
    assert routes_of(cli) == {}


def _write_checkpoint(bootstrap: str, topic: str, shards: int, subject: str) -> None:
    """What an owning peer writes after committing data: ckpt:<subject> in a transaction."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"test-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    key, value = encode_checkpoint(subject, 3, 7, peer="p1")
    producer.produce(topic, key=key, value=value, partition=shard_of(subject, shards))
    producer.commit_transaction(30)


def test_checkpoints_reset_list_and_status_without_peers(cli: Cli) -> None:
    cli("init", "--from-connector", str(DATA / "connector.json"), "--shards", "2")
    _write_checkpoint(cli.bootstrap, f"{cli.group}.control", 2, "/server/status2")

    _, out, err = cli("checkpoints", "reset", "/server/status1", "--to", "5:10")
    assert out.startswith("reset /server/status1 to 5:10: queued as command ")
    assert "owns its shard applies it in order" in err

    one = cli.json("checkpoints", "list", "--subject", "/server/status1")["subjects"]
    assert len(one) == 1
    assert one[0]["pending"]["to"] == "5:10"
    assert one[0]["checkpoint"] is None
    two = cli.json("checkpoints", "list", "--subject", "/server/status2")["subjects"][0]
    assert (two["checkpoint"]["epoch"], two["checkpoint"]["seq"]) == (3, 7)
    assert two["pending"] is None

    _, out, _ = cli("checkpoints", "list")
    assert "3:7" in out
    assert "reset to 5:10" in out

    status = cli.json("status")
    assert status["peers"] == []
    assert status["shards"] == 2
    assert all(s["owner"] is None for s in status["shard_owners"])
    by_subject = {s["subject"]: s for s in status["subjects"]}
    assert by_subject["/server/status2"]["checkpoint"]["seq"] == 7
    assert by_subject["/server/status1"]["pending"]["to"] == "5:10"
    _, out, _ = cli("status")
    assert "no peers in the group" in out
    assert "(unowned)" in out

    code, _, err = cli("checkpoints", "reset", "/not/routed", "--to", "latest", ok=False)
    assert code == 1
    assert "'/not/routed' has no route" in err.splitlines()[0]
    code, _, err = cli("checkpoints", "reset", "/server/status1", "--to", "yesterday", ok=False)
    assert code == 1
    assert err.startswith("error: --to='yesterday'")
    code, _, err = cli("checkpoints", "list", "--subject", "/not/routed", ok=False)
    assert code == 1
    assert "'/not/routed'" in err


def _join_group(bootstrap: str, group: str, topic: str, peer: str) -> Consumer:
    """A stand-in peer: a group member subscribed to the control topic, as `run` is."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": f"mdpeer-{peer}",
            "enable.auto.commit": False,
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    assigned: list[int] = []
    consumer.subscribe(
        [topic], on_assign=lambda _c, tps: assigned.extend(tp.partition for tp in tps)
    )
    deadline = time.monotonic() + 30
    while not assigned:
        assert time.monotonic() < deadline, "the stand-in peer got no shards in 30 s"
        consumer.poll(0.2)
    return consumer


def test_status_shows_the_owner_of_each_shard_while_a_peer_runs(cli: Cli) -> None:
    cli("init", "--from-connector", str(DATA / "connector.json"), "--shards", "2")
    peer = _join_group(cli.bootstrap, cli.group, f"{cli.group}.control", "peer-a")
    try:
        status = cli.json("status")
        assert [p["peer"] for p in status["peers"]] == ["peer-a"]
        assert status["peers"][0]["shards"] == [0, 1]
        assert {s["owner"] for s in status["shard_owners"]} == {"peer-a"}
        assert {s["owner"] for s in status["subjects"]} == {"peer-a"}
        _, out, _ = cli("status")
        assert "peer-a" in out
        assert "2/2 shards owned" in out
    finally:
        peer.close()


@pytest.mark.parametrize(
    "command",
    [
        ["status", "--timeout", "2"],
        ["init", "--timeout", "2"],
        ["routes", "list", "--timeout", "2"],
        ["checkpoints", "reset", "/a", "--to", "latest", "--timeout", "2"],
    ],
)
def test_unreachable_kafka_is_one_line_and_bounded(command: list[str]) -> None:
    cli = Cli(f"127.0.0.1:{free_port()}", "unreachable")
    started = time.monotonic()
    code, out, err = cli(*command, ok=False)
    elapsed = time.monotonic() - started
    assert code == 1
    assert out == ""
    assert err.startswith(f"error: Kafka at '{cli.bootstrap}' did not answer within 2s")
    assert len(err.splitlines()) == 2  # the cause and a hint
    assert elapsed < 8


def test_unreachable_kafka_default_timeout_is_bounded_in_a_subprocess() -> None:
    """The installed entry point, default timeout: one line (+ hint), exit 1, within ~10 s."""
    bootstrap = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = subprocess.run(
        [*mdpeer_argv(), "routes", "list", "--bootstrap", bootstrap],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines()[0].startswith(
        f"error: Kafka at '{bootstrap}' did not answer within 10s"
    )
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 15


def test_env_and_config_file_fallbacks(
    kafka_bootstrap: str, kafka_admin: AdminClient, unique_group: GroupFactory, tmp_path: Path
) -> None:
    """--bootstrap/--group come from MDPEER_* or from a peer config file (its control_topic
    too), as for `mdpeer run`."""
    group = unique_group("env")
    topic = f"{group}.custom-control"
    config = tmp_path / "peer.toml"
    config.write_text(
        f'bootstrap = "{kafka_bootstrap}"\ngroup = "{group}"\ncontrol_topic = "{topic}"\n'
    )
    kafka_log = logging.getLogger("peer.kafka")
    level = kafka_log.level
    try:
        result = runner.invoke(
            app,
            ["init", "--shards", "2", "--json"],
            env={"MDPEER_CONFIG": str(config), "MDPEER_BOOTSTRAP": "", "MDPEER_GROUP": ""},
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["control_topic"] == topic
        result = runner.invoke(
            app,
            ["routes", "add", "/e/1", "te"],
            env={
                "MDPEER_BOOTSTRAP": kafka_bootstrap,
                "MDPEER_GROUP": group,
                "MDPEER_CONFIG": "",
                "MDPEER_CONTROL_TOPIC": topic,
            },
        )
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == ["+ /e/1 -> te"]
        result = runner.invoke(
            app, ["routes", "list", "--json", "--config", str(config)], env={"MDPEER_CONFIG": ""}
        )
        assert result.exit_code == 0, result.output
        assert [r["subject"] for r in json.loads(result.stdout)["routes"]] == ["/e/1"]
    finally:
        kafka_log.setLevel(level)
        for future in kafka_admin.delete_topics([topic], operation_timeout=10).values():
            with contextlib.suppress(Exception):
                future.result(10)
