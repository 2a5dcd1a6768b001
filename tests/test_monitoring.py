"""The monitoring files (docker/monitoring/) and the metrics documentation agree with what a
peer serves.

* The alert rules pass ``promtool check rules`` and their unit tests ``promtool test rules``,
  with a test case that fires each alert.
* The Prometheus config of the compose stack passes ``promtool check config`` and scrapes the
  compose file's peers; Grafana is provisioned with the dashboard and that Prometheus.
* Every metric name in the rules, the dashboard and docs/RUNNING.md is one ``/metrics``
  serves, and the docs' table lists exactly what ``/metrics`` serves. The PromQL of the
  dashboard and of the docs' examples parses (``promtool check rules`` on recording rules
  made of it).

``promtool`` comes with Debian's ``prometheus`` package, which scripts/_setup.sh installs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from peer.ops.health import Health, ObservabilityServer
from peer.ops.metrics import PeerMetrics

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "docker" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERTS_TEST = MONITORING / "alerts_test.yml"
PROMETHEUS = MONITORING / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "mdpeer.json"
COMPOSE = REPO / "docker" / "compose.yml"
RUNNING = REPO / "docs" / "RUNNING.md"

#: a metric name as PromQL writes it: ours, the process collector's, the platform's, and `up`
_METRIC_RE = re.compile(r"\b(?:mdpeer|process|python)_[a-z0-9_]+\b|\bup(?=\{)")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe is not None, "no promtool: install Debian's prometheus package (scripts/_setup.sh)"
    return subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def served() -> str:
    """The ``/metrics`` page of a fresh peer's metrics server, over HTTP."""
    with (
        ObservabilityServer(PeerMetrics(), Health(), port=0) as server,
        urllib.request.urlopen(server.url + "/metrics", timeout=5) as resp,
    ):
        page: str = resp.read().decode("utf-8")
    return page


def families(page: str) -> set[str]:
    """The metric families a text-format page declares (``# TYPE`` lines), as it names them."""
    return {line.split()[2] for line in page.splitlines() if line.startswith("# TYPE ")}


def sample_names(page: str) -> set[str]:
    """Every sample name a query may use: the families, and a histogram's series."""
    names = {"up"}
    for line in page.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names.update(name + suffix for suffix in _HISTOGRAM_SUFFIXES)
    return names


def metric_names(expr: str) -> set[str]:
    return set(_METRIC_RE.findall(expr))


