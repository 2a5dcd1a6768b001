"""`mdpeer run`: one peer of the fleet (docs/RUNNING.md)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from peer.cli.common import expected_errors
from peer.cli.options import Lenient, Servers, Token, TokenFile


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to the root app."""
    app.command("run")(run)


def run(
    *,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="MDPEER_CONFIG",
            help="TOML config file (or the vendor connector's JSON).",
            show_default=False,
        ),
    ] = None,
    bootstrap: Annotated[
        str | None,
        typer.Option(
            "--bootstrap",
            envvar="MDPEER_BOOTSTRAP",
            help="Kafka bootstrap servers.",
            show_default=False,
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            envvar="MDPEER_GROUP",
            help="Consumer group shared by all peers (default: mdpeer).",
            show_default=False,
        ),
    ] = None,
    servers: Servers = None,
    token: Token = None,
    token_file: TokenFile = None,
    peer_id: Annotated[
        str | None,
        typer.Option(
            "--peer-id",
            envvar="MDPEER_PEER_ID",
            help="Stable peer id (default: host name); transactional.id = <group>-<peer id>.",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            envvar="MDPEER_METRICS_PORT",
            help="Port of /metrics, /healthz, /readyz (0 = off).",
            show_default=False,
        ),
    ] = None,
    # The options below have no envvar=: load_settings reads MDPEER_* itself and names the
    # variable in an error, where typer would refuse a bad value in its own words.
    topic_creation: Annotated[
        str | None,
        typer.Option(
            "--topic-creation",
            help="A missing target/dead-letter/audit topic: cluster (the brokers' "
            "auto-creation decides; default), create (mdpeer creates it) or never (the route "
            "stops until it exists). Env MDPEER_TOPIC_CREATION.",
            show_default=False,
        ),
    ] = None,
    topic_partitions: Annotated[
        int | None,
        typer.Option(
            "--topic-partitions",
            help="Partitions of the topics --topic-creation create makes; -1 (default): the "
            "broker's default. Env MDPEER_TOPIC_PARTITIONS.",
            show_default=False,
        ),
    ] = None,
    topic_replication_factor: Annotated[
        int | None,
        typer.Option(
            "--topic-replication-factor",
            help="Replication factor of the topics --topic-creation create makes; -1 "
            "(default): the broker's default. Env MDPEER_TOPIC_REPLICATION_FACTOR.",
            show_default=False,
        ),
    ] = None,
    blocked_retry_max_ms: Annotated[
        int | None,
        typer.Option(
            "--blocked-retry-max-ms",
            help="Longest backoff between retries of a stopped (quarantined) subject "
            "(default 60000). Env MDPEER_BLOCKED_RETRY_MAX_MS.",
            show_default=False,
        ),
    ] = None,
    source_unready_after_ms: Annotated[
        int | None,
        typer.Option(
            "--source-unready-after-ms",
            help="Report not-ready after this long without any MigratoryData server "
            "answering (default 60000). Env MDPEER_SOURCE_UNREADY_AFTER_MS.",
            show_default=False,
        ),
    ] = None,
    lenient: Lenient = False,
) -> None:
    """Run one peer: join the group, own shards, stream their subjects into Kafka exactly once.

    SIGTERM / SIGINT: stop fetching, commit, leave the group, exit 0. Exit 1: bad
    configuration; exit 2: a fatal Kafka error or fencing (another instance took over).
    """
    from peer.config.load import load_settings
    from peer.ops import logs
    from peer.runner import GC_YOUNG_THRESHOLD, SWITCH_INTERVAL_S, run_peer

    # Env values are read by load_settings itself (MDPEER_*); typer's envvar= only documents
    # them and fills the flags, which win anyway.
    overrides: dict[str, object] = {
        "bootstrap": bootstrap,
        "group": group,
        "servers": servers,
        "token": token,
        "token_file": str(token_file) if token_file is not None else None,
        "peer_id": peer_id,
        "metrics_port": metrics_port,
        "topic_creation": topic_creation,
        "topic_partitions": topic_partitions,
        "topic_replication_factor": topic_replication_factor,
        "blocked_retry_max_ms": blocked_retry_max_ms,
        "source_unready_after_ms": source_unready_after_ms,
    }
    with expected_errors():
        settings = load_settings(config, os.environ, overrides, lenient=lenient or None)
        logs.configure(settings.log_level, json_lines=settings.log_format == "json")
        for note in settings.notes:
            typer.echo(f"note: {note}", err=True)
        sys.setswitchinterval(SWITCH_INTERVAL_S)  # process-wide: set here, not by the library
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        code = run_peer(settings)
    raise typer.Exit(code)
