"""Metrics exposition (parsed back), and the HTTP endpoints over real HTTP on a free port."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from peer.ops.health import Health, ObservabilityServer
from peer.ops.metrics import PeerMetrics, cause_label


def families(text: str) -> dict[str, Metric]:
    """The metric families of a text-format page, parsed by the client's own parser."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict[str, Metric], name: str, labels: dict[str, str] | None = None) -> float:
    for fam in fams.values():
        for s in fam.samples:
            if s.name == name and s.labels == (labels or {}):
                return float(s.value)
    raise AssertionError(f"no sample {name}{labels or ''}")


def test_peer_metrics_expose_every_family_with_the_process_collector() -> None:
    m = PeerMetrics()
    m.messages_in.labels("topic1").inc(3)
    m.messages_out.labels("topic1").inc(3)
    m.commits.labels("committed").inc()
    m.commit_latency.observe(0.004)
    m.owned_shards.set(4)
    m.checkpoint_lag.labels("2").set(10)
    m.gaps.labels("seq").inc()
    m.errors.labels("kafka_retriable").inc()
    body, content_type = m.exposition()
    assert content_type.startswith("text/plain; version=0.0.4")
    fams = families(body.decode())
    types = {name: fam.type for name, fam in fams.items()}
    # the parser names a counter's family without _total
    for name, kind in (
        ("mdpeer_messages_in", "counter"),
        ("mdpeer_messages_out", "counter"),
        ("mdpeer_commits", "counter"),
        ("mdpeer_aborts", "counter"),
        ("mdpeer_commit_latency_seconds", "histogram"),
        ("mdpeer_owned_shards", "gauge"),
        ("mdpeer_subjects", "gauge"),
        ("mdpeer_checkpoint_lag_messages", "gauge"),
        ("mdpeer_route_lag_messages", "gauge"),
        ("mdpeer_gaps", "counter"),
        ("mdpeer_errors", "counter"),
        ("mdpeer_source_requests", "counter"),
        ("mdpeer_source_request_errors", "counter"),
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("python_info", "gauge"),
    ):
        assert types.get(name) == kind, name
    assert sample(fams, "mdpeer_owned_shards") == 4
    assert sample(fams, "mdpeer_messages_out_total", {"topic": "topic1"}) == 3
    assert sample(fams, "mdpeer_commit_latency_seconds_count") == 1
    assert sample(fams, "process_resident_memory_bytes") > 0
    assert not any(s.name.endswith("_created") for f in fams.values() for s in f.samples)


def test_each_peer_metrics_has_its_own_registry() -> None:
    a, b = PeerMetrics(), PeerMetrics()
    a.subjects.set(5)
    assert a.value("mdpeer_subjects") == 5
    assert b.value("mdpeer_subjects") == 0
    assert a.value("mdpeer_gaps_total", {"kind": "seq_jump"}) == 0  # no such sample yet


def test_causes_are_snake_case_without_error() -> None:
    class GroupFencedError(Exception):
        pass

    assert cause_label(GroupFencedError("x")) == "group_fenced"
    assert cause_label(ValueError("x")) == "value"
    assert cause_label("lost") == "lost"


def test_updates_from_many_threads_are_not_lost() -> None:
    m = PeerMetrics()

    def work() -> None:
        for _ in range(2000):
            m.messages_in.labels("t").inc()
            m.commit_latency.observe(0.002)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert m.value("mdpeer_messages_in_total", {"topic": "t"}) == 8000
    assert m.value("mdpeer_commit_latency_seconds_count") == 8000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


@dataclass(frozen=True)
class Served:
    """An ObservabilityServer on a free port, and the metrics, health and clock behind it."""

    server: ObservabilityServer
    metrics: PeerMetrics
    health: Health
    clock: FakeClock

    def get(self, path: str, accept: str | None = None) -> tuple[int, str, str]:
        return get(self.server.url + path, accept)

    def json(self, path: str) -> tuple[int, Any]:
        """(status, the JSON body) of ``path``."""
        status, _, body = self.get(path)
        return status, json.loads(body)


@pytest.fixture
def served() -> Iterator[Served]:
    clock = FakeClock()
    metrics = PeerMetrics()
    health = Health(heartbeat_timeout=10, clock=clock)
    with ObservabilityServer(metrics, health, "127.0.0.1", 0) as server:
        yield Served(server, metrics, health, clock)


def test_metrics_endpoint_speaks_text_and_openmetrics(served: Served) -> None:
    assert served.server.port > 0
    served.metrics.subjects.set(12)
    served.metrics.messages_out.labels("t1").inc(2)
    status, ctype, body = served.get("/metrics")
    assert status == 200
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    assert sample(families(body), "mdpeer_subjects") == 12
    # what Prometheus sends: OpenMetrics preferred, the text format as a fallback
    accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    status, ctype, body = served.get("/metrics", accept)
    assert status == 200
    assert ctype.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith("# EOF\n")
    fams = {f.name: f for f in openmetrics_families(body)}  # type: ignore[no-untyped-call]
    assert fams["mdpeer_messages_out"].type == "counter"
    assert sample(fams, "mdpeer_messages_out_total", {"topic": "t1"}) == 2
    assert served.get("/nope")[0] == 404


def test_healthz_flips_when_the_heartbeat_is_stale(served: Served) -> None:
    status, ctype, body = served.get("/healthz")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body)["alive"] is True
    served.clock.now += 10.5
    status, answer = served.json("/healthz")
    assert status == 503
    assert "heartbeat" in answer["reason"]
    served.health.beat()
    assert served.get("/healthz")[0] == 200


def test_readyz_follows_group_and_rebuild(served: Served) -> None:
    health = served.health
    status, answer = served.json("/readyz")
    assert status == 503
    assert "not joined" in answer["reason"]
    health.joined()
    status, answer = served.json("/readyz")
    assert status == 200  # owning no shard is ready
    assert answer["owned_shards"] == []
    health.assigned([1, 4])
    health.rebuilt(1)
    status, answer = served.json("/readyz")
    assert status == 503
    assert answer["rebuilding"] == [4]
    health.rebuilt(4)
    status, answer = served.json("/readyz")
    assert (status, answer["owned_shards"]) == (200, [1, 4])
    health.revoked([1])
    assert served.json("/readyz")[1]["owned_shards"] == [4]
    health.left("shutting down")
    status, answer = served.json("/readyz")
    assert (status, answer["reason"]) == (503, "shutting down")


def test_stop_frees_the_port() -> None:
    server = ObservabilityServer(CollectorRegistry(), Health(), "127.0.0.1", 0).start()
    url = server.url
    assert get(url + "/healthz")[0] == 200
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=2)
