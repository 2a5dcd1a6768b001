"""A real Prometheus (the ``prometheus`` binary of Debian's package) scrapes two real peers
and evaluates docker/monitoring/alerts.yml: the series arrive through its HTTP API, every
rule evaluates, and MdpeerPeerDown fires for a peer that was stopped.

The test's copy of the rules differs in one way only: ``for:`` is 2 s (scrapes and
evaluations every second), so the alert fires within seconds rather than minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from peer.dev.sim.server import SimServer
from peer.model import StartPolicy
from peer.testing import PeerProcess, PrometheusProcess, wait_until
from tests.fixtures.deploy import Deploy, routed
from tests.fixtures.kafka import TopicFactory
from tests.fixtures.outcome import failed
from tests.peers import read_committed

pytestmark = [pytest.mark.kafka, pytest.mark.sim, pytest.mark.slow]

MONITORING = Path(__file__).resolve().parents[1] / "docker" / "monitoring"
SHARDS = 4


def scrape_config(tmp_path: Path, peers: list[PeerProcess]) -> Path:
    """alerts.yml with every ``for:`` at 2 s, and a scrape of ``peers`` every second."""
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "2s"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {
                "job_name": "mdpeer",
                "static_configs": [{"targets": [f"127.0.0.1:{p.metrics_port}" for p in peers]}],
            }
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def sim(sim_factory: Callable[..., SimServer]) -> SimServer:
    return sim_factory(cache_size=10_000)


@pytest.fixture
def prometheus_factory(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[Path, Path], PrometheusProcess]]:
    started: list[PrometheusProcess] = []

    def start(config: Path, data: Path) -> PrometheusProcess:
        started.append(PrometheusProcess(config, data))
        return started[-1]

    yield start
    for prom in started:
        prom.close(failed=failed(request))


def alerting(prom: PrometheusProcess, alert: str) -> set[str]:
    """The instances ``alert`` fires for."""
    return {a.get("instance", "") for a in prom.alerts() if a["alertname"] == alert}


def test_prometheus_scrapes_two_peers_and_alerts_when_one_stops(
    deploy: Deploy,
    unique_topic: TopicFactory,
    sim: SimServer,
    tmp_path: Path,
    prometheus_factory: Callable[[Path, Path], PrometheusProcess],
) -> None:
    topic = unique_topic(2)
    subjects, routes = routed(topic, "/prom", 4, start=StartPolicy.parse("history:100"))
    for subject in subjects:
        sim.publish(subject, "hello")
    with deploy(f"127.0.0.1:{sim.port}", routes, shards=SHARDS) as dep:
        a, b = dep.start_peer("prom-a"), dep.start_peer("prom-b")
        prom = prometheus_factory(scrape_config(tmp_path, [a, b]), tmp_path / "data")
        wait_until(prom.ready, 30, "prometheus ready")
        wait_until(lambda: len(read_committed(dep.bootstrap, [topic])) >= 4, 60, "data flowing")

        def owned_by_both() -> bool:
            up = prom.query('up{job="mdpeer"} == 1')
            owned = prom.query('sum(mdpeer_owned_shards{job="mdpeer"})')
            return len(up) == 2 and bool(owned) and owned[0][1] == SHARDS

        wait_until(owned_by_both, 45, "both peers scraped, every shard owned")

        instances = {f"127.0.0.1:{p.metrics_port}": p.peer_id for p in (a, b)}
        peers = {s["instance"]: s["peer"] for s, _ in prom.query("mdpeer_peer_info")}
        assert peers == instances
        assert {s["instance"] for s, _ in prom.query("process_resident_memory_bytes")} == set(
            instances
        )
        server = f"127.0.0.1:{sim.port}"
        wait_until(
            lambda: prom.query(f'sum(mdpeer_source_requests_total{{server="{server}"}}) > 0'),
            15,
            "source requests per server scraped",
        )
        wait_until(
            lambda: prom.query(f'sum(mdpeer_messages_out_total{{topic="{topic}"}}) >= 4'),
            15,
            "committed messages scraped",
        )
        # every rule of alerts.yml evaluates against real series without an error
        wait_until(
            lambda: set(prom.rules().values()) == {"ok"}, 15, f"all rules ok: {prom.rules()}"
        )
        assert alerting(prom, "MdpeerPeerDown") == set()

        stopped = f"127.0.0.1:{b.metrics_port}"
        assert b.stop() == 0
        wait_until(
            lambda: alerting(prom, "MdpeerPeerDown") == {stopped}, 30, "MdpeerPeerDown firing"
        )
        assert (
            prom.query('up{job="mdpeer"} == 1')[0][0]["instance"] == f"127.0.0.1:{a.metrics_port}"
        )
        assert a.stop() == 0
