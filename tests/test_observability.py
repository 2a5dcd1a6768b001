"""Metrics exposition (parsed back), and the HTTP endpoints over real HTTP on a free port."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from peer.ops.health import Health, ObservabilityServer
from peer.ops.metrics import CONTENT_TYPE, PeerMetrics, Registry, format_value

Sample = tuple[str, dict[str, str], float]

_SAMPLE_RE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|\})')


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            nxt = text[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}[nxt])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse(text: str) -> tuple[dict[str, str], dict[str, str], list[Sample]]:
    """A strict little parser of the 0.0.4 text format: (help, type, samples) by name."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: list[Sample] = []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert name not in helps, f"second HELP for {name}"
            helps[name] = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
        else:
            m = _SAMPLE_RE.fullmatch(line)
            assert m, f"bad sample line {line!r}"
            labels: dict[str, str] = {}
            body = m.group(2)
            if body:
                rest = body[1:]
                while rest:
                    lm = _LABEL_RE.match(rest)
                    assert lm, f"bad labels in {line!r}"
                    labels[lm.group(1)] = _unescape(lm.group(2))
                    rest = rest[lm.end() :]
                    if lm.group(3) == "}":
                        assert not rest, line
            value = m.group(3)
            num = float("inf") if value == "+Inf" else float(value)
            family = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
            family = family if family in types else m.group(1)
            assert family in types, f"sample {m.group(1)} before its TYPE"
            samples.append((m.group(1), labels, num))
    return helps, types, samples


def test_counters_gauges_and_label_escaping_round_trip() -> None:
    registry = Registry()
    c = registry.counter("x_events_total", 'Events; "quoted" \\ and\nnewline.', ["topic"])
    g = registry.gauge("x_level", "A level.")
    tricky = 'a"b\\c\nd'
    c.labels(tricky).inc()
    c.labels(topic="plain").inc(2.5)
    g.set(7)
    g.dec(2)
    helps, types, samples = parse(registry.render())
    assert types == {"x_events_total": "counter", "x_level": "gauge"}
    assert helps["x_events_total"] == 'Events; "quoted" \\\\ and\\nnewline.'
    assert ("x_events_total", {"topic": tricky}, 1.0) in samples
    assert ("x_events_total", {"topic": "plain"}, 2.5) in samples
    assert ("x_level", {}, 5.0) in samples
    with pytest.raises(ValueError, match="only goes up"):
        c.labels("plain").inc(-1)
    with pytest.raises(TypeError):
        c.inc()  # labelled family needs labels
    with pytest.raises(ValueError, match="already registered"):
        registry.gauge("x_level", "again")


def test_histogram_buckets_are_cumulative_with_inf_sum_and_count() -> None:
    registry = Registry()
    h = registry.histogram("x_latency_seconds", "Latency.", ["op"], buckets=[0.1, 1, 0.01])
    for v in (0.005, 0.01, 0.05, 0.5, 3.0):
        h.labels("commit").observe(v)
    _, types, samples = parse(registry.render())
    assert types["x_latency_seconds"] == "histogram"
    buckets = [(s[1]["le"], s[2]) for s in samples if s[0] == "x_latency_seconds_bucket"]
    assert buckets == [("0.01", 2), ("0.1", 3), ("1", 4), ("+Inf", 5)]
    assert all(s[1]["op"] == "commit" for s in samples)
    counts = [s[2] for s in samples if s[0] == "x_latency_seconds_count"]
    sums = [s[2] for s in samples if s[0] == "x_latency_seconds_sum"]
    assert counts == [5]
    assert sums == [pytest.approx(3.565)]


def test_values_format() -> None:
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(float("inf")) == "+Inf"
    assert format_value(float("nan")) == "NaN"


def test_peer_metrics_render_every_declared_family() -> None:
    m = PeerMetrics()
    m.messages_in.labels("topic1").inc(3)
    m.messages_out.labels("topic1").inc(3)
    m.commits.labels("committed").inc()
    m.commit_latency.observe(0.004)
    m.owned_shards.set(4)
    m.checkpoint_lag.labels("2").set(10)
    m.gaps.labels("seq").inc()
    m.errors.labels("kafka_retriable").inc()
    helps, types, samples = parse(m.render())
    assert set(helps) == set(types)
    for name in (
        "mdpeer_messages_in_total",
        "mdpeer_messages_out_total",
        "mdpeer_commits_total",
        "mdpeer_commit_latency_seconds",
        "mdpeer_owned_shards",
        "mdpeer_subjects",
        "mdpeer_checkpoint_lag_messages",
        "mdpeer_gaps_total",
        "mdpeer_errors_total",
    ):
        assert name in types
    assert ("mdpeer_owned_shards", {}, 4.0) in samples
    assert ("mdpeer_messages_out_total", {"topic": "topic1"}, 3.0) in samples


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
    assert m.messages_in.get("t") == 8000
    _, _, samples = parse(m.render())
    assert ("mdpeer_commit_latency_seconds_count", {}, 8000.0) in samples


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
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

    def get(self, path: str) -> tuple[int, str, str]:
        return get(self.server.url + path)

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


def test_metrics_endpoint(served: Served) -> None:
    assert served.server.port > 0
    served.metrics.subjects.set(12)
    status, ctype, body = served.get("/metrics")
    assert status == 200
    assert ctype == CONTENT_TYPE
    _, _, samples = parse(body)
    assert ("mdpeer_subjects", {}, 12.0) in samples
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
    server = ObservabilityServer(Registry(), Health(), "127.0.0.1", 0).start()
    url = server.url
    assert get(url + "/healthz")[0] == 200
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=2)
