"""`mdpeer sim serve` as a real process and `mdpeer sim publish` against it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from peer.cli import app
from peer.dev.sim.server import SimServer
from peer.testing import SimProcess, http_json, mdpeer_argv, wait_until

pytestmark = pytest.mark.sim

SimFactory = Callable[..., SimServer]
ProcessFactory = Callable[..., SimProcess]


# -- serve -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_its_url_serves_and_stops_cleanly(
    sim_process_factory: ProcessFactory, sig: int
) -> None:
    proc = sim_process_factory("--token-pub", "s3cr3t-pub")
    assert proc.url.startswith("http://127.0.0.1:")
    assert proc.port > 0
    status, body = http_json(
        "POST", proc.url + "/rest/produce", {"subject": "/p/1", "token": "s3cr3t-pub"}, b"hi"
    )
    assert (status, body["status"]) == (200, "OK")
    status, body = http_json("GET", proc.url + "/rest/consume", {"subject": "/p/1"})
    assert [m["content"] for m in body["messages"]] == ["hi"]
    assert proc.interrupt(sig) == 0
    assert proc.stdout_lines == [f"listening on {proc.url}\n"]  # exactly one line on stdout
    assert "s3cr3t-pub" not in proc.logs()


def test_serve_takes_settings_from_env_and_token_files(
    sim_process_factory: ProcessFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "sub.token"
    token_file.write_text("file-token\n")
    proc = sim_process_factory(
        "--token-sub-file",
        str(token_file),
        "--seq-exclusive",
        env={"MDPEER_SIM_CACHE_SIZE": "3", "MDPEER_SIM_TOKEN_PUB": "env-pub"},
    )
    for i in range(5):
        http_json(
            "POST", proc.url + "/rest/produce", {"subject": "/e/1", "token": "env-pub"}, b"%d" % i
        )
    assert http_json("GET", proc.url + "/rest/consume", {"subject": "/e/1"})[0] == 403
    status, body = http_json(
        "GET",
        proc.url + "/rest/consume",
        {"subject": "/e/1", "token": "file-token", "epoch": 1, "seq": 3},
    )
    assert status == 200
    assert [m["seq"] for m in body["messages"]] == [4, 5]  # exclusive, cache of 3
    state = http_json("GET", proc.url + "/admin/state")[1]
    assert state["config"]["cache_size"] == 3
    assert state["config"]["seq_inclusive"] is False


def test_serve_runs_the_generator_from_flags(sim_process_factory: ProcessFactory) -> None:
    proc = sim_process_factory(
        "--generate-prefix", "/gen", "--generate-count", "3", "--generate-rate", "1000"
    )

    def published() -> int:
        return int(http_json("GET", proc.url + "/admin/state")[1]["published"])

    wait_until(lambda: published() >= 100, 10.0, "100 messages generated")
    first = published()
    wait_until(lambda: published() > first, 10.0, "the generator going on")
    subjects = http_json("GET", proc.url + "/admin/state")[1]["subjects"]
    assert sorted(subjects) == ["/gen/1", "/gen/2", "/gen/3"]


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*mdpeer_argv(), "sim", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--fail-rate", "2", "fail_rate=2.0"),
        ("--notify-drop-rate", "-1", "notify_drop_rate=-1.0"),
        ("--first-epoch", "0", "first_epoch=0"),
    ],
)
def test_serve_refuses_a_bad_setting_naming_it(option: str, value: str, named: str) -> None:
    result = _serve("--port", "0", option, value)
    assert result.returncode == 1
    assert named in result.stderr
    assert result.stdout == ""


def test_a_first_epoch_numbers_every_new_subject(
    sim_process_factory: Callable[..., SimProcess],
) -> None:
    proc = sim_process_factory("--first-epoch", "7")
    http_json("POST", proc.url + "/rest/produce", {"subject": "/e/1"}, b"m")
    assert proc.state("/e/1")["subjects"]["/e/1"]["epoch"] == 7


def test_serve_reports_a_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _serve("--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


# -- publish ---------------------------------------------------------------------------------

runner = CliRunner()


def test_publish_reports_what_it_published(sim_factory: SimFactory) -> None:
    server = sim_factory(token_pub="pub")
    server.publish("/a/2", "already there")
    result = runner.invoke(
        app,
        [
            "sim", "publish", "--server", server.url, "--token", "pub",
            "--subjects", "/a/1,/a/2", "--count", "25", "--size", "64", "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["totals"] == {"sent": 50, "OK": 50, "errors": 0}
    assert report["subjects"]["/a/1"] == {
        "sent": 25,
        "statuses": {"OK": 25},
        "errors": 0,
        "last": {"epoch": 1, "seq": 25},
    }
    assert report["subjects"]["/a/2"]["last"] == {"epoch": 1, "seq": 26}
    assert report["failure"] is None
    history = http_json("GET", server.url + "/rest/consume", {"subject": "/a/1", "history": 100})[
        1
    ]["messages"]
    assert [m["seq"] for m in history] == list(range(1, 26))
    assert all(len(m["content"].encode()) == 64 for m in history)
    assert history[0]["content"].startswith("/a/1 1 ")  # in send order


def test_publish_text_report_and_rate(sim_factory: SimFactory) -> None:
    server = sim_factory()
    result = runner.invoke(
        app,
        ["sim", "publish", "--server", server.url, "--subjects", "/r/1", "--count", "20",
         "--rate", "200"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "/r/1  sent 20  OK 20  errors 0  last 1:20" in result.stdout
    assert "total: sent 20, OK 20, errors 0" in result.stdout
    assert server.state()["subjects"]["/r/1"]["head_seq"] == 20


def test_publish_counts_non_ok_statuses(sim_factory: SimFactory) -> None:
    server = sim_factory(max_message_size=10)
    result = runner.invoke(
        app,
        ["sim", "publish", "--server", server.url, "--subjects", "/o/1", "--count", "3",
         "--size", "11", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["subjects"]["/o/1"]["statuses"] == {"MESSAGE_SIZE_LIMIT_EXCEEDED": 3}
    assert report["subjects"]["/o/1"]["last"] is None


def test_publish_counts_server_errors(sim_factory: SimFactory) -> None:
    server = sim_factory(fail_rate=1.0)
    result = runner.invoke(
        app,
        ["sim", "publish", "--server", server.url, "--subjects", "/f/1", "--count", "4", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["totals"] == {"sent": 4, "errors": 4}
    assert report["error_samples"][0].startswith("HTTP 503")


def test_publish_denied_exits_1_with_a_clear_message(sim_factory: SimFactory) -> None:
    server = sim_factory(token_pub="right")
    result = runner.invoke(
        app,
        ["sim", "publish", "--server", server.url, "--token", "wrong", "--subjects", "/d/1",
         "--count", "5"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "publishing on '/d/1' was denied (DENY)" in result.stderr
    assert "wrong" not in result.output
    assert server.state()["subjects"] == {}


def test_publish_unreachable_server_exits_1_with_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        result = runner.invoke(
            app, ["sim", "publish", "--server", f"127.0.0.1:{port}", "--subjects", "/u/1"]
        )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert f"cannot reach http://127.0.0.1:{port}" in errors[0]


def test_publish_bad_subject_exits_1_naming_it() -> None:
    result = runner.invoke(app, ["sim", "publish", "--subjects", "/ok,/bad/*", "--count", "1"])
    assert result.exit_code == 1
    assert "'/bad/*'" in result.stderr
    assert "wildcards" in result.stderr