def parses_as_promql(exprs: Iterable[str], tmp_path: Path) -> None:
    """``promtool check rules`` on one recording rule per expression."""
    rules = [{"record": f"check:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


# --- alert rules -------------------------------------------------------------------------------


def alert_names() -> set[str]:
    return {r["alert"] for g in load_yaml(ALERTS)["groups"] for r in g["rules"] if "alert" in r}


def test_alert_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in done.stdout


def test_alert_rules_pass_their_unit_tests_one_firing_case_each_at_least() -> None:
    tests = load_yaml(ALERTS_TEST)
    assert tests["rule_files"] == [ALERTS.name]
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == alert_names()
    done = promtool("test", "rules", ALERTS_TEST.name, cwd=MONITORING)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_broken_expectation_fails_promtool(tmp_path: Path) -> None:
    """promtool test rules does compare: a wrong expected label fails the run."""
    tests = load_yaml(ALERTS_TEST)
    case = next(c for t in tests["tests"] for c in t["alert_rule_test"] if c.get("exp_alerts"))
    case["exp_alerts"][0]["exp_labels"]["severity"] = "page-everyone"
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    (tmp_path / "t.yml").write_text(yaml.safe_dump(tests))
    done = promtool("test", "rules", "t.yml", cwd=tmp_path)
    assert done.returncode != 0
    assert "FAILED" in done.stdout + done.stderr


def test_alert_rules_use_only_served_metrics(served: str) -> None:
    known = sample_names(served)
    for group in load_yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - known
            assert unknown == set(), f"{rule['alert']}: {sorted(unknown)} are not served"


# --- Prometheus and Grafana of the compose stack -----------------------------------------------


def test_prometheus_config_passes_promtool_and_scrapes_the_compose_peers() -> None:
    done = promtool("check", "config", str(PROMETHEUS))
    assert done.returncode == 0, done.stdout + done.stderr
    config = load_yaml(PROMETHEUS)
    assert config["rule_files"] == [ALERTS.name]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "mdpeer"  # what the rules and the dashboard select
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    services = load_yaml(COMPOSE)["services"]
    peers = {
        f"{name}:{service['environment']['MDPEER_METRICS_PORT']}"
        for name, service in services.items()
        if service.get("command") == ["run"] and not service.get("profiles")
    }
    assert targets == peers


def compose_mounts(service: str) -> dict[str, Path]:
    """target path in the container -> the repository file compose mounts there."""
    compose = load_yaml(COMPOSE)
    files = {name: COMPOSE.parent / c["file"] for name, c in compose["configs"].items()}
    return {ref["target"]: files[ref["source"]] for ref in compose["services"][service]["configs"]}


def test_compose_mounts_files_that_exist() -> None:
    compose = load_yaml(COMPOSE)
    for name, config in compose["configs"].items():
        assert (COMPOSE.parent / config["file"]).is_file(), f"config {name}: {config['file']}"


def test_compose_prometheus_gets_its_config_and_rules() -> None:
    mounts = compose_mounts("prometheus")
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS
    assert mounts["/etc/prometheus/alerts.yml"] == ALERTS  # rule_files is relative
    command = load_yaml(COMPOSE)["services"]["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in command


def test_compose_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    mounts = compose_mounts("grafana")
    by_dir: dict[str, list[Path]] = {}
    for target, source in mounts.items():
        by_dir.setdefault(str(Path(target).parent), []).append(source)
    (datasource_file,) = by_dir["/etc/grafana/provisioning/datasources"]
    (provider_file,) = by_dir["/etc/grafana/provisioning/dashboards"]
    (datasource,) = load_yaml(datasource_file)["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(provider_file)["providers"]
    assert by_dir[provider["options"]["path"]] == [DASHBOARD]
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert uids == {datasource["uid"]}


# --- the dashboard -----------------------------------------------------------------------------


def dashboard_exprs() -> dict[str, str]:
    """panel title and query letter -> PromQL, Grafana's variables given plain values."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$instance", ".*")
            out[f"{panel['title']} {target['refId']}"] = expr
    return out


def test_dashboard_queries_parse_and_use_only_served_metrics(served: str, tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    known = sample_names(served)
    for where, expr in exprs.items():
        assert metric_names(expr), f"{where}: no metric in {expr!r}"
        assert metric_names(expr) <= known, f"{where}: {metric_names(expr) - known}"
    parses_as_promql(exprs.values(), tmp_path)


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    used = set().union(*(metric_names(e) for e in dashboard_exprs().values()))
    for needed in (
        "mdpeer_messages_in_total",  # throughput
        "mdpeer_messages_out_total",
        "mdpeer_checkpoint_lag_messages",  # lag
        "mdpeer_commits_total",  # commits
        "mdpeer_commit_latency_seconds_bucket",
        "mdpeer_owned_shards",  # ownership
        "mdpeer_gaps_total",  # gaps
        "mdpeer_blocked_subjects",  # blocked subjects
    ):
        assert needed in used, needed


# --- docs/RUNNING.md ---------------------------------------------------------------------------


def documented_metrics() -> dict[str, str]:
    """metric -> its PromQL example, from the table of RUNNING.md's "### Metrics" section."""
    text = RUNNING.read_text(encoding="utf-8")
    section = text.split("\n### Metrics\n", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `([a-z_:]+)` \|.*\| `([^`]+)`[^|]*\|$", line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} twice"
            rows[m.group(1)] = m.group(2)
    return rows


def test_documented_metrics_are_exactly_the_served_ones(served: str) -> None:
    assert set(documented_metrics()) == families(served)


def test_each_documented_metric_has_a_promql_example_that_parses(tmp_path: Path) -> None:
    rows = documented_metrics()
    assert rows
    for name, example in rows.items():
        used = metric_names(example)
        assert name in used or {name + s for s in _HISTOGRAM_SUFFIXES} & used, (name, example)
    parses_as_promql(rows.values(), tmp_path)
