"""The commands that read a connector JSON or MigratoryData servers: the shard count from
``tasks.max``, strict keys and ``--lenient``, server URLs. Every case here ends before Kafka:
``--bootstrap 127.0.0.1:9`` (nothing listens there) would turn a late check into a Kafka error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from peer.cli import app
from peer.cli.admin_cmd import DEFAULT_SHARDS, shard_count
from peer.routes.model import RoutesFile, RouteTable
from tests.fixtures.config_files import ConnectorFile

runner = CliRunner()
NO_KAFKA = ("--bootstrap", "127.0.0.1:9")


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base = {"COLUMNS": "200", "MDPEER_CONFIG": "", "MDPEER_LENIENT": "", "MDPEER_ENCRYPTION": ""}
    result = runner.invoke(app, list(args), env={**base, **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


# --- the shard count ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "tasks_max", "count", "why"),
    [
        (None, None, DEFAULT_SHARDS, "the default"),
        (None, 2, 12, "the default; tasks.max=2 of c.json is not above it"),
        (None, 12, 12, "the default; tasks.max=12 of c.json is not above it"),
        (None, 13, 13, "tasks.max=13 of c.json, above the default 12"),
        (None, 40, 40, "tasks.max=40 of c.json, above the default 12"),
        (3, 40, 3, "--shards"),
        (30, 2, 30, "--shards"),
    ],
)
def test_shard_count_is_the_default_or_a_larger_tasks_max(
    given: int | None, tasks_max: int | None, count: int, why: str
) -> None:
    routes = RoutesFile(path=Path("c.json"), table=RouteTable(()), shards=tasks_max)
    chosen, reason = shard_count(given, routes)
    assert chosen == count
    assert reason.startswith(why)
    assert shard_count(given, None)[0] == (given or DEFAULT_SHARDS)


def test_validate_suggests_a_large_tasks_max(connector_file: ConnectorFile) -> None:
    path = connector_file({"tasks.max": "24", "migratorydata.subject.a": "t"})
    code, out, _ = _run("validate", str(path), "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["tasks_max"], report["suggested_shards"]) == (24, 24)
    assert report["suggested_shards_reason"] == f"tasks.max=24 of {path}, above the default 12"


def test_validate_reports_encryption_and_topic_creation(connector_file: ConnectorFile) -> None:
    path = connector_file(
        {
            "migratorydata.servers": "https://push1.example.com, 50 https://push2.example.com",
            "topic.creation.default.partitions": "6",
            "topic.creation.default.replication.factor": "-1",
        }
    )
    code, out, _ = _run("validate", str(path), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["servers"] == "https://push1.example.com:443, 50 https://push2.example.com:443"
    assert report["encryption"] is True
    assert (report["topic_partitions"], report["topic_replication_factor"]) == (6, -1)
    assert report["suggested_shards"] == 12


# --- strict keys and --lenient ------------------------------------------------------------------

TYPO = {"migratorydata.subject.a": "ta", "migratorydata.subjects.b": "tb", "tasks.max": "2"}
TYPO_ERROR = (
    "error: migratorydata.subjects.b='***': unknown MigratoryData connector key; "
    "did you mean 'migratorydata.subject.b'?"
)


def test_validate_refuses_an_unknown_key_unless_lenient(connector_file: ConnectorFile) -> None:
    path = connector_file(TYPO)
    code, out, err = _run("validate", str(path))
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == TYPO_ERROR
    assert lines[1] == (
        f"  hint: in {path}; --lenient (MDPEER_LENIENT=true) reports unknown keys as notes instead"
    )
    # validate checks the file alone: the environment does not make it lenient
    assert _run("validate", str(path), env={"MDPEER_LENIENT": "true"})[0] == 1
    code, out, err = _run("validate", str(path), "--lenient")
    assert code == 0
    assert "routes: 1" in out
    assert "note: migratorydata.subjects.b: not a MigratoryData connector key" in err


def test_validate_a_peer_config_whose_routes_file_has_an_unknown_key(
    tmp_path: Path, connector_file: ConnectorFile
) -> None:
    connector_file(TYPO)
    config = tmp_path / "peer.toml"
    config.write_text('routes_file = "connector.json"\n')
    code, _, err = _run("validate", str(config))
    assert code == 1
    assert err.startswith(TYPO_ERROR)
    code, out, _ = _run("validate", str(config), "--lenient")
    assert code == 0
    assert "routes: 1" in out


@pytest.mark.parametrize(
    "command",
    [
        ["init", "--from-connector", "{path}"],
        ["routes", "apply", "{path}"],
        ["routes", "apply", "{path}", "--dry-run"],
        ["routes", "list", "--config", "{path}"],
        ["run", "--config", "{path}", "--servers", "md:8800"],
    ],
)
def test_commands_refuse_an_unknown_key_before_kafka(
    connector_file: ConnectorFile, command: list[str]
) -> None:
    path = connector_file(TYPO)
    code, out, err = _run(*(a.format(path=path) for a in command), *NO_KAFKA)
    assert code == 1
    assert out == ""  # nothing applied, no diff
    assert err.startswith(TYPO_ERROR), err


@pytest.mark.parametrize(
    "command",
    [
        ["init", "--from-connector", "{path}"],
        ["routes", "apply", "{path}"],
        ["run", "--config", "{path}"],
    ],
)
def test_lenient_gets_past_the_unknown_key(
    connector_file: ConnectorFile, command: list[str]
) -> None:
    """With --lenient or MDPEER_LENIENT the file is read: what stops the command is a later
    check of the settings (still before Kafka), not the key."""
    path = connector_file(TYPO)
    args = [a.format(path=path) for a in command]
    later = {"MDPEER_MAX_BATCH": "0"}
    for extra, env in ((["--lenient"], later), ([], {**later, "MDPEER_LENIENT": "true"})):
        code, out, err = _run(*args, *extra, *NO_KAFKA, env=env)
        assert code == 1
        assert out == ""
        assert "migratorydata.subjects.b='***'" not in err
        assert "error: MDPEER_MAX_BATCH=0: expected 1 to 1000000" in err, err


def test_a_bad_mdpeer_lenient_is_named(connector_file: ConnectorFile) -> None:
    path = connector_file(TYPO)
    for args in (["routes", "apply", str(path)], ["run", "--config", str(path)]):
        code, _, err = _run(*args, *NO_KAFKA, env={"MDPEER_LENIENT": "maybe"})
        assert code == 1
        assert err.splitlines()[0] == "error: MDPEER_LENIENT='maybe': expected true or false"


# --- servers ------------------------------------------------------------------------------------


def test_run_and_status_refuse_a_scheme_against_encryption_before_kafka() -> None:
    env = {"MDPEER_ENCRYPTION": "false"}
    for args in (
        ["run", "--servers", "https://md.example.com"],
        ["status", "--servers", "https://md.example.com"],
    ):
        code, _, err = _run(*args, *NO_KAFKA, env=env)
        assert code == 1
        lines = err.splitlines()
        assert lines[0] == (
            "error: MDPEER_ENCRYPTION='false': contradicts the --servers entry "
            "'https://md.example.com:443' (https:// means TLS); drop one of the two or make "
            "them agree"
        )
        assert lines[1] == (
            "  hint: MDPEER_ENCRYPTION from the environment, --servers from the command line"
        )


@pytest.mark.parametrize(
    ("servers", "problem"),
    [
        ("md", "no port"),
        ("http://md:8800/rest", "a path ('/rest') is not allowed"),
        ("http://a:8800,https://b", "mixes http:// (http://a:8800) and https://"),
    ],
)
def test_run_names_what_is_wrong_with_a_server(servers: str, problem: str) -> None:
    code, _, err = _run("run", "--servers", servers, *NO_KAFKA)
    assert code == 1
    assert err.startswith(f"error: --servers={servers!r}: "), err
    assert problem in err.splitlines()[0]


def test_run_refuses_bad_new_settings_naming_the_flag() -> None:
    code, _, err = _run("run", "--servers", "md:8800", "--topic-creation", "auto", *NO_KAFKA)
    assert code == 1
    assert err.startswith("error: --topic-creation='auto': expected one of: cluster, create, never")
    code, _, err = _run(
        "run", "--servers", "md:8800", *NO_KAFKA, env={"MDPEER_BLOCKED_RETRY_MAX_MS": "10"}
    )
    assert code == 1
    assert err.startswith("error: MDPEER_BLOCKED_RETRY_MAX_MS=10: expected 1000 to 3600000")
