"""`mdpeer validate` and the admin commands' help: no Kafka involved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from peer.cli import app

DATA = Path(__file__).parent / "data"
runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200", "MDPEER_CONFIG": ""})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


ROUTES_TOML = """
[[template]]
prefix = "/orders/"
topic = "orders"
key = "{2..}"

[[route]]
subject = "/server/status1"
topic = "topic1"

[[route]]
subject = "/orders/eu/7"
"""


def test_validate_a_routes_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(ROUTES_TOML)
    code, out, _ = _run("validate", str(path))
    assert code == 0
    assert f"{path}: valid routes file" in out
    assert "routes: 2" in out
    assert "templates: 1" in out


def test_validate_the_vendor_connector_json() -> None:
    code, out, err = _run("validate", str(DATA / "connector.json"))
    assert code == 0
    assert "valid connector config" in out
    assert "routes: 2" in out
    assert "tasks_max: 2" in out
    # tasks.max 2 would put the quick start's two subjects on one shard: the default wins
    assert "suggested_shards: 12\n" in out
    assert (
        f"suggested_shards_reason: the default; tasks.max=2 of {DATA / 'connector.json'} is "
        "not above it" in out
    )
    assert "encryption: false\n" in out
    assert "note: connector.class:" in err
    assert "some-token" not in out + err  # the entitlement token is a secret


def test_validate_a_peer_config_and_its_routes_file(tmp_path: Path) -> None:
    (tmp_path / "routes.toml").write_text(ROUTES_TOML)
    config = tmp_path / "peer.toml"
    config.write_text(
        'group = "orders"\nroutes_file = "routes.toml"\n'
        '[source]\nservers = "md1:8800,md2:8800"\ntoken = "secret-token"\n'
    )
    code, out, err = _run("validate", str(config), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["kind"] == "peer config"
    assert report["group"] == "orders"
    assert report["control_topic"] == "orders.control"
    assert report["routes"] == 2
    assert report["bootstrap"] is None
    assert any("bootstrap is not set" in n for n in report["notes"])
    assert "secret-token" not in out


def test_validate_says_which_source_mode_a_peer_will_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "peer.toml"
    base = '[source]\nservers = "md1:8800"\n'
    config.write_text(base)
    code, out, err = _run("validate", str(config), "--json")
    assert code == 0, err
    mode = json.loads(out)["source_mode"]
    assert (mode["mode"], mode["setting"]) == ("polling", "auto")
    assert "'migratorydata_client_python' is not importable" in mode["reason"]

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "standin"))
    config.write_text(base + 'doorbell = "on"\ndoorbell_module = "mdclient_standin"\n')
    code, out, err = _run("validate", str(config))
    assert code == 0, err
    assert "  source_mode: doorbell (mdclient_standin from " in out

    config.write_text(base + 'doorbell = "on"\ndoorbell_module = "no_such_client_xyz"\n')
    code, out, err = _run("validate", str(config))
    assert code == 1
    assert err.startswith("error: source.doorbell='on': module 'no_such_client_xyz' is not")
    assert 'set doorbell = "auto"' in err


@pytest.mark.parametrize(
    ("name", "text", "field"),
    [
        (
            "routes.toml",
            (
                '[[route]]\nsubject = "/a"\ntopic = "ok"\n'
                '[[route]]\nsubject = "/b"\ntopic = "bad topic"\n'
            ),
            "route[2].topic='bad topic'",
        ),
        ("routes.toml", '[[route]]\nsubject = "no-slash"\ntopic = "t"\n', "route[1].subject"),
        ("peer.toml", "max_batch = 0\n", "max_batch=0"),
        ("peer.toml", "comit_interval_ms = 5\n", "did you mean 'commit_interval_ms'"),
        ("peer.toml", "group = [\n", "not valid TOML"),
        ("connector.json", '{"migratorydata.subject.a": "bad topic"}', "migratorydata.subject.a"),
        ("connector.json", '{"tasks.max": "zero"}', "tasks.max='zero'"),
        ("routes.yaml", "x: 1\n", "FILE="),
    ],
)
def test_validate_names_the_bad_field(tmp_path: Path, name: str, text: str, field: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    code, out, err = _run("validate", str(path))
    assert code == 1
    first = err.splitlines()[0]
    assert first.startswith("error: ")
    assert field in first, err
    assert "valid" not in out


def test_validate_a_missing_file(tmp_path: Path) -> None:
    code, _, err = _run("validate", str(tmp_path / "nope.toml"))
    assert code == 1
    assert "cannot read" in err


@pytest.mark.parametrize(
    "command",
    [
        ["init"],
        ["validate"],
        ["status"],
        ["routes", "apply"],
        ["routes", "list"],
        ["routes", "add"],
        ["routes", "remove"],
        ["checkpoints", "list"],
        ["checkpoints", "reset"],
    ],
)
def test_every_admin_command_has_help_with_an_example(command: list[str]) -> None:
    code, out, _ = _run(*command, "--help")
    assert code == 0
    assert "Example" in out
    if command[0] != "validate":
        assert "--bootstrap" in out
        assert "--group" in out


def test_init_checks_the_connector_file_before_kafka(tmp_path: Path) -> None:
    bad = tmp_path / "connector.json"
    bad.write_text('{"tasks.max": "0", "migratorydata.subject.a": "t"}')
    # nothing listens on port 9 of loopback: had init gone to Kafka first, this would say so
    code, out, err = _run("init", "--from-connector", str(bad), "--bootstrap", "127.0.0.1:9")
    assert code == 1
    assert out == ""
    assert err.startswith("error: tasks.max='0'")
