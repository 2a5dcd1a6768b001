"""PNG plots of a bench.json document (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

CONTENDERS = (
    ("bare", "bare idempotent producer"),
    ("java", "Java ProducerPerformance"),
    ("connect_eos", "Kafka Connect file source, exactly once"),
    ("connect", "Kafka Connect file source"),
)
#: contenders whose CPU is not of the measured records alone (the Java tool's: its whole JVM)
NO_CPU_BAR = ("java",)


def _rate(entry: dict[str, Any], name: str, field: str) -> float:
    value = entry.get(name, {}).get(field)
    return float(value) if isinstance(value, int | float) else 0.0


def plot_throughput(section: dict[str, Any], path: Path) -> Path:
    sizes = section["sizes"]
    peer_names = [k for k in sizes[0] if k.startswith("peer") and k[4:].isdigit()]
    series = [(p, f"mdpeer, {p[4:]} peer(s)") for p in peer_names] + list(CONTENDERS)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(series)
    panels = ((axes[0], "msgs_per_s", "messages/s"), (axes[1], "cpu_us_per_msg", "µs CPU/msg"))
    for ax, field, label in panels:
        for i, (name, title) in enumerate(series):
            if field == "cpu_us_per_msg" and name in NO_CPU_BAR:
                continue
            xs = [j + i * width for j in range(len(sizes))]
            values = [_rate(e, name, field) for e in sizes]
            ax.bar(xs, values, width, label=title, color=f"C{i}")  # one colour a contender
        ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(sizes))])
        ax.set_xticklabels([f"{e['size']} B" for e in sizes])
        log_scale = field == "msgs_per_s"
        if log_scale:
            ax.set_yscale("log")
        ax.set_ylabel(label + (" (log)" if log_scale else ""))
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].set_title(
        "CPU per message, all threads (the Java tool's is its whole JVM run: not shown)", fontsize=8
    )
    fig.suptitle("Throughput by message size, one broker")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_latency(rows: list[dict[str, Any]], path: Path) -> Path:
    """One colour per commit interval; dotted p50, solid p99, dashed p99.9."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for n, ms in enumerate(sorted({r["commit_interval_ms"] for r in rows})):
        mine = sorted(
            (r for r in rows if r["commit_interval_ms"] == ms), key=lambda r: r["rate_target"]
        )
        rates = [r["rate_target"] for r in mine]
        for key, style in (("p50_ms", ":"), ("p99_ms", "-"), ("p999_ms", "--")):
            ax.plot(
                rates,
                [r[key] for r in mine],
                style,
                color=f"C{n}",
                marker="o",
                label=f"commit {ms} ms, {key[:-3]}",
            )
    ax.axhline(300, color="red", linewidth=0.8, label="p99 target (at 1,000 msg/s)")
    ax.set_xscale("log")
    ax.set_xlabel("rate, msg/s (log)")
    ax.set_ylabel("publish to visible, ms")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_failover(section: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    kinds = [k for k in ("sigterm", "sigkill") if k in section]
    owned = [section[k].get("owned_after_s") or 0 for k in kinds]
    flowing = [section[k].get("flowing_after_s") or 0 for k in kinds]
    xs = range(len(kinds))
    ax.bar([x - 0.2 for x in xs], owned, 0.4, label="survivor owns the shards")
    ax.bar([x + 0.2 for x in xs], flowing, 0.4, label="every moved subject flowing")
    for x, limit in zip(xs, [3 if k == "sigterm" else 15 for k in kinds], strict=True):
        ax.hlines(limit, x - 0.45, x + 0.45, colors="red", linewidth=1)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([k.upper() for k in kinds])
    ax.set_ylabel("seconds after the signal (red: target)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_scale(points: list[dict[str, Any]], path: Path) -> Path:
    points = sorted(points, key=lambda p: p["subjects"])
    ns = [p["subjects"] for p in points]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(ns, [p["peer_rebuild_s"] for p in points], marker="o", label="peer's rebuild_s")
    a.plot(ns, [p["read_shards_s"] for p in points], marker="s", label="read_shards, in process")
    a.axhline(5, color="red", linewidth=0.8, label="target at 100k")
    a.set_ylabel("seconds")
    b.plot(ns, [p.get("rss_mb") or 0 for p in points], marker="o", label="RSS")
    b.plot(ns, [p.get("hwm_mb") or 0 for p in points], marker="^", label="peak RSS (VmHWM)")
    b.axhline(200, color="red", linewidth=0.8, label="target at 10k")
    b.set_ylabel("MB")
    for ax in (a, b):
        ax.set_xscale("log")
        ax.set_xlabel("subjects (log)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """One PNG per measured part; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if doc.get("throughput", {}).get("sizes"):
        written.append(plot_throughput(doc["throughput"], out_dir / "throughput.png"))
    if doc.get("latency"):
        written.append(plot_latency(doc["latency"], out_dir / "latency.png"))
    if doc.get("failover"):
        written.append(plot_failover(doc["failover"], out_dir / "failover.png"))
    if doc.get("scale"):
        written.append(plot_scale(doc["scale"], out_dir / "scale.png"))
    return written
