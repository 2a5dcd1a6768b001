"""Fast tests of the benchmark's pure helpers (peer.dev.bench): no broker, no processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peer.dev.bench.connect import file_record, logged_producer
from peer.dev.bench.deploy import peer_config_text, toml_value
from peer.dev.bench.main import parse_args
from peer.dev.bench.plots import write_plots
from peer.dev.bench.producers import generator_content, parse_perf_summary, same_records
from peer.dev.bench.quiet import busy_cores, busy_share, jiffies, settle, warm_memory
from peer.dev.bench.stats import Target, evaluate_targets, pct, percentiles
from peer.dev.bench.throughput import median_of, paired_ratios, ratios
from peer.dev.bench.visible import Sample, window
from peer.dev.localkafka.connect import worker_properties
from peer.dev.sim.generator import Generator, GeneratorSpec
from peer.dev.sim.model import Store
from peer.writer.records import java_partition


def test_pct_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 1001)]  # 1..1000
    assert pct(values, 0.5) == 501.0
    assert pct(values, 0.99) == 991.0
    assert pct(values, 0.999) == 1000.0
    assert pct(values, 1.0) == 1000.0
    assert pct([7.0], 0.999) == 7.0


def test_pct_rejects_empty_and_bad_quantile() -> None:
    with pytest.raises(ValueError, match="no values"):
        pct([], 0.5)
    with pytest.raises(ValueError, match="quantile"):
        pct([1.0], 1.5)


def test_percentiles_sort_their_input() -> None:
    shuffled = [float(x) for x in (900, 100, 500, 300, 700, 200, 800, 400, 600, 1000)]
    assert percentiles(shuffled) == {"p50_ms": 600.0, "p99_ms": 1000.0, "p999_ms": 1000.0}


def test_target_status() -> None:
    assert Target("ratio", 0.6, ">=", 0.6).status == "met"
    assert Target("ratio", 0.59, ">=", 0.6).status == "missed"
    assert Target("p99", 301.0, "<=", 300, "ms").status == "missed"
    assert Target("p99", None, "<=", 300, "ms").status == "not measured"
    assert Target("p99", 12.5, "<=", 300, "ms").as_dict() == {
        "name": "p99",
        "measured": 12.5,
        "target": "<= 300 ms",
        "status": "met",
    }
    with pytest.raises(ValueError, match="op"):
        Target("x", 1.0, "<", 2)


def _doc() -> dict[str, object]:
    return {
        "throughput": {
            "sizes": [
                {
                    "size": 1024,
                    "peer1": {"msgs_per_s": 30_000, "mb_per_s": 30.7, "cpu_us_per_msg": 20.0},
                    "peer3": {"msgs_per_s": 45_000, "mb_per_s": 46.1, "cpu_us_per_msg": 22.0},
                    "bare": {"msgs_per_s": 100_000, "mb_per_s": 102.4, "cpu_us_per_msg": 6.0},
                    "java": {"msgs_per_s": 80_000, "mb_per_s": 81.9, "cpu_us_per_msg": 60.0},
                    "connect_eos": {"msgs_per_s": 18_000, "cpu_us_per_msg": 90.0},
                    "connect": {"msgs_per_s": 25_000, "cpu_us_per_msg": 55.0},
                    "ratios": {
                        "peer1_vs_bare": 0.3,
                        "peer1_cpu_per_msg_vs_bare": 3.333,
                        "peer1_vs_connect_eos": 1.667,
                        "peer1_cpu_per_msg_vs_connect_eos": 0.222,
                    },
                }
            ]
        },
        "latency": [
            {
                "commit_interval_ms": 50,
                "rate_target": 1000.0,
                "p50_ms": 80.0,
                "p99_ms": 150.0,
                "p999_ms": 170.0,
            },
            {
                "commit_interval_ms": 100,
                "rate_target": 1000.0,
                "p50_ms": 120.0,
                "p99_ms": 320.0,
                "p999_ms": 400.0,
            },
            {
                "commit_interval_ms": 100,
                "rate_target": 100.0,
                "p50_ms": 110.0,
                "p99_ms": 200.0,
                "p999_ms": 210.0,
            },
        ],
        "failover": {
            "sigterm": {"owned_after_s": 0.8, "flowing_after_s": 0.9},
            "sigkill": {"owned_after_s": 11.0, "flowing_after_s": None},
        },
        "scale": [
            {
                "subjects": 1000,
                "peer_rebuild_s": 0.1,
                "read_shards_s": 0.1,
                "rss_mb": 60.0,
                "hwm_mb": 61.0,
            },
            {
                "subjects": 10_000,
                "peer_rebuild_s": 0.5,
                "read_shards_s": 0.4,
                "rss_mb": 150.0,
                "hwm_mb": 160.0,
            },
        ],
    }


def test_evaluate_targets_reports_every_target_including_missed_and_unmeasured() -> None:
    status = {t.name: t.status for t in evaluate_targets(_doc())}
    assert status == {
        "throughput ratio peer/bare, 1 KB, one peer": "missed",
        "CPU per message peer/bare, 1 KB, one peer": "missed",
        "throughput peer/Kafka Connect exactly once, 1 KB": "met",
        "CPU per message peer/Kafka Connect exactly once, 1 KB": "met",
        "failover after SIGKILL": "not measured",  # it never flowed within the bound
        "failover after SIGTERM": "met",
        "p99 latency at 1,000 msg/s, commit 100 ms": "missed",  # the default; 50 ms not judged
        "shard-state rebuild, 100k subjects (read_shards)": "not measured",
        "peer on_assign, 100k subjects (its rebuild_s)": "not measured",
        "peer RSS, 10k subjects": "met",
    }


def test_evaluate_targets_of_an_empty_run_lists_them_all_unmeasured() -> None:
    targets = evaluate_targets({})
    assert len(targets) == 10
    assert {t.status for t in targets} == {"not measured"}


def test_ratios_against_bare_java_and_connect() -> None:
    entry = {
        "peer1": {"msgs_per_s": 30, "cpu_us_per_msg": 20.0},
        "bare": {"msgs_per_s": 100, "cpu_us_per_msg": 5.0},
        "java": {"error": "x"},
        "connect_eos": {"msgs_per_s": 20, "cpu_us_per_msg": 80.0},
    }
    assert ratios(entry, [1]) == {
        "peer1_vs_bare": 0.3,
        "peer1_vs_java": None,
        "bare_vs_java": None,
        "peer1_vs_connect_eos": 1.5,
        "peer1_vs_connect": None,  # not run
        "connect_eos_vs_bare": 0.2,
        "peer1_cpu_per_msg_vs_bare": 4.0,
        "peer1_cpu_per_msg_vs_connect_eos": 0.25,
        "peer1_cpu_per_msg_vs_connect": None,
    }


def test_median_of_rounds_takes_each_figure_s_own_median_and_all_rounds_must_hold() -> None:
    def run(rate: int, cpu: float, ok: bool = True) -> dict[str, object]:
        return {
            "msgs_per_s": rate,
            "cpu_us_per_msg": cpu,
            "cpu_cores": 0.5,
            "seconds": rate,
            "exactly_once": {"ok": ok, "duplicates": 0},
        }

    merged = median_of([run(30, 9.0), run(50, 20.0), run(40, 10.0, ok=False)])
    assert merged["msgs_per_s"] == 40
    assert merged["cpu_us_per_msg"] == 10.0  # its own median, not the 40 msg/s round's
    assert merged["seconds"] == 40  # the rest is the median round's
    assert merged["exactly_once"] == {"ok": False, "duplicates": 0}  # one round failed
    assert [r["msgs_per_s"] for r in merged["rounds"]] == [30, 50, 40]
    single = run(30, 9.0)
    assert median_of([single]) is single


def test_paired_ratios_are_the_median_of_each_rounds_own_ratio() -> None:
    runs = {
        "peer1": [
            {"msgs_per_s": 40, "cpu_us_per_msg": 20.0},
            {"msgs_per_s": 90, "cpu_us_per_msg": 10.0},
            {"msgs_per_s": 30, "cpu_us_per_msg": 12.0},
        ],
        # the machine slowed in round 2 and sped up in round 3: each round against its own
        "bare": [
            {"msgs_per_s": 100, "cpu_us_per_msg": 5.0},
            {"msgs_per_s": 100, "cpu_us_per_msg": 4.0},
            {"msgs_per_s": 60, "cpu_us_per_msg": 8.0},
        ],
    }
    assert paired_ratios(runs, [1]) == {
        "peer1_vs_bare": 0.5,
        "peer1_vs_bare_rounds": [0.4, 0.9, 0.5],
        "peer1_cpu_per_msg_vs_bare": 2.5,
        "peer1_cpu_per_msg_vs_bare_rounds": [4.0, 2.5, 1.5],
    }
    assert paired_ratios({"peer1": [{"error": "x"}], "bare": [{"msgs_per_s": 1}]}, [1]) == {}


def test_parse_perf_summary_takes_the_last_line() -> None:
    out = (
        "50000 records sent, 25000.0 records/sec (24.41 MB/sec), 5.0 ms avg latency, 90.0 ms max"
        " latency.\n"
        "100000 records sent, 99000.5 records/sec (96.68 MB/sec), 3.10 ms avg latency, 250.00 ms"
        " max latency, 2 ms 50th, 8 ms 95th, 20 ms 99th, 40 ms 99.9th.\n"
    )
    got = parse_perf_summary(out)
    assert got is not None
    assert got["messages"] == 100_000
    assert got["msgs_per_s"] == 99_000  # round() rounds half to even
    assert got["mb_per_s"] == round(96.68 * 1024 * 1024 / 1e6, 2)
    assert (got["p50_ms"], got["p99_ms"], got["p999_ms"]) == (2, 20, 40)
    assert parse_perf_summary("no summary here") is None
    warm = out + out.splitlines()[-1].replace("100000 records", "60000 steady state records")
    steady = parse_perf_summary(warm)
    assert steady is not None
    assert steady["messages"] == 60_000


def test_generator_content_matches_the_reference_servers_generator() -> None:
    store = Store()
    gen = Generator(store, GeneratorSpec(prefix="/g", count=2, rate=0, size=40, total=5))
    batch = gen._batch(5)
    assert [content.encode() for _, content in batch] == [
        generator_content(i, 40) for i in range(5)
    ]
    assert generator_content(12345, 3) == b"123"
    assert len(generator_content(7, 1024)) == 1024


def test_same_records_carry_the_peers_headers_and_partitions() -> None:
    sample = [
        ("md.subject", b"/t/1"),
        ("md.epoch", b"7"),
        ("md.seq", b"1"),
        ("md.type", b"HISTORICAL"),
        ("md.closure", b"1700000000000"),
        ("md.retained", b"true"),
    ]
    subjects = ["/t/1", "/t/2", "/t/3"]
    records = same_records(7, 16, subjects, 6, sample)
    assert len(records) == 7
    partition, value, headers = records[4]  # message 4: subject /t/2, its 2nd message
    assert value == generator_content(4, 16)
    assert partition == java_partition(b"/t/2", 6)
    assert headers == [
        ("md.subject", b"/t/2"),
        ("md.epoch", b"7"),
        ("md.seq", b"2"),
        ("md.type", b"HISTORICAL"),
        ("md.closure", b"1700000000000"),
        ("md.retained", b"true"),
    ]


def test_peer_config_text_quotes_strings() -> None:
    text = peer_config_text("h:1", "g", 'a"b', {"commit_interval_ms": 50, "x": True})
    assert text.splitlines() == [
        'bootstrap = "h:1"',
        'group = "g"',
        "commit_interval_ms = 50",
        "x = true",
        "[source]",
        'servers = "a\\"b"',
    ]
    assert toml_value(1.5) == "1.5"


def test_write_plots_writes_one_png_per_part(tmp_path: Path) -> None:
    written = write_plots(_doc(), tmp_path / "plots")
    assert sorted(p.name for p in written) == [
        "failover.png",
        "latency.png",
        "scale.png",
        "throughput.png",
    ]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_plots({}, tmp_path / "none") == []


def test_window_is_the_first_sample_past_the_first_and_past_every_last_record() -> None:
    samples = [
        Sample(0.0, (0, 0), (1.0,)),
        Sample(0.1, (0, 3), (1.5,)),  # partition 1's first record (offset 0) is visible
        Sample(0.2, (5, 9), (2.0,)),  # partition 1's last record (8) too, not partition 0's
        Sample(0.3, (7, 9), (2.5,)),  # partition 0's last (6): everything
        Sample(0.4, (7, 9), (2.6,)),
    ]
    win = window(samples, {0: 0, 1: 0}, {0: 6, 1: 8})
    assert (win.first.mono, win.last.mono) == (0.1, 0.3)
    assert win.seconds == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no sample"):
        window(samples, {0: 0}, {0: 7})


class _Msg:
    def __init__(self, value: bytes, partition: int = 2, offset: int = 9) -> None:
        self._value, self._partition, self._offset = value, partition, offset

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return "t"


def test_a_file_record_is_the_generators_value_at_its_position() -> None:
    got = file_record(16, _Msg(generator_content(41, 16)))
    assert (got.subject, got.position, got.partition, got.offset) == ("file", (1, 42), 2, 9)
    assert file_record(16, _Msg(b"41:not-the-value")).position is None
    assert file_record(16, _Msg(b"no number")).position is None


def test_the_task_producers_settings_are_read_from_the_worker_log() -> None:
    log = (
        "[t] INFO ProducerConfig values: \n\tacks = -1\n\tclient.id = other\n[t] INFO x\n"
        "[t] INFO ProducerConfig values: \n\tacks = -1\n\tbatch.size = 16384\n"
        "\tclient.id = connector-producer-f-0\n\tenable.idempotence = true\n"
        "\tlinger.ms = 5\n\tsend.buffer.bytes = 131072\n[t] INFO next\n\tlinger.ms = 0\n"
    )
    assert logged_producer(log, "connector-producer-f-0") == {
        "acks": "-1",
        "batch.size": "16384",
        "enable.idempotence": "true",
        "linger.ms": "5",
    }
    assert logged_producer(log, "connector-producer-g-0") == {}


def test_worker_properties_set_exactly_once_and_the_groups_topics() -> None:
    text = worker_properties("h:1", "g", 8083, exactly_once=True)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["exactly.once.source.support"] == "enabled"
    assert (props["config.storage.topic"], props["offset.storage.topic"]) == (
        "g.configs",
        "g.offsets",
    )
    assert props["listeners"] == "http://127.0.0.1:8083"
    plain = worker_properties("h:1", "g", 8083, exactly_once=False)
    assert "exactly.once.source.support=disabled" in plain.splitlines()


def test_doorbell_option_reaches_latency_and_scale() -> None:
    assert parse_args(["--doorbell", "--only", "scale,latency"]).doorbell
    assert not parse_args([]).doorbell


def test_peer_settings_reach_the_throughput_peers_as_typed_values() -> None:
    args = parse_args(["--peer-setting", "commit_interval_ms=1000", "--peer-setting", "x = on"])
    assert dict(args.peer_settings) == {"commit_interval_ms": 1000, "x": "on"}
    assert parse_args([]).peer_settings == []


@pytest.mark.parametrize("bad", ["commit_interval_ms", "=5", "max_batch="])
def test_a_peer_setting_without_name_and_value_is_refused(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--peer-setting", bad])
    assert exit_.value.code == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_busy_cores_counts_every_core_of_the_machine() -> None:
    cores = os.cpu_count() or 1
    # (all, idle) jiffies: half of all the time idle means half of the cores busy
    assert busy_cores((0, 0), (1000, 500)) == pytest.approx(cores / 2)
    assert busy_cores((0, 0), (0, 0)) == 0.0  # no time passed: nothing to say
    first = jiffies()
    assert 0.0 <= busy_cores(first, jiffies()) <= cores


def test_settle_warms_memory_only_when_asked() -> None:
    assert warm_memory(4) >= 0.0
    assert warm_memory(0) == 0.0
    warmed = settle(max_wait=0.0, below=1.01, warm_mb=4)
    assert (warmed["warmed_mb"], warmed["quiet"]) == (4, True)
    assert "warmed_mb" not in settle(max_wait=0.0, below=1.01)


def test_throughput_warms_memory_only_when_asked() -> None:
    assert parse_args([]).warm_memory_mb == 0
    assert parse_args(["--warm-memory-mb", "1024"]).warm_memory_mb == 1024


def test_busy_share_is_a_share_of_all_cores() -> None:
    assert 0.0 <= busy_share(0.2) <= 1.0


def test_settle_says_whether_the_machine_got_quiet_within_its_bound() -> None:
    assert settle(max_wait=0.0, below=1.01)["quiet"] is True  # any machine is below 101 %
    never = settle(max_wait=0.0, below=0.0)  # no machine is below 0 %: one window, then gives up
    assert never["quiet"] is False
    assert never["settle_s"] < 5
